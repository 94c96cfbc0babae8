"""hub.server: the hub node (sessions, the in-process API) and the ``hub-server`` daemon."""

from __future__ import annotations

from hub.server.app import Hub, LocalSubscription
from hub.server.settings import Settings

__all__ = ["Hub", "LocalSubscription", "Settings"]
