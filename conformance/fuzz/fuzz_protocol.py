#!/usr/bin/env python3
"""Fuzz hub's sans-I/O protocol parsers with hostile bytes; stop by itself, report, save crashes.

Targets (the first argument):

  frames     FrameReader and Connection, as server (masked frames) and as client (unmasked),
             with or without permessage-deflate
  handshake  HeadParser on requests then ServerHandshake.accept, and on responses then
             ClientHandshake.check_response
  selftest   fails on purpose (first byte >= 0x80 and last byte odd): checks this harness

Every input is run whole and cut into chunks (how is taken from its second byte); the two runs
must agree. A *crash* is any exception other than the protocol's own refusals (ProtocolError
with close code 1002/1007/1009, HandshakeError with an HTTP status), a disagreement between the
two runs, a buffer over its bound, or an input that takes longer than --timeout seconds. The
first crash stops the run; its input is saved under --crash-dir and replays with --replay.

Engines: atheris (coverage-guided libFuzzer, when installed: Linux x86_64 wheels) or hypothesis
(random and structured inputs, no coverage feedback). Options that start with a single dash
(``-atheris_runs=100000``, ``-max_len=8192``, ``-dict=...``) go to libFuzzer. Exit status: 0 no
crash, 1 crash, 2 usage error. The last line reads
``fuzz TARGET: N inputs in S s, C crashes (engine ENGINE)``.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import hashlib
import importlib
import os
import random
import shutil
import signal
import sys
import tempfile
import time
import traceback
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from types import FrameType, ModuleType
from typing import TYPE_CHECKING, Any, NamedTuple

HERE = Path(__file__).resolve().parent
DEFAULT_CRASH_DIR = HERE / "crashes"


def _load_atheris(argv: Sequence[str]) -> ModuleType | None:
    """atheris, unless the hypothesis engine is asked for or it is not installed."""
    wanted = "auto"
    for i, arg in enumerate(argv):
        if arg.startswith("--engine="):
            wanted = arg.partition("=")[2]
        elif arg == "--engine" and i + 1 < len(argv):
            wanted = argv[i + 1]
    if wanted == "hypothesis" or "--replay" in argv:
        return None
    try:
        return importlib.import_module("atheris")
    except ImportError:
        if wanted == "atheris":
            raise
        return None


ATHERIS = _load_atheris(sys.argv[1:]) if __name__ == "__main__" else None

# Under atheris, hub is imported instrumented, so that libFuzzer sees its branches.
with ATHERIS.instrument_imports(include=["hub"]) if ATHERIS else contextlib.nullcontext():
    from hub.exceptions import HandshakeError
    from hub.protocol.connection import CLIENT, CLOSING, SERVER, Connection, Side
    from hub.protocol.frames import Close, serialize_frame
    from hub.protocol.handshake import ClientHandshake, ServerHandshake, accept_key
    from hub.protocol.http11 import MAX_HEAD_SIZE, HeadParser, Request, Response
    from hub.protocol.permessage_deflate import DeflateConfig, PerMessageDeflate
    from hub.protocol.reader import FrameReader


class Finding(AssertionError):
    """A property of the parsers does not hold for this input."""


class Hang(Exception):
    """One input ran longer than the per-input timeout."""


def check(condition: bool, message: str) -> None:
    if not condition:
        raise Finding(message)


def cut(data: bytes, selector: int) -> list[bytes]:
    """``data`` whole (selector 0), byte by byte (1), or cut where a PRNG seeded with it says."""
    if selector == 0 or len(data) < 2:
        return [data]
    if selector == 1:
        return [data[i : i + 1] for i in range(len(data))]
    rng = random.Random(selector)
    cuts = sorted(rng.randrange(len(data) + 1) for _ in range(rng.randrange(1, 9)))
    return [data[start:end] for start, end in pairwise([0, *cuts, len(data)])]


# --- frames -------------------------------------------------------------------------------------

ERROR_CODES = {1002, 1007, 1009}
MAX_SIZES = (0, 125, 1000, 65536)
CONTROL_MAX, HEADER_MAX = 125, 14


class ReaderResult(NamedTuple):
    frames: list[tuple[int, bytes, bool, int]]
    error: tuple[str, int] | None


def read_frames(chunks: Sequence[bytes], mask_expected: bool, max_size: int) -> ReaderResult:
    reader = FrameReader(mask_expected=mask_expected, max_size=max_size)
    bound = max(max_size, CONTROL_MAX) + HEADER_MAX  # one partial frame whose header passed
    frames = []
    for chunk in chunks:
        frames += [tuple(frame) for frame in reader.feed(chunk)]
        check(len(reader._buffer) <= bound, f"reader buffer {len(reader._buffer)} > {bound}")
    error = reader.error
    if error is None:
        return ReaderResult(frames, None)  # type: ignore[arg-type]
    check(error.code in ERROR_CODES, f"reader error with close code {error.code}")
    return ReaderResult(frames, (type(error).__name__, error.code))  # type: ignore[arg-type]


class ConnectionResult(NamedTuple):
    events: list[tuple[str, Any]]
    output: list[tuple[int, Any]]
    failure: tuple[str, int] | None
    closing: bool


def make_codec(mode: int) -> PerMessageDeflate | None:
    """permessage-deflate off (0, 3), or on with the peer's context kept (1) or not (2)."""
    if mode in (0, 3):
        return None
    return PerMessageDeflate(
        local_no_context_takeover=True,
        remote_no_context_takeover=mode == 2,
        local_max_window_bits=15,
        remote_max_window_bits=15,
        config=DeflateConfig(),
    )


