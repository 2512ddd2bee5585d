#!/bin/sh
# Regenerate announcer/_proto/ from protos/gobgp_v3.proto and protos/gobgp_v4.proto.
#
# Why a pinned, old generator: code from grpcio-tools 1.51.1 (protoc 3.21.6)
# loads on Debian bookworm's python3-protobuf 4.21 *and* on protobuf 7.x.
# Newer generators emit a runtime version check that refuses older runtimes
# (gobgp-api-notes 2.3 item 17). No _pb2_grpc.py is generated: announcer/gobgp.py
# binds the RPC paths itself, so grpcio's generated-version check never applies.
#
# Usage: protos/generate.sh            (needs python3 with venv, and pip access)
# Set GENERATOR_VENV to reuse an existing venv that has grpcio-tools==1.51.1.
set -eu

TOOLS_VERSION=1.51.1
here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
out="$repo/announcer/_proto"

if [ -n "${GENERATOR_VENV:-}" ]; then
    venv=$GENERATOR_VENV
else
    venv=$(mktemp -d "${TMPDIR:-/tmp}/announcer-protoc.XXXXXX")
    trap 'rm -rf "$venv"' EXIT
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "grpcio-tools==$TOOLS_VERSION"
fi

# Refuse to run with any other generator: its output may not load on bookworm.
"$venv/bin/python" - "$TOOLS_VERSION" <<'PY'
import sys
from importlib.metadata import version
have = version("grpcio-tools")
if have != sys.argv[1]:
    sys.exit(f"generate.sh: need grpcio-tools=={sys.argv[1]}, found {have}")
PY

mkdir -p "$out"
# -I"$here" makes the registered file names "gobgp_v3.proto" and "gobgp_v4.proto"
# (no directory part), which the freshness test in tests/packaging/test_protos.py
# relies on. The two share no file name and no package (apipb, api), so both
# modules load side by side in one process.
"$venv/bin/python" -m grpc_tools.protoc -I"$here" \
    --python_out="$out" --pyi_out="$out" \
    "$here/gobgp_v3.proto" "$here/gobgp_v4.proto"

cat > "$out/__init__.py" <<'PY'
"""Generated protobuf code for gobgpd 3.x and 4.x; see protos/generate.sh. Do not edit.

Only announcer.gobgp imports this package.
"""
PY
echo "generated: $out/gobgp_v3_pb2.py(i) $out/gobgp_v4_pb2.py(i)"
