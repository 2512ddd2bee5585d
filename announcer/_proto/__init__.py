"""Generated protobuf code for gobgpd 3.x and 4.x; see protos/generate.sh. Do not edit.

Only announcer.gobgp imports this package.
"""