def drive(side: Side, chunks: Sequence[bytes], max_size: int, mode: int) -> ConnectionResult:
    connection = Connection(side, max_size=max_size, deflate=make_codec(mode))
    limit = max_size
    if (
        connection.deflate is not None
    ):  # a compressed frame may exceed max_size by deflate's overhead
        limit += (max_size >> 10) + 1024
    bound = max(limit, CONTROL_MAX) + HEADER_MAX
    events: list[tuple[str, Any]] = []
    written: list[bytes] = []
    for chunk in chunks:
        connection.receive_data(chunk)
        events += [(type(event).__name__, tuple(event)) for event in connection.events_received()]
        written += connection.data_to_send()
        buffered = len(connection._reader._buffer)
        check(buffered <= bound, f"connection buffer {buffered} > {bound}")
        parts = sum(len(part) for part in connection._parts)
        check(parts <= max_size, f"fragments of {parts} bytes > max_size {max_size}")
    for kind, value in events:  # inflated messages too: a decompression bomb stops at max_size
        check(kind != "Message" or len(value[0]) <= max_size, "message over max_size")
    failure = connection.failure
    if failure is not None:
        check(failure.code in ERROR_CODES, f"connection failed with close code {failure.code}")
        sent = connection.close_sent
        check(sent is not None and sent.code == failure.code, "failed without its close frame")
    if b"" in written:
        check(written.index(b"") == len(written) - 1, "wrote after closing TCP")
    # What the connection wrote, read back by its peer.
    peer = FrameReader(mask_expected=side is CLIENT, max_size=None)
    output: list[tuple[int, Any]] = []
    for frame in peer.feed(b"".join(written)):
        value = Close.parse(frame.payload).code if frame.opcode == 0x8 else frame.payload
        output.append((frame.opcode, value))
    check(peer.error is None and not peer._buffer, "wrote frames its peer cannot read")
    closing = connection.state is CLOSING
    check((b"" in written) == (side is SERVER and closing), "TCP closed when it should not be")
    return ConnectionResult(
        events, output, None if failure is None else (type(failure).__name__, failure.code), closing
    )


def fuzz_frames(data: bytes) -> None:
    """data[0]: bit 0 server/client, bits 1-2 max_size, bits 3-4 permessage-deflate;
    data[1]: how to cut; the rest: the bytes received."""
    if len(data) < 2:
        return
    side = SERVER if data[0] & 1 else CLIENT
    max_size = MAX_SIZES[(data[0] >> 1) & 3]
    mode = (data[0] >> 3) & 3
    stream = data[2:]
    chunks = cut(stream, data[1])
    whole = read_frames([stream], side is SERVER, max_size)
    split = read_frames(chunks, side is SERVER, max_size)
    check(whole == split, f"reader: whole {whole} != cut {split}")
    whole_run = drive(side, [stream], max_size, mode)
    split_run = drive(side, chunks, max_size, mode)
    check(whole_run == split_run, f"connection: whole {whole_run} != cut {split_run}")


