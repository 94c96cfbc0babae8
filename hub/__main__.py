"""``python -m hub``: the same as ``hub-server``."""

from __future__ import annotations

import sys

from hub.server.cli import main

sys.exit(main())
