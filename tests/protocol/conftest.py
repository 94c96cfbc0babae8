"""Fixtures for the socket tests of hub.protocol: servers on 127.0.0.1, free ports, TLS material."""

from __future__ import annotations

import asyncio
import datetime
import gc
import ipaddress
import shutil
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from hub.protocol import WebSocketClientProtocol, WebSocketServer, connect, serve
from tests.conftest import CALL_FAILED
from tests.protocol.support import Connect, StartServer, TLSFiles, echo, uri_of


@pytest.fixture
async def start_server(request: pytest.FixtureRequest) -> AsyncIterator[StartServer]:
    """Start ``serve(handler, "127.0.0.1", 0, **options)``; every server is shut down afterwards."""
    servers: list[WebSocketServer] = []

    async def start(
        handler: Callable[..., Awaitable[Any]] = echo, **options: Any
    ) -> WebSocketServer:
        if "sock" in options:
            server = await serve(handler, **options)
        else:
            server = await serve(handler, "127.0.0.1", 0, **options)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()
    async with asyncio.timeout(5):
        for server in servers:
            await server.wait_closed()
    if request.node.stash.get(CALL_FAILED, False):
        # Collect what the failed test leaked (sockets, tasks) now, so that their warnings and
        # logs are reported against it rather than whichever test runs at the next collection.
        gc.collect()


@pytest.fixture
async def echo_server(start_server: StartServer) -> WebSocketServer:
    return await start_server(echo)


@pytest.fixture
def echo_uri(echo_server: WebSocketServer) -> str:
    return uri_of(echo_server)


@pytest.fixture
async def client() -> AsyncIterator[Connect]:
    """Open client connections with ``connect(uri, **options)``; each is closed afterwards."""
    clients: list[WebSocketClientProtocol] = []

    async def open_client(uri: str, **options: Any) -> WebSocketClientProtocol:
        ws = await connect(uri, **options)
        clients.append(ws)
        return ws

    yield open_client
    async with asyncio.timeout(5):
        for ws in clients:
            ws.close_timeout = min(ws.close_timeout, 1)
            await ws.close()


# --- TLS ------------------------------------------------------------------------------------------


def _self_signed_with_cryptography(cert: Path, key: Path) -> bool:
    try:
        from cryptography import x509  # type: ignore[import-not-found, unused-ignore]
        from cryptography.hazmat.primitives import hashes, serialization  # type: ignore[import-not-found, unused-ignore]
        from cryptography.hazmat.primitives.asymmetric import ec  # type: ignore[import-not-found, unused-ignore]
        from cryptography.x509.oid import NameOID  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        return False
    private_key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(private_key, hashes.SHA256())
    )
    cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key.write_bytes(
        private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return True


def _self_signed_with_openssl(cert: Path, key: Path) -> bool:
    openssl = shutil.which("openssl")
    if openssl is None:
        return False
    subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )
    return True


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TLSFiles:
    """A self-signed certificate for 127.0.0.1, made by ``cryptography`` or else ``openssl``."""
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "cert.pem", directory / "key.pem"
    if not (_self_signed_with_cryptography(cert, key) or _self_signed_with_openssl(cert, key)):
        pytest.fail(
            "cannot make a TLS certificate: neither the cryptography package nor the openssl "
            "CLI is available; the wss:// tests need one of them"
        )
    return TLSFiles(cert, key)