# --- handshake ----------------------------------------------------------------------------------

#: The key of RFC 6455 section 1.3, whose accept value is s3pPLMBiTxaQ9kYGzzhZRbK+xOo=.
CLIENT_KEY = "dGhlIHNhbXBsZSBub25jZQ=="
SUBPROTOCOLS = ["chat", "superchat"]
SERVERS = [
    ServerHandshake(),
    ServerHandshake(subprotocols=SUBPROTOCOLS),
    ServerHandshake(origins=["https://app.example", None]),
    ServerHandshake(origins=["https://app.example"], subprotocols=["superchat"]),
]
REQUEST_STATUSES = {400, 403, 405, 414, 426, 431}


class HeadResult(NamedTuple):
    head: tuple[Any, ...] | None
    refused: bool
    rest: bytes


def parse_head(
    chunks: Sequence[bytes], is_request: bool
) -> tuple[HeadResult, Request | Response | None]:
    parser = HeadParser(is_request=is_request)
    for i, chunk in enumerate(chunks):
        try:
            head = parser.feed(chunk)
        except HandshakeError as exc:
            allowed = REQUEST_STATUSES if is_request else {502}
            check(exc.status in allowed, f"refused with HTTP status {exc.status}")
            return HeadResult(None, True, b""), None
        if head is not None:
            rest = parser.rest + b"".join(chunks[i + 1 :])
            if isinstance(head, Request):
                key: tuple[Any, ...] = (head.method, head.path, head.headers.raw_items())
            else:
                key = (head.status, head.reason, head.headers.raw_items())
            return HeadResult(key, False, rest), head
        check(len(parser._buffer) <= MAX_HEAD_SIZE, f"head buffer {len(parser._buffer)}")
    return HeadResult(None, False, b""), None


def accept_request(request: Request, server: ServerHandshake) -> None:
    try:
        accepted = server.accept(request)
    except HandshakeError as exc:
        check(exc.status in {400, 403, 426}, f"accept refused with HTTP status {exc.status}")
        return
    response, chosen = accepted[0], accepted[1]
    check(response.status == 101, f"accepted with status {response.status}")
    [key] = request.headers.get_all("Sec-WebSocket-Key")
    offered = [
        token.strip()
        for value in request.headers.get_all("Sec-WebSocket-Protocol")
        for token in value.split(",")
    ]
    # The answer, sent and parsed back, satisfies our own client.
    client = ClientHandshake(request.headers["Host"], subprotocols=offered)
    client.key = key
    parsed = HeadParser(is_request=False).feed(response.serialize())
    check(isinstance(parsed, Response), "the 101 response does not parse")
    assert isinstance(parsed, Response)
    check(client.check_response(parsed) == chosen, "the client disagrees on the subprotocol")


def check_response(response: Response) -> None:
    client = ClientHandshake("example.com", subprotocols=SUBPROTOCOLS)
    client.key = CLIENT_KEY
    try:
        chosen = client.check_response(response)
    except HandshakeError as exc:
        check(isinstance(exc.status, int), "refusal without an HTTP status")
        return
    headers = response.headers
    check(response.status == 101, f"accepted a {response.status} response")
    check(headers.get_all("Sec-WebSocket-Accept") == [accept_key(CLIENT_KEY)], "wrong accept")
    check(chosen is None or chosen in SUBPROTOCOLS, f"accepted subprotocol {chosen!r}")


def fuzz_handshake(data: bytes) -> None:
    """data[0]: bit 0 request/response, bits 1-2 server policy; data[1]: how to cut."""
    if len(data) < 2:
        return
    is_request = not data[0] & 1
    stream = data[2:]
    whole, head = parse_head([stream], is_request)
    split, _ = parse_head(cut(stream, data[1]), is_request)
    # A refusal's status may depend on the cuts (which fault is seen first), not the outcome.
    check(whole == split, f"head: whole {whole} != cut {split}")
    if isinstance(head, Request):
        accept_request(head, SERVERS[(data[0] >> 1) & 3])
    elif isinstance(head, Response):
        check_response(head)


