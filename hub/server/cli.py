"""``hub-server`` (also ``python -m hub``): run a hub node until SIGTERM or SIGINT.

Every option also comes from a ``HUB_*`` environment variable and from an optional config file
(``--config hub.json``: a JSON object of the same settings); the command line wins over the
environment, which wins over the file. An invalid setting stops the start with a message naming
it, and exit status 2.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from hub.broker.redis import redact_url
from hub.exceptions import Unavailable
from hub.server.app import Hub
from hub.server.settings import Settings

__all__ = ["main"]

logger = logging.getLogger("hub.server")

#: Allocations between collections of the youngest generation (CPython's default is 700).
GC_THRESHOLD = 50_000


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hub-server", description="Run a hub node.")
    parser.add_argument("--config", type=Path, help="JSON file of settings")
    for name, field in Settings.model_fields.items():
        flag = "--" + name.replace("_", "-")
        parser.add_argument(flag, dest=name, default=None, help=field.description or name)
    return parser


def load_settings(argv: list[str]) -> Settings:
    """Settings from the file, then the environment, then the command line."""
    args = _parser().parse_args(argv)
    values: dict[str, Any] = {}
    if args.config is not None:
        values.update(json.loads(args.config.read_text()))
    from_environment = Settings().model_dump(exclude_unset=True)
    values.update(from_environment)
    values.update({k: v for k, v in vars(args).items() if k != "config" and v is not None})
    # Environment variables were already applied by Settings(); passing the merged values as
    # init arguments gives the command line the last word.
    return Settings(**values)


async def run(settings: Settings) -> None:
    hub = Hub(settings)
    await hub.start()
    server = await hub.serve()
    # The fan-out makes short-lived objects per delivery, and with thousands of connections the
    # collector's full passes over every long-lived one (sessions, transports) took about half
    # the CPU (benchmarks/fanout.py at 5,000 subscribers). Freeze what start-up allocated and
    # collect the youngest generation less often; cyclic garbage is still collected.
    gc.freeze()
    gc.set_threshold(GC_THRESHOLD, 20, 100)
    addresses = ", ".join(str(sock.getsockname()) for sock in server.sockets)
    backend = redact_url(settings.backend)
    logger.info("hub %s listening on %s (backend %s)", hub.node_id, addresses, backend)
    stop = asyncio.get_running_loop().create_future()
    for signum in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(signum, stop.set_result, signum)
    signum = await stop
    logger.info("received %s: closing connections with 1001", signal.Signals(signum).name)
    await hub.close()
    logger.info("hub %s stopped", hub.node_id)


def _loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    if name == "uvloop":
        import uvloop  # an optional extra: pip install 'hub[uvloop]'

        return uvloop.new_event_loop
    return None


def main(argv: list[str] | None = None) -> int:
    try:
        settings = load_settings(sys.argv[1:] if argv is None else argv)
    except ValidationError as exc:
        for error in exc.errors():
            name = ".".join(str(part) for part in error["loc"])
            print(f"hub-server: invalid setting {name}: {error['msg']}", file=sys.stderr)
        return 2
    except (OSError, ValueError) as exc:
        print(f"hub-server: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        with asyncio.Runner(loop_factory=_loop_factory(settings.loop)) as runner:
            runner.run(run(settings))
    except ImportError as exc:
        print(f"hub-server: --loop uvloop needs the uvloop extra: {exc}", file=sys.stderr)
        return 2
    except (OSError, Unavailable) as exc:  # the port is taken, Redis cannot be reached, ...
        logger.error("cannot start: %s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
