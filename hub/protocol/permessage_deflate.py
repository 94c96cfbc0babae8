"""permessage-deflate (RFC 7692): negotiation on both sides and the per-connection codec.

Defaults, and why
-----------------
A server compresses every message with a fresh compressor (``server_no_context_takeover``, which
RFC 7692 section 7.1.1.1 lets a server declare on its own). That costs a little ratio on streams
of similar messages, but a compressed message then does not depend on the connection: a broker
can compress a publication once and send the same bytes to every subscriber, and an idle
connection holds no compressor at all. The client's compressor keeps its context (better ratio
on the client's uplink), limited to a 4 KiB window (``client_max_window_bits=12``) when the client
lets the server choose, so that the server's decompressor stays small. Decompressors are created
on the first compressed message and dropped after each message when the peer does not keep its
context.

Decompression is bounded by ``max_size`` *while* inflating (``max_length`` on each call), never
after: a small frame that inflates to gigabytes fails with 1009 after at most ``max_size`` bytes.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, NamedTuple

from hub.exceptions import InvalidPayloadData, NegotiationError, PayloadTooBig
from hub.protocol.extensions import ExtensionOffer, serialize_extension

__all__ = [
    "CLIENT_DEFAULT",
    "SERVER_DEFAULT",
    "Compression",
    "DeflateConfig",
    "OfferOutcome",
    "PerMessageDeflate",
    "accept_offer",
    "client_accept",
    "client_offer",
    "resolve_compression",
]

NAME = "permessage-deflate"
# Section 7.2.1: the 4 octets that end a sync flush; senders strip them, receivers add them back.
_SYNC_TAIL = b"\x00\x00\xff\xff"
_PARAMS = (
    "server_no_context_takeover",
    "client_no_context_takeover",
    "server_max_window_bits",
    "client_max_window_bits",
)
_WINDOW_BITS = {str(bits): bits for bits in range(8, 16)}


@dataclass(frozen=True)
class DeflateConfig:
    """What one side asks for or accepts, plus how it compresses.

    ``level`` and ``mem_level`` go to ``zlib.compressobj``; messages shorter than ``min_size``
    bytes are sent uncompressed (compressing them costs CPU and often adds bytes). Level 1 is
    the default because a hub spends its CPU on fan-out: on text it compresses about 6x faster
    than zlib's default level 6 for output about 10-15% larger.
    The window bits are 9-15: zlib cannot compress with an 8-bit window.
    """

    server_no_context_takeover: bool = True
    client_no_context_takeover: bool = False
    server_max_window_bits: int | None = None
    client_max_window_bits: int | None = 12
    level: int = 1
    mem_level: int = 5
    min_size: int = 32

    def __post_init__(self) -> None:
        for name in ("server_max_window_bits", "client_max_window_bits"):
            bits = getattr(self, name)
            if bits is not None and not 9 <= bits <= 15:
                raise ValueError(f"{name} must be between 9 and 15, not {bits}")
        if not -1 <= self.level <= 9:
            raise ValueError(f"level must be between -1 and 9, not {self.level}")
        if not 1 <= self.mem_level <= 9:
            raise ValueError(f"mem_level must be between 1 and 9, not {self.mem_level}")
        if self.min_size < 0:
            raise ValueError("min_size must not be negative")


class PerMessageDeflate:
    """The negotiated codec of one connection: compress what we send, inflate what we receive.

    ``local_*`` describe our compressor, ``remote_*`` the peer's (and so our decompressor).
    """

    def __init__(
        self,
        *,
        local_no_context_takeover: bool,
        remote_no_context_takeover: bool,
        local_max_window_bits: int,
        remote_max_window_bits: int,
        config: DeflateConfig,
    ) -> None:
        self.local_no_context_takeover = local_no_context_takeover
        self.remote_no_context_takeover = remote_no_context_takeover
        self.local_max_window_bits = local_max_window_bits
        # zlib never writes 8-bit-window streams (it silently uses 9), so inflate with at least
        # 9: a larger window reads any stream written with a smaller one.
        self.remote_max_window_bits = max(remote_max_window_bits, 9)
        self.config = config
        self._compressor: zlib._Compress | None = None
        self._decompressor: zlib._Decompress | None = None
        self._inflated = 0  # bytes inflated so far in the message being received
        #: A key under which this codec compresses a whole message to the same bytes as any
        #: other codec with the same key, or None if its output depends on its history. Without
        #: context takeover, a fresh compressor's output depends only on the level, the memory
        #: level and the window: a broker compresses a publication once per key and sends the
        #: bytes to every connection that shares it.
        self.shareable_key: tuple[int, int, int] | None = (
            (config.level, config.mem_level, local_max_window_bits)
            if local_no_context_takeover
            else None
        )

    def __repr__(self) -> str:
        return (
            f"PerMessageDeflate(local: takeover={not self.local_no_context_takeover} "
            f"bits={self.local_max_window_bits}; remote: "
            f"takeover={not self.remote_no_context_takeover} bits={self.remote_max_window_bits})"
        )

    # --- receiving --------------------------------------------------------------------------------

    def decompress(self, data: bytes, *, final: bool, max_size: int | None) -> bytes:
        """Inflate one frame of a compressed message; raise PayloadTooBig past ``max_size``."""
        decompressor = self._decompressor
        if decompressor is None:
            decompressor = zlib.decompressobj(wbits=-self.remote_max_window_bits)
            self._decompressor = decompressor
        if final:
            data += _SYNC_TAIL
        # max_length stops inflating one byte past the budget: enough to know it was exceeded.
        budget = 0 if max_size is None else max_size - self._inflated
        try:
            inflated = decompressor.decompress(data, 0 if max_size is None else budget + 1)
        except zlib.error as exc:
            raise InvalidPayloadData(f"invalid compressed data: {exc}") from exc
        if max_size is not None and len(inflated) > budget:
            raise PayloadTooBig(f"message inflates to more than max_size ({max_size} bytes)")
        self._inflated += len(inflated)
        if decompressor.eof:
            self._end_of_stream(decompressor, inflated, final=final)
        if final:
            self._inflated = 0
            if self.remote_no_context_takeover:
                self._decompressor = None
        return inflated

    def _end_of_stream(
        self, decompressor: zlib._Decompress, inflated: bytes, *, final: bool
    ) -> None:
        """The peer ended a message with a BFINAL block (section 7.2.3.4), which ends zlib's stream.

        Only zero padding and the tail we appended may follow it. Later messages need a fresh
        decompressor; with context takeover it is primed with the window the peer keeps: the
        end of this frame's output (a BFINAL peer that refers further back than the current
        frame is not supported and fails with 1007).
        """
        rest = decompressor.unused_data.removesuffix(_SYNC_TAIL)
        if not final or rest.strip(b"\x00"):
            raise InvalidPayloadData("compressed data continues after the final deflate block")
        if self.remote_no_context_takeover:
            self._decompressor = None
            return
        window = inflated[-(1 << self.remote_max_window_bits) :]
        self._decompressor = zlib.decompressobj(wbits=-self.remote_max_window_bits, zdict=window)

    # --- sending ----------------------------------------------------------------------------------

    def should_compress(self, size: int) -> bool:
        return size >= self.config.min_size

    def compress(self, data: bytes, *, final: bool) -> bytes:
        """Deflate one frame's worth of a message (section 7.2.1)."""
        compressor = self._compressor
        if compressor is None:
            compressor = zlib.compressobj(
                self.config.level, zlib.DEFLATED, -self.local_max_window_bits, self.config.mem_level
            )
            self._compressor = compressor
        deflated = compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)
        if final:
            if self.local_no_context_takeover:
                self._compressor = None
            # Section 7.2.1: strip the sync flush's empty block; 7.2.3.6: send 0x00 if empty.
            deflated = deflated[:-4] or b"\x00"
        return deflated