def fuzz_selftest(data: bytes) -> None:
    if data and data[0] >= 0x80 and data[-1] & 1:
        raise ZeroDivisionError("selftest: first byte >= 0x80 and last byte odd")


TARGETS: dict[str, Callable[[bytes], None]] = {
    "frames": fuzz_frames,
    "handshake": fuzz_handshake,
    "selftest": fuzz_selftest,
}


# --- seeds: valid inputs that the engines start from ------------------------------------------


def _frame_seeds() -> Iterator[bytes]:
    for side_bit, mask in ((1, True), (0, False)):
        frames = [
            serialize_frame(0x1, "héllo".encode(), mask=mask),
            serialize_frame(0x2, bytes(range(200)), fin=False, mask=mask),
            serialize_frame(0x9, b"ping", mask=mask),
            serialize_frame(0x0, b"more", mask=mask),
            serialize_frame(0x8, Close(1000, "bye").serialize(), mask=mask),
        ]
        for max_bits in range(4):
            yield bytes((side_bit | max_bits << 1, 0)) + b"".join(frames)
            yield bytes((side_bit | max_bits << 1, 7)) + b"".join(frames[:3])
        # Compressed messages (RSV1), one of them a bomb: 1 MiB of zeros in ~1 KiB.
        for data in ("héllo " * 20).encode(), b"\x00" * 2**20:
            compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
            deflated = (compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH))[:-4]
            frame = serialize_frame(0x2, deflated, mask=mask, rsv=0x40)
            for mode in (1, 2):
                yield bytes((side_bit | 3 << 1 | mode << 3, 0)) + frame + frame


def _handshake_seeds() -> Iterator[bytes]:
    client = ClientHandshake("example.com", subprotocols=SUBPROTOCOLS, origin="https://app.example")
    client.key = CLIENT_KEY
    request = client.request().serialize()
    for policy in range(4):
        yield bytes((policy << 1, 0)) + request
        yield bytes((policy << 1, 5)) + request + b"\x81\x85"
    response = ServerHandshake(subprotocols=SUBPROTOCOLS).accept(client.request())[0]
    yield bytes((1, 0)) + response.serialize()
    yield bytes((1, 3)) + response.serialize() + b"\x81\x05hello"


SEEDS: dict[str, Callable[[], Iterator[bytes]]] = {
    "frames": _frame_seeds,
    "handshake": _handshake_seeds,
    "selftest": lambda: iter([b"\x00\x00"]),
}

DICTIONARY = [
    b"HTTP/1.1", b"GET / HTTP/1.1\r\n", b"HTTP/1.1 101 Switching Protocols\r\n", b"\r\n\r\n",
    b"Host: ", b"Upgrade: websocket", b"Connection: Upgrade", b"Sec-WebSocket-Key: ",
    b"Sec-WebSocket-Version: 13", b"Sec-WebSocket-Accept: ", b"Sec-WebSocket-Protocol: ",
    b"Sec-WebSocket-Extensions: ", b"permessage-deflate", b"Origin: ", CLIENT_KEY.encode(),
    accept_key(CLIENT_KEY).encode(), b"chat", b"superchat", b"https://app.example",
]  # fmt: skip


# --- inputs for the hypothesis engine: random bytes, and streams that are mostly valid ----------

if TYPE_CHECKING:
    from hypothesis.strategies import DrawFn, SearchStrategy


def _mask(payload: bytes, key: bytes) -> bytes:
    return bytes(byte ^ key[i % 4] for i, byte in enumerate(payload))


