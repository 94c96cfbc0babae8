"""hub: a message broker / pub-sub hub built on WebSockets."""

from __future__ import annotations

__version__ = "0.1.0"
