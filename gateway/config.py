"""One frozen settings object, built from the environment and the command line in ``app``.

Nothing below ``app`` reads the environment: every layer receives the values it needs.
Every variable is ``GATEWAY_<FIELD>`` upper-cased (``GATEWAY_WS_PORT=9000``).
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from typing import Any

__all__ = ["Limits", "Settings", "SettingsError"]


class SettingsError(ValueError):
    """A configuration value is missing or malformed; the message names the variable."""


@dataclasses.dataclass(frozen=True, slots=True)
class Limits:
    """Per-connection and per-message limits. Sent to clients in the ``hello`` frame."""

    max_message_bytes: int = 64 * 1024  # one decoded WebSocket message
    max_fragments: int = 64  # continuation frames per message
    max_body_bytes: int = 16 * 1024  # UTF-8 bytes of a message body
    max_cmid_len: int = 64
    max_subscriptions: int = 500
    rate_per_second: float = 50.0  # sustained client frames per second
    rate_burst: int = 100  # bucket size
    rate_strikes: int = 20  # frames refused for rate before the connection is closed
    error_strikes: int = 50  # protocol errors tolerated before the connection is closed
    outbox_max_bytes: int = 1024 * 1024  # queued outgoing bytes before shedding
    replay_max: int = 10_000  # messages replayed on one subscribe before "truncated"
    max_presence_watch: int = 200  # users one connection may follow with presence_watch


@dataclasses.dataclass(frozen=True, slots=True)
class Settings:
    host: str = "127.0.0.1"
    ws_port: int = 8000
    http_port: int = 8001
    data_dir: str = "./data"
    # "interval": an ack survives a crash of the process; fsync within sqlite_fsync_interval
    # (Redis appendfsync-everysec contract). "full": fsync before every ack (slower).
    sqlite_durability: str = "interval"
    sqlite_fsync_interval: float = 1.0
    # where every store lives: "sqlite" (the files in data_dir, one node or one host) or
    # "dynamodb" (tables <dynamodb_prefix>-*, created by deployment; shared by every node)
    store: str = "sqlite"
    dynamodb_prefix: str = "gateway"  # table names: <prefix>-messages, <prefix>-domain, ...
    # Redis Streams bus (several nodes as one); empty -> the in-process bus
    redis_url: str = ""  # redis://host:port of one server, or of any node of a cluster
    redis_prefix: str = "gw"  # namespace of every key this deployment writes
    redis_timeout: float = 5.0  # connect/command timeout; a slower Redis counts as down
    redis_events_maxlen: int = 100_000  # integration event stream length; 0 turns it off
    idempotency_window: float = 3600.0  # Redis bus: a cmid retried within this is one message
    # Redis bus: the write-behind gathers records this long between calls to the store
    # (bigger batches: fewer store requests and less CPU per message; the store and the
    # integration events lag the live messages by about this much)
    persist_interval: float = 0.2
    # auth
    jwt_secret: str = ""  # HS256 secret; empty -> a dev secret kept in data_dir
    jwks_url: str = ""  # RS256 via JWKS (Cognito shape) when set
    jwt_issuer: str = ""
    jwt_audience: str = ""
    jwks_cache_seconds: float = 300.0
    jwt_leeway: float = 30.0  # clock skew allowed on exp/nbf; a session ends at exp + leeway
    # signs listing cursors; empty -> derived from the HS256 secret (the same on every
    # node that shares it). Set it when several nodes verify with JWKS only.
    cursor_key: str = ""
    allowed_origins: tuple[str, ...] = (
        "http://localhost",
        "http://localhost:*",
        "http://127.0.0.1:*",
        "https://localhost:*",
    )
    # timing
    heartbeat_interval: float = 25.0  # server pings; NLB idle timeout is 350 s
    idle_timeout: float = 75.0  # nothing received for this long -> close 4103
    auth_timeout: float = 10.0  # no successful auth within this -> close 4002
    drain_timeout: float = 10.0  # graceful shutdown budget
    channel_idle_timeout: float = 60.0  # channel actor with no subscribers stops
    presence_ttl: float = 30.0  # a dead node's devices stop counting after this long
    revocation_ttl: float = 86400.0  # a revocation bars the user this long (> token life)
    hot_window: int = 1000  # messages kept in memory per channel actor
    max_connections: int = 50_000
    log_level: str = "INFO"
    # uploaded files: bytes in <data_dir>/files (served by the REST app), or in S3
    max_file_bytes: int = 25 * 1024 * 1024  # one file (S3 takes up to 5 GiB in one PUT)
    file_url_ttl: float = 300.0  # seconds an upload or download URL is valid
    s3_bucket: str = ""  # empty -> the local folder
    aws_region: str = "us-east-1"  # of the DynamoDB tables and the S3 bucket
    aws_endpoint_url: str = ""  # empty -> AWS itself (set for a local AWS such as moto)
    limits: Limits = dataclasses.field(default_factory=Limits)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Build settings from ``GATEWAY_*`` variables, then apply explicit overrides."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        limit_values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.name == "limits":
                continue
            raw = env.get(f"GATEWAY_{f.name.upper()}")
            if raw is not None:
                values[f.name] = _parse(f"GATEWAY_{f.name.upper()}", f.type, raw)
        for f in dataclasses.fields(Limits):
            raw = env.get(f"GATEWAY_{f.name.upper()}")
            if raw is not None:
                limit_values[f.name] = _parse(f"GATEWAY_{f.name.upper()}", f.type, raw)
        values.update({k: v for k, v in overrides.items() if v is not None})
        if limit_values:
            values["limits"] = dataclasses.replace(values.get("limits", Limits()), **limit_values)
        settings = cls(**values)
        settings.validate()
        return settings

    def validate(self) -> None:
        if not 0 <= self.ws_port < 65536 or not 0 <= self.http_port < 65536:
            raise SettingsError("GATEWAY_WS_PORT / GATEWAY_HTTP_PORT must be 0..65535")
        if self.heartbeat_interval <= 0 or self.idle_timeout <= self.heartbeat_interval:
            raise SettingsError(
                "GATEWAY_IDLE_TIMEOUT must be greater than GATEWAY_HEARTBEAT_INTERVAL (> 0)"
            )
        if self.jwt_secret and len(self.jwt_secret.encode()) < 32:
            raise SettingsError("GATEWAY_JWT_SECRET must be at least 32 bytes (RFC 7518 3.2)")
        if self.cursor_key and len(self.cursor_key.encode()) < 32:
            raise SettingsError("GATEWAY_CURSOR_KEY must be at least 32 bytes")
        if self.redis_url and self.jwks_url and not (self.cursor_key or self.jwt_secret):
            raise SettingsError(
                "GATEWAY_CURSOR_KEY must be set when nodes share Redis and verify with JWKS "
                "(every node must sign listing cursors with the same key)"
            )
        if self.jwt_leeway < 0 or self.jwt_leeway > 300:
            raise SettingsError("GATEWAY_JWT_LEEWAY must be between 0 and 300 seconds")
        if self.sqlite_durability not in ("interval", "full"):
            raise SettingsError("GATEWAY_SQLITE_DURABILITY must be 'interval' or 'full'")
        if not 0 < self.sqlite_fsync_interval <= 60:
            raise SettingsError("GATEWAY_SQLITE_FSYNC_INTERVAL must be in (0, 60] seconds")
        if self.store not in ("sqlite", "dynamodb"):
            raise SettingsError(f"GATEWAY_STORE must be 'sqlite' or 'dynamodb', not {self.store!r}")
        if not re.fullmatch(r"[A-Za-z0-9_.-]{1,200}", self.dynamodb_prefix):
            raise SettingsError(
                f"GATEWAY_DYNAMODB_PREFIX must be 1-200 of A-Z a-z 0-9 _ . - "
                f"(DynamoDB table names), not {self.dynamodb_prefix!r}"
            )
        if self.store == "dynamodb" and self.jwks_url and not (self.cursor_key or self.jwt_secret):
            raise SettingsError(
                "GATEWAY_CURSOR_KEY must be set with GATEWAY_STORE=dynamodb and JWKS only "
                "(every node must sign listing cursors of the shared store with the same key)"
            )
        if self.hot_window < 1:
            raise SettingsError("GATEWAY_HOT_WINDOW must be at least 1")
        if self.redis_url and not self.redis_url.startswith("redis://"):
            raise SettingsError("GATEWAY_REDIS_URL must look like redis://host:port")
        if not re.fullmatch(r"[A-Za-z0-9_.-]{1,32}", self.redis_prefix):
            raise SettingsError("GATEWAY_REDIS_PREFIX must be 1-32 of A-Z a-z 0-9 _ . -")
        if not 0 < self.redis_timeout <= 60:
            raise SettingsError("GATEWAY_REDIS_TIMEOUT must be in (0, 60] seconds")
        if not 1 <= self.revocation_ttl <= 366 * 86400:
            raise SettingsError("GATEWAY_REVOCATION_TTL must be in [1, 31622400] seconds")
        if not 3 <= self.presence_ttl <= 3600:
            raise SettingsError("GATEWAY_PRESENCE_TTL must be in [3, 3600] seconds")
        if not 60 <= self.idempotency_window <= 7 * 86400:
            raise SettingsError("GATEWAY_IDEMPOTENCY_WINDOW must be in [60, 604800] seconds")
        if not 0.01 <= self.persist_interval <= 10:
            raise SettingsError("GATEWAY_PERSIST_INTERVAL must be in [0.01, 10] seconds")
        if self.redis_events_maxlen < 0:
            raise SettingsError("GATEWAY_REDIS_EVENTS_MAXLEN must be 0 (off) or more")
        if not 1 <= self.max_file_bytes <= 5 * 1024**3:
            raise SettingsError("GATEWAY_MAX_FILE_BYTES must be in [1, 5368709120]")
        if not 10 <= self.file_url_ttl <= 86400:
            raise SettingsError("GATEWAY_FILE_URL_TTL must be in [10, 86400] seconds")
        if self.s3_bucket and not re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", self.s3_bucket):
            raise SettingsError("GATEWAY_S3_BUCKET must be an S3 bucket name (3-63 of a-z 0-9 . -)")
        if not re.fullmatch(r"[a-z]{2}(-[a-z]+)+-[0-9]", self.aws_region):
            raise SettingsError("GATEWAY_AWS_REGION must be an AWS region such as us-east-1")
        if self.aws_endpoint_url and not re.match(r"https?://", self.aws_endpoint_url):
            raise SettingsError("GATEWAY_AWS_ENDPOINT_URL must be an http(s):// URL")


def _parse(name: str, type_: Any, raw: str) -> Any:
    t = str(type_)
    try:
        if t == "int":
            return int(raw)
        if t == "float":
            return float(raw)
        if t.startswith("tuple"):
            return tuple(p.strip() for p in raw.split(",") if p.strip())
    except ValueError as exc:
        raise SettingsError(f"{name}={raw!r} is not a valid {t}") from exc
    return raw