def structured_inputs(target: str) -> SearchStrategy[bytes]:
    """Inputs for ``target``: half random bytes, half built to pass the first checks."""
    from hypothesis import strategies as st

    def usually(usual: SearchStrategy[Any], unusual: SearchStrategy[Any]) -> SearchStrategy[Any]:
        return st.integers(0, 9).flatmap(lambda n: unusual if n == 0 else usual)

    payloads = st.one_of(
        st.binary(max_size=40),
        st.text(max_size=20).map(str.encode),
        st.builds(lambda n: b"x" * n, st.integers(0, 1100)),
        st.builds(
            lambda code, reason: code.to_bytes(2, "big") + reason.encode(),
            st.sampled_from([1000, 1001, 1005, 1006, 1011, 3000, 4999, 5000]),
            st.text(max_size=10),
        ),
    )

    @st.composite
    def frame(draw: DrawFn, mask_expected: bool) -> bytes:
        opcode = draw(usually(st.sampled_from([0x0, 0x1, 0x2, 0x8, 0x9, 0xA]), st.integers(0, 15)))
        payload = draw(payloads)
        if opcode >= 0x8 and draw(usually(st.just(True), st.just(False))):
            payload = payload[:CONTROL_MAX]
        fin = draw(st.booleans() if opcode < 0x8 else usually(st.just(True), st.just(False)))
        rsv = draw(usually(st.sampled_from([0, 0, 0x40]), st.sampled_from([0x10, 0x20, 0x40])))
        if rsv == 0x40 and draw(st.booleans()):  # a compressed message (RFC 7692 section 7.2.1)
            compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
            payload = (compressor.compress(payload) + compressor.flush(zlib.Z_SYNC_FLUSH))[:-4]
        masked = draw(usually(st.just(mask_expected), st.just(not mask_expected)))
        first = (0x80 if fin else 0) | rsv | opcode
        size = len(payload)
        bit = 0x80 if masked else 0
        if size < 126:
            header = bytes((first, bit | size))
        else:
            header = bytes((first, bit | 126)) + size.to_bytes(2, "big")
        if not masked:
            return header + payload
        key = draw(st.binary(min_size=4, max_size=4))
        return header + key + _mask(payload, key)

    @st.composite
    def corrupted(draw: DrawFn, data: bytes) -> bytes:
        how = draw(st.integers(0, 3))
        if how == 0 or not data:
            return data
        position = draw(st.integers(0, len(data) - 1))
        if how == 1:
            return data[:position]
        return (
            data[:position]
            + bytes((data[position] ^ draw(st.integers(1, 255)),))
            + data[position + 1 :]
        )

    @st.composite
    def frame_stream(draw: DrawFn) -> bytes:
        config = draw(st.integers(0, 255))
        frames = draw(st.lists(frame(bool(config & 1)), max_size=8))
        return bytes((config, draw(st.integers(0, 255)))) + draw(corrupted(b"".join(frames)))

    def header_lines(pool: Sequence[tuple[str, SearchStrategy[str]]]) -> SearchStrategy[list[str]]:
        @st.composite
        def lines(draw: DrawFn) -> list[str]:
            chosen = []
            for name, values in pool:
                for _ in range(draw(usually(st.just(1), st.integers(0, 2)))):
                    separator = draw(usually(st.just(": "), st.sampled_from([":", " : ", ":\t"])))
                    chosen.append(f"{name}{separator}{draw(values)}")
            return list(draw(st.permutations(chosen)))

        return lines()

    junk = st.text(st.characters(min_codepoint=0, max_codepoint=255), max_size=12)
    request_headers = header_lines(
        [
            ("Host", usually(st.just("example.com"), junk)),
            ("Upgrade", usually(st.sampled_from(["websocket", "WebSocket"]), junk)),
            ("Connection", usually(st.sampled_from(["Upgrade", "keep-alive, upgrade"]), junk)),
            ("Sec-WebSocket-Key", usually(st.just(CLIENT_KEY), junk)),
            ("Sec-WebSocket-Version", usually(st.just("13"), junk)),
            ("Origin", st.sampled_from(["https://app.example", "https://evil.example"])),
            ("Sec-WebSocket-Protocol", st.sampled_from(["chat", "superchat, chat", "x", ""])),
            (
                "Sec-WebSocket-Extensions",
                st.sampled_from(
                    [
                        "permessage-deflate",
                        "permessage-deflate; client_max_window_bits",
                        'x; y="z"',
                        ";",
                    ]
                ),
            ),
        ]
    )
    response_headers = header_lines(
        [
            ("Upgrade", usually(st.just("websocket"), junk)),
            ("Connection", usually(st.just("Upgrade"), junk)),
            ("Sec-WebSocket-Accept", usually(st.just(accept_key(CLIENT_KEY)), junk)),
            ("Sec-WebSocket-Protocol", st.sampled_from(["chat", "superchat", "other", ""])),
            ("Sec-WebSocket-Extensions", st.sampled_from(["permessage-deflate", "x", ""])),
        ]
    )

    @st.composite
    def head(draw: DrawFn) -> bytes:
        is_response = draw(st.booleans())
        if is_response:
            start = draw(usually(st.just("HTTP/1.1 101 Switching Protocols"), junk))
            lines = draw(response_headers)
        else:
            start = draw(
                usually(st.sampled_from(["GET / HTTP/1.1", "GET /chat?x=1 HTTP/1.1"]), junk)
            )
            lines = draw(request_headers)
        text = "\r\n".join([start, *lines]) + "\r\n\r\n"
        data = text.encode("latin-1") + draw(st.binary(max_size=8))
        config = draw(st.integers(0, 255)) & ~1 | is_response
        return bytes((config, draw(st.integers(0, 255)))) + draw(corrupted(data))

    structured = {"frames": frame_stream(), "handshake": head(), "selftest": st.binary()}
    return st.one_of(st.binary(max_size=2000), structured[target])