# --- negotiation ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Params:
    server_no_context_takeover: bool = False
    client_no_context_takeover: bool = False
    server_max_window_bits: int | None = None
    #: None: absent; 0: present without a value (only valid in a client's offer).
    client_max_window_bits: int | None = None


def _parse_params(params: Sequence[tuple[str, str | None]], *, in_offer: bool) -> _Params:
    """Validate permessage-deflate parameters (section 7.1); ValueError says what is wrong."""
    seen: dict[str, str | None] = {}
    for name, value in params:
        if name not in _PARAMS:
            raise ValueError(f"unknown parameter {name}")
        if name in seen:
            raise ValueError(f"duplicate parameter {name}")
        seen[name] = value
    values: dict[str, bool | int | None] = {}
    for name in ("server_no_context_takeover", "client_no_context_takeover"):
        if name in seen:
            if seen[name] is not None:
                raise ValueError(f"{name} takes no value")
            values[name] = True
    for name in ("server_max_window_bits", "client_max_window_bits"):
        if name not in seen:
            continue
        value = seen[name]
        if value is None:
            # Section 7.1.2.2: only a client's offer may send client_max_window_bits bare.
            if name == "client_max_window_bits" and in_offer:
                values[name] = 0
                continue
            raise ValueError(f"{name} needs a value")
        if value not in _WINDOW_BITS:
            raise ValueError(f"{name}={value} is not an integer from 8 to 15")
        values[name] = _WINDOW_BITS[value]
    return _Params(**values)  # type: ignore[arg-type]


class OfferOutcome(NamedTuple):
    """The server's answer: the response header value and the codec (both None if declined),
    and why each offer before the accepted one was declined."""

    header: str | None
    codec: PerMessageDeflate | None
    declined: list[str]


def accept_offer(offers: Sequence[ExtensionOffer], config: DeflateConfig) -> OfferOutcome:
    """Server side: accept the first acceptable permessage-deflate offer, in the client's order.

    Section 7.1: a server declines (it does not fail on) an offer it cannot accept.
    """
    declined: list[str] = []
    for name, params in offers:
        if name != NAME:
            continue
        try:
            offer = _parse_params(params, in_offer=True)
            header, codec = _server_response(offer, config)
        except ValueError as exc:
            declined.append(f"{serialize_extension(name, params)!r}: {exc}")
            continue
        return OfferOutcome(header, codec, declined)
    return OfferOutcome(None, None, declined)


