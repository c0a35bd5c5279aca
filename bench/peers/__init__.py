"""Peer servers measured beside the gateway in the same run (same logical protocol, minimal)."""
