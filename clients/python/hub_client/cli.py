"""``hub`` (also ``python -m hub_client``): subscribe, publish, read history and presence from
the shell.

::

    hub sub chat.room1 'orders.*'          # one JSON line per message, until Ctrl-C
    hub sub chat.room1 --count 1           # stop after one message
    hub sub chat.room1 --join-leave        # also one JSON line per presence event
    hub pub chat.room1 '{"text": "hi"}'    # DATA is JSON; --raw sends it as a string
    hub history chat.room1 --limit 10 --reverse
    hub presence chat.room1                # one JSON line per client present

Every command takes ``--url`` (default ``$HUB_URL``, else ws://127.0.0.1:8765), ``--codec``
(msgpack or json, default msgpack), ``--token`` (default ``$HUB_TOKEN``) and ``--timeout``
(seconds for connecting and for each request, default 10).

Output is JSON, one object per line. ``data`` is written as the JSON it is, except what JSON
cannot hold: binary data (msgpack ``bin``) becomes ``{"$base64": "<base64 of the bytes>"}``,
a msgpack extension type ``{"$ext": <type code>, "$base64": "<its bytes>"}``, and a map key
that is not a string, number, boolean or null its ``repr``.

Exit status: 0 on success (and when ``sub`` is stopped by Ctrl-C or SIGTERM), 1 on an error
(a one-line message on stderr: connection refused, a request the hub refused, a timeout, ...),
2 for a usage error (bad options, DATA that is not JSON).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import logging
import math
import os
import signal
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

import msgpack

from hub.exceptions import HubError, RequestError, SubscriptionNotice
from hub_client.client import Client, ConnectionState
from hub_client.client import connect as async_connect
from hub_client.subscription import Message, PresenceEvent, Subscription

__all__ = ["json_safe", "main"]

DEFAULT_URL = "ws://127.0.0.1:8765"
DEFAULT_TIMEOUT = 10.0

#: After Ctrl-C or SIGTERM, how long ``sub`` waits for the connection to close.
CLOSE_TIMEOUT = 1.0

logger = logging.getLogger("hub_client.cli")


class UsageFailure(Exception):
    """A usage error found after parsing (exit status 2)."""


# --- output -----------------------------------------------------------------------------------


def json_safe(value: Any) -> Any:
    """``value`` with everything JSON cannot hold replaced as the module docstring says."""
    if isinstance(value, bytes | bytearray | memoryview):
        return {"$base64": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, msgpack.ExtType):
        return {"$ext": value.code, "$base64": base64.b64encode(value.data).decode("ascii")}
    if isinstance(value, dict):
        return {_json_key(key): json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(item) for item in value]
    return value


def _json_key(key: Any) -> Any:
    if key is None or isinstance(key, str | int | float | bool):
        return key
    return repr(key)


def _line(value: dict[str, Any]) -> str:
    return json.dumps(json_safe(value), ensure_ascii=False, separators=(",", ":"))


def _write(value: dict[str, Any]) -> None:
    sys.stdout.write(_line(value) + "\n")
    sys.stdout.flush()


# --- command line -----------------------------------------------------------------------------


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value > 0 or math.isinf(value):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, not {text}")
    return value


def _position(text: str) -> tuple[str, int]:
    epoch, sep, offset = text.rpartition(":")
    if not sep or not epoch:
        raise argparse.ArgumentTypeError(f"not EPOCH:OFFSET: {text!r}")
    try:
        number = int(offset)
    except ValueError:
        raise argparse.ArgumentTypeError(f"the offset of {text!r} is not an integer") from None
    if number < 0:
        raise argparse.ArgumentTypeError(f"the offset of {text!r} is negative")
    return epoch, number


def _common_options(parser: argparse.ArgumentParser, *, defaults: bool) -> None:
    """The options of every command; given before the command or after it. Only the main
    parser has defaults, so that a subcommand's unset option does not hide a main one."""

    def default(value: Any) -> Any:
        return value if defaults else argparse.SUPPRESS

    parser.add_argument(
        "--url",
        default=default(None),
        help=f"the hub's WebSocket URL (default: $HUB_URL, else {DEFAULT_URL})",
    )
    parser.add_argument(
        "--codec",
        choices=("msgpack", "json"),
        default=default("msgpack"),
        help="the wire encoding (default: msgpack)",
    )
    parser.add_argument(
        "--token", default=default(None), help="a bearer token (default: $HUB_TOKEN)"
    )
    parser.add_argument(
        "--timeout",
        type=_seconds,
        default=default(DEFAULT_TIMEOUT),
        metavar="SECONDS",
        help=f"for connecting and for each request (default: {DEFAULT_TIMEOUT:g})",
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=default(False),
        help="log connections, reconnects and subscriptions on stderr",
    )


