"""Realtime chat gateway: trio actors, a msgspec wire protocol, a WebSocket data plane."""

__version__ = "0.1.0"
__all__ = ["__version__"]
