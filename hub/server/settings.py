"""The hub's settings: one pydantic model, read from ``HUB_*`` environment variables, an
optional config file and the command line (see :mod:`hub.server.cli`).

An invalid value fails at start with a message that names the setting.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["Settings"]


class Settings(BaseSettings):
    """Every setting has a default that protects a small server."""

    model_config = SettingsConfigDict(env_prefix="HUB_", extra="forbid", validate_default=True)

    host: str = "127.0.0.1"
    port: int = Field(default=8765, ge=0, le=65535)
    backend: str = "memory://"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    node_id: str | None = None
    loop: Literal["asyncio", "uvloop"] = Field(
        default="asyncio", description="event loop; uvloop needs the 'uvloop' extra"
    )

    # Limits (docs/protocol.md states the same defaults).
    max_message_size: int = Field(
        default=2**20, ge=1024, description="bytes; larger frames close 1009"
    )
    max_subscriptions: int = Field(default=1000, ge=1, description="per connection")
    max_connections: int = Field(default=10_000, ge=1, description="per node")
    outbox_messages: int = Field(default=1000, ge=1, description="queued frames per connection")
    outbox_bytes: int = Field(default=8 * 2**20, ge=1024, description="queued bytes per connection")
    max_pending_publishes: int = Field(
        default=64, ge=1, description="per connection; past it the hub stops reading its frames"
    )
    bad_frame_limit: int = Field(
        default=10, ge=1, description="invalid frames in a row before 1008"
    )

    # Keepalive and shutdown, in seconds.
    ping_interval: float | None = Field(default=20.0, gt=0)
    ping_timeout: float | None = Field(default=20.0, gt=0)
    drain_timeout: float = Field(default=5.0, ge=0, description="to flush queues at shutdown")

    # The Redis backend (docs/deployment.md), in seconds.
    redis_prefix: str = Field(
        default="hub", min_length=1, pattern=r"^[A-Za-z0-9_:-]+$", description="key prefix"
    )
    redis_timeout: float = Field(
        default=2.0, gt=0, description="per command; a publish fails with unavailable after it"
    )
    redis_backoff_cap: float = Field(
        default=2.0, ge=0.05, description="longest reconnect delay (the first is up to 0.05)"
    )

    @field_validator("backend")
    @classmethod
    def _known_backend(cls, value: str) -> str:
        if value == "memory://" or value.startswith(("redis://", "rediss://", "unix://")):
            return value
        raise ValueError("must be memory:// or a Redis URL (redis://, rediss://, unix://)")

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value