def _server_response(offer: _Params, config: DeflateConfig) -> tuple[str, PerMessageDeflate]:
    response: list[tuple[str, str | None]] = []
    server_no_takeover = offer.server_no_context_takeover or config.server_no_context_takeover
    if server_no_takeover:
        response.append(("server_no_context_takeover", None))
    client_no_takeover = offer.client_no_context_takeover or config.client_no_context_takeover
    if client_no_takeover:
        response.append(("client_no_context_takeover", None))
    # Section 7.1.2.1: we must not use a bigger window than the client asked for.
    server_bits = min(offer.server_max_window_bits or 15, config.server_max_window_bits or 15)
    if server_bits == 8:
        raise ValueError("server_max_window_bits=8 is not supported (zlib compresses with 9+)")
    if offer.server_max_window_bits is not None or config.server_max_window_bits is not None:
        response.append(("server_max_window_bits", str(server_bits)))
    # Section 7.1.2.2: we may cap the client's window only if its offer mentioned it.
    client_bits = 15
    if offer.client_max_window_bits is not None:
        client_bits = min(offer.client_max_window_bits or 15, config.client_max_window_bits or 15)
        if offer.client_max_window_bits or config.client_max_window_bits:
            response.append(("client_max_window_bits", str(client_bits)))
    codec = PerMessageDeflate(
        local_no_context_takeover=server_no_takeover,
        remote_no_context_takeover=client_no_takeover,
        local_max_window_bits=server_bits,
        remote_max_window_bits=client_bits,
        config=config,
    )
    return serialize_extension(NAME, response), codec


def client_offer(config: DeflateConfig) -> str:
    """The client's offer; ``client_max_window_bits`` bare lets the server cap our window."""
    params: list[tuple[str, str | None]] = []
    if config.server_no_context_takeover:
        params.append(("server_no_context_takeover", None))
    if config.client_no_context_takeover:
        params.append(("client_no_context_takeover", None))
    if config.server_max_window_bits is not None:
        params.append(("server_max_window_bits", str(config.server_max_window_bits)))
    bits = config.client_max_window_bits
    params.append(("client_max_window_bits", None if bits is None else str(bits)))
    return serialize_extension(NAME, params)


#: A client's default: let the server decide everything it may (RFC 7692 section 7.1).
CLIENT_DEFAULT = DeflateConfig(server_no_context_takeover=False, client_max_window_bits=None)
#: A server's default (the class's defaults), one shared instance: a config is only read.
SERVER_DEFAULT = DeflateConfig()


def client_accept(
    extensions: Sequence[ExtensionOffer], config: DeflateConfig
) -> PerMessageDeflate | None:
    """Client side: check the server's Sec-WebSocket-Extensions against what we offered."""
    if not extensions:
        return None
    if len(extensions) > 1 or extensions[0][0] != NAME:
        names = ", ".join(name for name, _ in extensions)
        raise NegotiationError(f"server selected extensions that were not offered: {names}")
    try:
        response = _parse_params(extensions[0][1], in_offer=False)
    except ValueError as exc:
        raise NegotiationError(f"invalid permessage-deflate response: {exc}") from exc
    if config.server_no_context_takeover and not response.server_no_context_takeover:
        raise NegotiationError("server did not accept server_no_context_takeover")
    offered = config.server_max_window_bits
    server_bits = response.server_max_window_bits
    if offered is not None and (server_bits is None or server_bits > offered):
        raise NegotiationError(f"server ignored server_max_window_bits={offered}")
    client_bits = response.client_max_window_bits
    limit = config.client_max_window_bits
    if client_bits is not None and limit is not None and client_bits > limit:
        raise NegotiationError("server raised client_max_window_bits above our offer")
    if client_bits == 8:
        raise NegotiationError("client_max_window_bits=8 is not supported (zlib needs 9+)")
    return PerMessageDeflate(
        local_no_context_takeover=response.client_no_context_takeover
        or config.client_no_context_takeover,
        remote_no_context_takeover=response.server_no_context_takeover,
        local_max_window_bits=client_bits or config.client_max_window_bits or 15,
        remote_max_window_bits=server_bits or 15,
        config=config,
    )


#: What ``serve()`` and ``connect()`` take as ``compression``: "deflate" for the defaults of
#: that side, a DeflateConfig to tune it, or None for no compression.
Compression = Literal["deflate"] | DeflateConfig | None


def resolve_compression(compression: Compression, *, server: bool) -> DeflateConfig | None:
    if compression is None or isinstance(compression, DeflateConfig):
        return compression
    if compression == "deflate":
        return SERVER_DEFAULT if server else CLIENT_DEFAULT
    raise ValueError(f"compression must be 'deflate', a DeflateConfig or None, not {compression!r}")