# --- the run: count, time limit, crash report ---------------------------------------------------


@dataclass
class Run:
    target: str
    engine: str
    crash_dir: Path
    seconds: float | None
    runs: int | None
    timeout: float
    count: int = 0
    crashes: int = 0
    started: float = 0.0
    reported: bool = False

    def summary(self) -> None:
        if self.reported:
            return
        self.reported = True
        elapsed = time.monotonic() - self.started
        print(
            f"fuzz {self.target}: {self.count} inputs in {elapsed:.1f} s, "
            f"{self.crashes} crashes (engine {self.engine})",
            flush=True,
        )

    def done(self) -> bool:
        if self.runs is not None and self.count >= self.runs:
            return True
        return self.seconds is not None and time.monotonic() - self.started >= self.seconds

    def save(self, data: bytes, exc: BaseException) -> Path:
        self.crash_dir.mkdir(parents=True, exist_ok=True)
        path = self.crash_dir / f"crash-{self.target}-{hashlib.sha1(data).hexdigest()[:16]}"
        path.write_bytes(data)
        self.crashes += 1
        print(f"\nCRASH in target {self.target}: {type(exc).__name__}: {exc}", flush=True)
        traceback.print_exception(exc, file=sys.stdout)
        print(f"input ({len(data)} bytes) saved to {path}: {data[:200]!r}", flush=True)
        print(f"replay: python {sys.argv[0]} {self.target} --replay {path}", flush=True)
        return path


def _escape(word: bytes) -> str:
    """A libFuzzer dictionary entry: every byte as a \\xNN escape."""
    return "".join(f"\\x{byte:02x}" for byte in word)


def run_atheris(run: Run, libfuzzer_args: list[str]) -> int:
    assert ATHERIS is not None
    one_input = TARGETS[run.target]
    workdir = Path(tempfile.mkdtemp(prefix=f"fuzz-{run.target}-"))
    corpus = workdir / "corpus"
    corpus.mkdir()
    for i, seed in enumerate(SEEDS[run.target]()):
        (corpus / f"seed-{i}").write_bytes(seed)
    dictionary = workdir / "dict"
    dictionary.write_text("".join(f'"{_escape(word)}"\n' for word in DICTIONARY))

    def finish(status: int) -> None:
        run.summary()
        shutil.rmtree(workdir, ignore_errors=True)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)  # libFuzzer has no way back to Python: leave from here

    def test_one_input(data: bytes) -> None:
        if run.done():
            finish(0)
        run.count += 1
        try:
            one_input(data)
        except Exception as exc:
            run.save(data, exc)
            finish(1)

    def on_exit() -> None:  # libFuzzer's own stop (-atheris_runs, -runs) exits through here
        run.summary()
        shutil.rmtree(workdir, ignore_errors=True)

    atexit.register(on_exit)
    args = [sys.argv[0], *libfuzzer_args]
    if not any(arg.startswith("-timeout=") for arg in libfuzzer_args):
        args.append(f"-timeout={max(1, round(run.timeout))}")  # a hang: libFuzzer reports it
    if not any(arg.startswith("-dict=") for arg in libfuzzer_args):
        args.append(f"-dict={dictionary}")
    args += [f"-artifact_prefix={run.crash_dir}/", "-print_final_stats=0", str(corpus)]
    run.crash_dir.mkdir(parents=True, exist_ok=True)
    ATHERIS.Setup(args, test_one_input)
    run.started = time.monotonic()
    ATHERIS.Fuzz()
    return 0  # not reached