def parser() -> argparse.ArgumentParser:
    main_parser = argparse.ArgumentParser(
        prog="hub",
        description="Subscribe, publish, read history and presence on a hub. Output: one JSON "
        "object "
        'per line; binary data is written as {"$base64": "..."}.',
    )
    _common_options(main_parser, defaults=True)
    common = argparse.ArgumentParser(add_help=False)
    _common_options(common, defaults=False)
    commands = main_parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sub = commands.add_parser(
        "sub",
        parents=[common],
        help="print the messages of topics or patterns",
        description="Print every message of the TOPICs (patterns allowed) as a JSON line "
        "{topic, sub, offset, epoch, data}, until Ctrl-C or SIGTERM (exit status 0). "
        "Reconnects and recovers like the SDK; a gap that could not be replayed is reported "
        "on stderr. With --join-leave, also every presence event as a JSON line "
        "{op: join|leave, topic, sub, client, user, info, replaces}.",
    )
    sub.add_argument("topics", nargs="+", metavar="TOPIC")
    sub.add_argument(
        "--count",
        type=_positive_int,
        metavar="N",
        help="exit after N messages (presence events do not count)",
    )
    sub.add_argument(
        "--join-leave",
        action="store_true",
        help="also print the join and leave events of topics with presence",
    )

    pub = commands.add_parser(
        "pub",
        parents=[common],
        help="publish one message",
        description="Publish DATA on TOPIC and print {offset, epoch} as JSON.",
    )
    pub.add_argument("topic", metavar="TOPIC")
    pub.add_argument("data", metavar="DATA", help="a JSON value (with --raw: any string)")
    pub.add_argument("--raw", action="store_true", help="send DATA as a string, not as JSON")
    pub.set_defaults(command_parser=pub)

    history = commands.add_parser(
        "history",
        parents=[common],
        help="print the publications a topic keeps",
        description="Print the publications the hub keeps for TOPIC, one JSON line each: "
        "{topic, offset, epoch, time, data}.",
    )
    history.add_argument("topic", metavar="TOPIC")
    history.add_argument("--limit", type=_positive_int, metavar="N", help="at most N messages")
    history.add_argument("--reverse", action="store_true", help="newest first")
    history.add_argument(
        "--since",
        type=_position,
        metavar="EPOCH:OFFSET",
        help="only what came after this position",
    )

    presence = commands.add_parser(
        "presence",
        parents=[common],
        help="print the clients present on a topic",
        description="Print the clients present on TOPIC, one JSON line each: "
        "{topic, client, user, info}. Fails (status 1) when the topic has no presence.",
    )
    presence.add_argument("topic", metavar="TOPIC")
    return main_parser


# --- commands ---------------------------------------------------------------------------------


def _connect(args: argparse.Namespace) -> async_connect:
    url = args.url or os.environ.get("HUB_URL") or DEFAULT_URL
    token = args.token if args.token is not None else os.environ.get("HUB_TOKEN")
    return async_connect(
        url,
        codec=args.codec,
        token=token or None,
        request_timeout=args.timeout,
        open_timeout=args.timeout,
    )


async def _pub(args: argparse.Namespace, data: Any) -> int:
    async with _connect(args) as client:
        reply = await client.request("pub", topic=args.topic, data=data)
    result = {"offset": reply["offset"]}
    if "epoch" in reply:
        result["epoch"] = reply["epoch"]
    _write(result)
    return 0


async def _history(args: argparse.Namespace) -> int:
    async with _connect(args) as client:
        page = await client.history(
            args.topic, since=args.since, limit=args.limit, reverse=args.reverse
        )
    for message in page.messages:
        _write(
            {
                "topic": args.topic,
                "offset": message.get("offset"),
                "epoch": page.epoch,
                "time": message.get("time"),
                "data": message.get("data"),
            }
        )
    return 0


async def _presence(args: argparse.Namespace) -> int:
    async with _connect(args) as client:
        members = await client.presence(args.topic)
    for member in members:
        _write(
            {"topic": args.topic, "client": member.client, "user": member.user, "info": member.info}
        )
    return 0


