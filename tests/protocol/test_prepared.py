"""Messages prepared once for many server connections (the broker's fan-out path)."""

from __future__ import annotations

import pytest

from hub.exceptions import UsageError
from hub.protocol.connection import CLIENT, SERVER, Connection, Message, PreparedMessage
from hub.protocol.permessage_deflate import DeflateConfig, PerMessageDeflate


def codec(*, server: bool, takeover: bool = False) -> PerMessageDeflate:
    return PerMessageDeflate(
        local_no_context_takeover=not takeover if server else False,
        remote_no_context_takeover=False if server else not takeover,
        local_max_window_bits=15,
        remote_max_window_bits=15,
        config=DeflateConfig(min_size=8),
    )


def received_by_client(frames: list[bytes], deflate: PerMessageDeflate | None) -> list[object]:
    client = Connection(CLIENT, deflate=deflate)
    for frame in frames:
        client.receive_data(frame)
    return [event.data for event in client.events_received() if isinstance(event, Message)]


@pytest.mark.parametrize("data", ["hello", "é" * 100, b"\x00\x01" * 50, ""])
def test_uncompressed_frame_equals_a_normal_send(data: str | bytes) -> None:
    prepared, normal = Connection(SERVER), Connection(SERVER)
    prepared.send_prepared(PreparedMessage(data))
    if isinstance(data, str):
        normal.send_text(data)
    else:
        normal.send_binary(data)
    assert prepared.data_to_send() == normal.data_to_send()


def test_compressed_frame_is_built_once_and_shared() -> None:
    message = PreparedMessage("a shared publication " * 20)
    connections = [Connection(SERVER, deflate=codec(server=True)) for _ in range(3)]
    frames = []
    for connection in connections:
        connection.send_prepared(message)
        frames.append(connection.data_to_send()[0])
    assert frames[0] is frames[1] is frames[2]
    assert frames[0][0] & 0x40  # RSV1: compressed
    assert received_by_client(frames[:1], codec(server=False)) == ["a shared publication " * 20]


def test_small_messages_stay_uncompressed() -> None:
    connection = Connection(SERVER, deflate=codec(server=True))
    connection.send_prepared(PreparedMessage("tiny"))
    assert not connection.data_to_send()[0][0] & 0x40


def test_context_takeover_connections_get_their_own_frames() -> None:
    server = Connection(SERVER, deflate=codec(server=True, takeover=True))
    frames = []
    for _ in range(2):
        server.send_prepared(PreparedMessage("repeated text " * 20))
        frames.extend(server.data_to_send())
    assert len(frames[1]) < len(frames[0])  # the second one refers back to the first
    client_codec = codec(server=False, takeover=True)
    assert received_by_client(frames, client_codec) == ["repeated text " * 20] * 2


def test_clients_cannot_send_prepared_messages() -> None:
    with pytest.raises(UsageError, match="servers"):
        Connection(CLIENT).send_prepared(PreparedMessage("x"))