def _on_alarm(signum: int, frame: FrameType | None) -> None:
    raise Hang("input ran longer than the per-input timeout")


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    previous = signal.signal(signal.SIGALRM, _on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def run_hypothesis(run: Run) -> int:
    """Batches of hypothesis examples (random and structured) until the budget is spent."""
    from hypothesis import HealthCheck, Phase, Verbosity, given, settings

    one_input = TARGETS[run.target]
    strategy = structured_inputs(run.target)
    seeds = list(SEEDS[run.target]())
    last: list[bytes] = [b""]

    @settings(
        max_examples=100,
        database=None,
        deadline=None,
        phases=[Phase.generate, Phase.shrink],
        suppress_health_check=list(HealthCheck),
        report_multiple_bugs=False,
        verbosity=Verbosity.quiet,
    )
    @given(strategy)
    def batch(data: bytes) -> None:
        run.count += 1
        last[0] = data
        with time_limit(run.timeout):
            one_input(data)

    run.started = time.monotonic()
    try:
        for seed in seeds:
            run.count += 1
            last[0] = seed
            one_input(seed)
        while not run.done():
            batch()
    except Exception as exc:
        # Hypothesis replays the smallest failing input last, then raises its exception.
        run.save(last[0], exc)
        run.summary()
        return 1
    run.summary()
    return 0


def replay(target: str, paths: Sequence[str]) -> int:
    status = 0
    for path in paths:
        data = Path(path).read_bytes()
        try:
            TARGETS[target](data)
        except Exception:
            traceback.print_exc(file=sys.stdout)
            print(f"replay {path}: CRASH", flush=True)
            status = 1
        else:
            print(f"replay {path}: ok", flush=True)
    return status


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        epilog="Options with a single dash are passed to libFuzzer (atheris engine).",
    )
    parser.add_argument("target", choices=sorted(TARGETS))
    parser.add_argument("--engine", choices=["auto", "atheris", "hypothesis"], default="auto")
    parser.add_argument("--seconds", type=float, help="stop after this long (default 60 s)")
    parser.add_argument("--runs", type=int, help="stop after this many inputs")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per input")
    parser.add_argument("--crash-dir", type=Path, default=DEFAULT_CRASH_DIR)
    parser.add_argument("--replay", nargs="+", metavar="FILE", help="run these inputs once")
    options, rest = parser.parse_known_args(argv)
    unknown = [arg for arg in rest if arg.startswith("--") or not arg.startswith("-")]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if options.replay:
        return replay(options.target, options.replay)
    engine = "atheris" if ATHERIS is not None else "hypothesis"
    libfuzzer_stops = any(
        arg.split("=")[0] in ("-atheris_runs", "-runs", "-max_total_time") for arg in rest
    )
    if rest and engine != "atheris":
        parser.error(f"libFuzzer options need the atheris engine: {' '.join(rest)}")
    seconds = options.seconds
    if seconds is None and options.runs is None and not libfuzzer_stops:
        seconds = 60.0
    run = Run(
        options.target, engine, options.crash_dir.resolve(), seconds, options.runs, options.timeout
    )
    if engine == "atheris":
        return run_atheris(run, rest)
    return run_hypothesis(run)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
