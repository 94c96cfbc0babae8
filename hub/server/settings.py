"""The hub's settings: one pydantic model, read from ``HUB_*`` environment variables, an
optional config file and the command line (see :mod:`hub.server.cli`).

An invalid value fails at start with a message that names the setting.
"""

from __future__ import annotations

import json
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from hub.broker.retention import Keep, Retention
from hub.broker.topics import validate_pattern
from hub.exceptions import InvalidTopic
from hub.server.auth import Authenticator, Key, check_key
from hub.server.permissions import Permissions

__all__ = ["AnonymousGrant", "AuthKey", "HistoryRule", "Settings"]


def _pattern(value: str) -> str:
    try:
        return validate_pattern(value)
    except InvalidTopic as exc:  # no ValueError: pydantic would let it through unreported
        raise ValueError(str(exc)) from None


class AuthKey(BaseModel):
    """A key that verifies tokens (see :class:`hub.server.auth.Key`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    alg: Literal["HS256", "RS256", "ES256"]
    key: SecretStr = Field(min_length=1)  # never shown in a repr or a log
    kid: str | None = None

    @model_validator(mode="after")
    def _usable(self) -> AuthKey:
        check_key(self.alg, self.key.get_secret_value())
        return self


class AnonymousGrant(BaseModel):
    """Patterns that clients without a token may subscribe to and publish on."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    subscribe: list[Annotated[str, AfterValidator(_pattern)]] = Field(default_factory=list)
    publish: list[Annotated[str, AfterValidator(_pattern)]] = Field(default_factory=list)


class HistoryRule(BaseModel):
    """History for the topics that ``pattern`` matches, instead of the defaults."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    pattern: Annotated[str, AfterValidator(_pattern)]
    size: int = Field(ge=0, le=1_000_000)
    ttl: float = Field(gt=0)


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
    max_connections_per_user: int = Field(
        default=100, ge=1, description="per authenticated user (the token's sub), per node"
    )
    handshake_rate: float = Field(
        default=100.0, gt=0, description="WebSocket handshakes per second per client IP"
    )
    handshake_burst: int = Field(
        default=1000, ge=1, description="handshakes one IP may make at once above the rate"
    )
    outbox_messages: int = Field(default=1000, ge=1, description="queued frames per connection")
    outbox_bytes: int = Field(default=8 * 2**20, ge=1024, description="queued bytes per connection")
    max_pending_publishes: int = Field(
        default=64, ge=1, description="per connection; past it the hub stops reading its frames"
    )
    publish_rate: float = Field(
        default=1000.0, gt=0, description="publishes per second per connection (token bucket)"
    )
    publish_burst: int = Field(
        default=1000, ge=1, description="publishes a connection may send at once above the rate"
    )
    rate_limit_strikes: int = Field(
        default=100, ge=1, description="rate_limited replies within 10 s before closing 4029"
    )
    bad_frame_limit: int = Field(
        default=10, ge=1, description="invalid frames in a row before 1008"
    )

    # Keepalive and shutdown, in seconds.
    ping_interval: float | None = Field(default=20.0, gt=0)
    ping_timeout: float | None = Field(default=20.0, gt=0)
    drain_timeout: float = Field(default=5.0, ge=0, description="to flush queues at shutdown")

    # History and recovery (docs/protocol.md, "History").
    history_size: int = Field(
        default=100, ge=0, le=1_000_000, description="publications kept per topic; 0: no history"
    )
    history_ttl: float = Field(
        default=300.0, gt=0, description="seconds a publication stays in history"
    )
    history_rules: list[HistoryRule] = Field(
        default_factory=list,
        description='per-pattern history, JSON: [{"pattern": "chat.>", "size": 1000, "ttl": 3600}]',
    )
    recovery_limit: int = Field(
        default=1000, ge=1, description="most publications one recovery or history request gives"
    )
    epoch_ttl: float = Field(
        default=7 * 86400.0, gt=0, description="seconds a topic's offsets outlive its last publish"
    )

    # Auth (docs/protocol.md, "Authentication").
    auth: Literal["off", "required", "optional"] = Field(
        default="off", description="off, required (no token: 401) or optional (anonymous)"
    )
    auth_keys: list[AuthKey] = Field(
        default_factory=list,
        description='keys that verify tokens, JSON: [{"alg": "HS256", "key": "secret"}]',
    )
    auth_anonymous: AnonymousGrant = Field(
        default_factory=lambda: AnonymousGrant(),
        description='what clients without a token may do (optional mode), JSON: {"subscribe":'
        ' ["news.>"], "publish": []}',
    )
    allowed_origins: list[str] | None = Field(
        default=None, description="Origin headers accepted from browsers, JSON list; none: any"
    )

    # Presence (docs/protocol.md, "Presence").
    presence_topics: list[Annotated[str, AfterValidator(_pattern)]] = Field(
        default_factory=list,
        description='patterns of the topics with presence, JSON: ["chat.>"]; none: no presence',
    )
    presence_grace: float = Field(
        default=5.0, ge=0, description="seconds a leaving client stays listed: a rejoin replaces it"
    )
    presence_ttl: float = Field(
        default=15.0, gt=0, description="seconds a dead node's clients stay listed (redis)"
    )

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

    @field_validator(
        "history_rules",
        "auth_keys",
        "auth_anonymous",
        "allowed_origins",
        "presence_topics",
        mode="before",
    )
    @classmethod
    def _from_json(cls, value: object) -> object:
        return json.loads(value) if isinstance(value, str) else value

    @field_validator("auth_keys")
    @classmethod
    def _keys_for_auth(cls, value: list[AuthKey], info: ValidationInfo) -> list[AuthKey]:
        mode = info.data.get("auth", "off")
        if mode != "off" and not value:
            raise ValueError(f"auth {mode!r} needs at least one key")
        return value

    def authenticator(self) -> Authenticator:
        """The authenticator that these settings describe."""
        keys = [Key(k.alg, k.key.get_secret_value(), k.kid) for k in self.auth_keys]
        anonymous = Permissions(
            tuple(self.auth_anonymous.subscribe), tuple(self.auth_anonymous.publish)
        )
        return Authenticator(self.auth, keys, anonymous)

    def retention(self) -> Retention:
        """What each topic keeps, for the backend."""
        rules = [(rule.pattern, Keep(rule.size, rule.ttl)) for rule in self.history_rules]
        return Retention(Keep(self.history_size, self.history_ttl), rules)

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value