async def _sub(args: argparse.Namespace) -> int:
    """Run until the messages are printed, an error, or Ctrl-C / SIGTERM (exit status 0)."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    work = loop.create_task(_subscribe_and_print(args))
    stopping = loop.create_task(stop.wait())
    try:
        await asyncio.wait({work, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if work.done():
            return work.result()
        work.cancel()  # leaves the client's ``async with``: it closes the connection
        # Closing may wait for a reconnect in progress: do not keep the user waiting for it
        # (asyncio.run cancels what is left).
        await asyncio.wait({work}, timeout=CLOSE_TIMEOUT)
        return 0
    finally:
        stopping.cancel()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)


async def _subscribe_and_print(args: argparse.Namespace) -> int:
    loop = asyncio.get_running_loop()
    async with _connect(args) as client:
        logger.info("connected to %s", client.url)
        client_states = loop.create_task(_log_states(client))
        unhandled = loop.create_task(_log_unhandled(client))
        messages: asyncio.Queue[Message | PresenceEvent | None] = asyncio.Queue(maxsize=1)
        readers: list[asyncio.Task[None]] = []
        events: list[asyncio.Task[None]] = []
        try:
            for topic in args.topics:
                subscription = await client.subscribe(topic, join_leave=args.join_leave)
                logger.info("subscribed to %s", subscription.pattern)
                readers.append(loop.create_task(_forward(subscription, messages)))
                if args.join_leave:
                    events.append(loop.create_task(_forward_events(subscription, messages)))
            await _print_messages(args, client, messages, len(readers))
            return 0
        finally:
            tasks = [*readers, *events, client_states, unhandled]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


async def _forward_events(
    subscription: Subscription, messages: asyncio.Queue[Message | PresenceEvent | None]
) -> None:
    """Put the subscription's presence events into the shared queue, until it ends."""
    async for event in subscription.presence_events():
        await messages.put(event)


async def _forward(
    subscription: Subscription, messages: asyncio.Queue[Message | PresenceEvent | None]
) -> None:
    """Put the subscription's messages into the shared queue; None when it has ended."""
    while True:
        try:
            message = await subscription.get()
        except SubscriptionNotice as exc:  # NotRecovered, Undeliverable
            logger.warning("%s (subscription %s)", exc, subscription.pattern)
            continue
        except StopAsyncIteration:
            await messages.put(None)
            return
        await messages.put(message)


async def _print_messages(
    args: argparse.Namespace,
    client: Client,
    messages: asyncio.Queue[Message | PresenceEvent | None],
    readers: int,
) -> None:
    printed = 0
    while args.count is None or printed < args.count:
        message = await messages.get()
        if message is None:
            readers -= 1
            if readers == 0:
                raise HubError(
                    f"the connection closed ({client.close_code}) and cannot be reopened"
                )
            continue
        if isinstance(message, PresenceEvent):
            _write(
                {
                    "op": message.kind,
                    "topic": message.topic,
                    "sub": message.sub,
                    "client": message.client,
                    "user": message.user,
                    "info": message.info,
                    "replaces": message.replaces,
                }
            )
            continue
        _write(
            {
                "topic": message.topic,
                "sub": message.sub,
                "offset": message.offset,
                "epoch": message.epoch,
                "data": message.data,
            }
        )
        printed += 1


async def _log_states(client: Client) -> None:
    async for state in client.states():
        if state is ConnectionState.RECONNECTING:
            logger.warning("lost the connection (%s): reconnecting", client.close_code)
        elif state is ConnectionState.CONNECTED:
            logger.warning("reconnected to %s", client.url)


async def _log_unhandled(client: Client) -> None:
    """Report the frames the SDK leaves to recv(), such as an ``error`` without id."""
    while True:
        frame = await client.recv()
        if frame.get("op") == "error":
            logger.warning("%s (%s)", frame.get("message"), frame.get("code"))
        else:
            logger.info("ignored a frame: %.200r", frame)


# --- main -------------------------------------------------------------------------------------


def _fail(message: str) -> int:
    print(f"hub: error: {message}", file=sys.stderr)
    return 1


def _describe(exc: BaseException) -> str:
    if isinstance(exc, RequestError):
        return f"{exc} ({exc.code})"
    if isinstance(exc, ConnectionRefusedError):
        return f"connection refused: {exc}"
    text = str(exc) or type(exc).__name__
    return " ".join(text.split())  # one line


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``hub`` command; returns the exit status."""
    command_parser = parser()
    args = command_parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="hub: %(message)s",
        stream=sys.stderr,
    )
    data: Any = None
    if args.command == "pub":
        if args.raw:
            data = args.data
        else:
            try:
                data = json.loads(args.data)
            except ValueError as exc:
                _usage_error(
                    args.command_parser,
                    f"DATA is not valid JSON ({exc}); use --raw to send it as a string",
                )
    try:
        if args.command == "sub":
            return asyncio.run(_sub(args))
        if args.command == "pub":
            return asyncio.run(_pub(args, data))
        if args.command == "presence":
            return asyncio.run(_presence(args))
        return asyncio.run(_history(args))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader of our output went away (hub sub ... | head -1): not an error.
        with contextlib.suppress(OSError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        return 0
    except (HubError, OSError, TimeoutError, ValueError) as exc:
        return _fail(_describe(exc))


def _usage_error(command_parser: argparse.ArgumentParser, message: str) -> NoReturn:
    command_parser.error(message)
