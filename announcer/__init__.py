"""announcer: health-checked BGP announcement of HAProxy VIPs through gobgpd."""

__version__ = "0.1.0"
