"""Typed settings read once from `FLEET_*` environment variables, one small dataclass per concern."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import platformdirs

from fleet.access.limits import Rate
from fleet.errors import SettingsError


def _env(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(f"FLEET_{name}")
    return value if value not in (None, "") else default


def _env_int(name: str, default: int) -> int:
    raw = _env(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        raise SettingsError(f"FLEET_{name}", "an integer", raw) from None


def _env_port(name: str, default: int) -> int:
    port = _env_int(name, default)
    if not 0 <= port <= 65535:
        raise SettingsError(f"FLEET_{name}", "a port number, 0 to 65535", str(port))
    return port


def _env_database_url() -> str | None:
    url = _env("DATABASE_URL")
    if url is None:
        return None
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("postgres", "postgresql"):
        # The value may hold a password: named by its shape, never echoed.
        raise SettingsError("FLEET_DATABASE_URL", "a postgresql://USER:PASSWORD@HOST:PORT/DATABASE URL")
    return url


@dataclass(frozen=True, slots=True)
class DatabaseSettings:
    # None means: run the embedded PostgreSQL in data_dir.
    url: str | None
    data_dir: Path
    # pool_min: connections the device side's pool keeps open (the REST API's keeps 1, fleet.db);
    # pool_max: the REST API's pool (login fleet_app). The device side has its own maximum.
    pool_min: int = 2
    pool_max: int = 10
    # Up to 8 are held by long-lived work (flushers, LISTENs, claims, the leader lock); the rest
    # serve registrations, the reads after them and key lookups.
    system_pool_max: int = 20
    # Password Fleet gives its two logins (fleet_app, fleet_system) when the server wants one;
    # unset with the embedded server, which trusts its Unix socket.
    service_password: str | None = None


def _env_float(name: str, default: float) -> float:
    raw = _env(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"FLEET_{name}", "a number", raw) from None
    if not value >= 0:
        raise SettingsError(f"FLEET_{name}", "0 or more", raw)
    return value


def _env_share(name: str, default: float) -> float:
    share = _env_float(name, default)
    if not 0 < share <= 1:
        raise SettingsError(f"FLEET_{name}", "a share above 0, at most 1", str(share))
    return share


@dataclass(frozen=True, slots=True)
class RateLimitSettings:
    """Token buckets per node: a rate per second (0 turns the limit off) and a burst."""

    key_per_s: float = 100.0
    key_burst: int = 500
    address_per_s: float = 200.0
    address_burst: int = 1000
    # Failed authentications per client address; once spent, the address gets 429 until refilled.
    auth_failures_per_s: float = 1.0
    auth_failures_burst: int = 50


@dataclass(frozen=True, slots=True)
class HttpSettings:
    host: str = "127.0.0.1"
    port: int = 8000
    max_body_bytes: int = 16 * 1024 * 1024
    limits: RateLimitSettings = field(default_factory=RateLimitSettings)


@dataclass(frozen=True, slots=True)
class CoapSettings:
    host: str = "::"
    port: int = 5683
    # CoAP over DTLS (coaps://) beside the plain port, on the same host; 0: none.
    coaps_port: int = 5684
    # The coaps:// URI devices reach this node's DTLS listener at (bootstrap writes it as the
    # server's URI; secure devices download firmware there). Unset: derived from host and port.
    coaps_public_uri: str | None = None
    # The most of each DTLS handshake rate one source (IPv4 address, IPv6 /64) may take, so one
    # host cannot starve the rest; 1 turns it off (a city whose devices share a carrier's NAT).
    coaps_source_share: float = 0.2
    # Commands under way to devices at once, per node (see protocols.lwm2m.dispatcher.IN_FLIGHT).
    in_flight: int = 1024
    # Datagrams per second from one peer (address and port) and its burst; 0 turns it off.
    peer_per_s: float = 50.0
    peer_burst: int = 200
    # The same from one address whatever its ports, so a peer cannot escape by changing ports.
    # Off by default: a carrier's NAT address (or a test bench) may carry thousands of devices.
    address_per_s: float = 0.0
    address_burst: int = 0
    # How long a node's heartbeat may be missing before the other nodes take its devices over
    # (their commands, observations and registrations); heartbeats come at least 3 times in it.
    node_timeout_s: float = 30.0
    # Registration storms: the work after each Register and Update (the /3/0 read, re-observing,
    # the device's commands) starts at most this many times a second on the node (0: unpaced),
    # shared evenly by its coap workers (protocols.lwm2m.pacing).
    registration_followups: float = 500.0
    # The node's coap worker processes sharing its budgets (FLEET_COAP_WORKERS: the supervisor
    # sets it in each; 0 is a node without device edge).
    workers: int = 1

    @property
    def followups_per_worker(self) -> float:
        """This process's share of the node's registration follow-up budget."""
        return self.registration_followups / max(1, self.workers)

    @property
    def peer_rate(self) -> Rate:
        return Rate(self.peer_per_s, self.peer_burst)

    @property
    def address_rate(self) -> Rate:
        return Rate(self.address_per_s, self.address_burst)


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "WARN", "ERROR", "CRITICAL")


@dataclass(frozen=True, slots=True)
class LogSettings:
    level: str = "INFO"
    # "auto" renders for humans on a terminal and JSON otherwise.
    format: str = "auto"


@dataclass(frozen=True, slots=True)
class EventSettings:
    # Days the event log keeps events; a stream resuming from before that is told (SSE `reset`).
    retention_days: int = 7


@dataclass(frozen=True, slots=True)
class FirmwareSettings:
    # Largest image a city may upload (bytes).
    max_image_bytes: int = 64 * 1024 * 1024
    # Where devices download packages from: the scheme, host and port of Fleet's CoAP listener
    # as devices reach it (a load balancer's name, a public address). Unset: the listener's own
    # host and port (`coap://127.0.0.1:5683` when it listens on every address).
    download_base_uri: str | None = None


@dataclass(frozen=True, slots=True)
class WebSettings:
    # The map's background: an XYZ tile URL the city serves or licenses ({z}/{x}/{y});
    # unset, the map draws district outlines and labels on a plain background (no internet).
    tiles_url: str | None = None
    tiles_attribution: str = ""
    # A browser session ends after this long without use (a wall screen polls, so it stays).
    session_idle_hours: float = 12.0


@dataclass(frozen=True, slots=True)
class MetricsSettings:
    """Where this process serves Prometheus's /metrics (fleet.metrics); port 0 serves none.
    Every process has its own port: two on one machine need two ports."""

    host: str = "127.0.0.1"
    port: int = 9464
    # When set, a scrape must send `Authorization: Bearer <token>` (401 otherwise). Not in repr:
    # settings may be logged.
    token: str | None = field(default=None, repr=False)


def parse_credentials_key(raw: str | None) -> bytes | None:
    """FLEET_CREDENTIALS_KEY: 32 bytes as 64 hex characters; unset is None (the value is a
    secret: named by its shape, never echoed)."""
    if raw is None:
        return None
    try:
        key = bytes.fromhex(raw.strip())
    except ValueError:
        key = b""
    if len(key) != 32:
        raise SettingsError("FLEET_CREDENTIALS_KEY", "32 bytes as 64 hex characters (`openssl rand -hex 32`)")
    return key


@dataclass(frozen=True, slots=True)
class SecuritySettings:
    # Encrypts device keys at rest and derives the server's DTLS key (fleet.security.crypto).
    # Unset: Fleet stores no device key and cannot serve coaps. Not in repr: settings may be logged.
    credentials_key: bytes | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class Settings:
    database: DatabaseSettings
    http: HttpSettings = field(default_factory=HttpSettings)
    coap: CoapSettings = field(default_factory=CoapSettings)
    log: LogSettings = field(default_factory=LogSettings)
    events: EventSettings = field(default_factory=EventSettings)
    firmware: FirmwareSettings = field(default_factory=FirmwareSettings)
    # An OSRM-compatible table service for road distances between bins; unset: great-circle
    # distance times each city's road factor (fleet.collection.matrix).
    routing_url: str | None = None
    web: WebSettings = field(default_factory=WebSettings)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    security: SecuritySettings = field(default_factory=SecuritySettings)


def default_data_dir() -> Path:
    return Path(platformdirs.user_data_dir("fleet", appauthor=False))


def load_settings() -> Settings:
    """Read every FLEET_* variable once; callers pass the result down."""
    data_dir = Path(_env("DATA_DIR") or default_data_dir()).expanduser()
    log_format = (_env("LOG_FORMAT", "auto") or "auto").lower()
    if log_format not in ("auto", "json", "console"):
        raise SettingsError("FLEET_LOG_FORMAT", "auto, json or console", _env("LOG_FORMAT"))
    log_level = (_env("LOG_LEVEL", "INFO") or "INFO").upper()
    if log_level not in LOG_LEVELS:
        raise SettingsError("FLEET_LOG_LEVEL", ", ".join(LOG_LEVELS), _env("LOG_LEVEL"))
    in_flight = _env_int("COAP_IN_FLIGHT", 1024)
    limits, coap = RateLimitSettings(), CoapSettings()
    node_timeout_s = _env_float("NODE_TIMEOUT_S", coap.node_timeout_s)
    if node_timeout_s < 1:
        raise SettingsError("FLEET_NODE_TIMEOUT_S", "at least 1 (seconds)", str(node_timeout_s))
    if in_flight < 1:
        raise SettingsError("FLEET_COAP_IN_FLIGHT", "at least 1", str(in_flight))
    settings = Settings(
        database=DatabaseSettings(
            url=_env_database_url(),
            data_dir=data_dir,
            pool_min=_env_int("DB_POOL_MIN", 2),
            pool_max=_env_int("DB_POOL_MAX", 10),
            system_pool_max=_env_int("DB_SYSTEM_POOL_MAX", 20),
            service_password=_env("DATABASE_SERVICE_PASSWORD"),
        ),
        http=HttpSettings(
            host=_env("HTTP_HOST", "127.0.0.1") or "127.0.0.1",
            port=_env_port("HTTP_PORT", 8000),
            max_body_bytes=_env_int("MAX_BODY_BYTES", 16 * 1024 * 1024),
            limits=RateLimitSettings(
                key_per_s=_env_float("RATE_KEY_PER_S", limits.key_per_s),
                key_burst=_env_int("RATE_KEY_BURST", limits.key_burst),
                address_per_s=_env_float("RATE_ADDRESS_PER_S", limits.address_per_s),
                address_burst=_env_int("RATE_ADDRESS_BURST", limits.address_burst),
                auth_failures_per_s=_env_float("AUTH_FAILURES_PER_S", limits.auth_failures_per_s),
                auth_failures_burst=_env_int("AUTH_FAILURES_BURST", limits.auth_failures_burst),
            ),
        ),
        coap=CoapSettings(
            host=_env("COAP_HOST", "::") or "::",
            port=_env_port("COAP_PORT", 5683),
            coaps_port=_env_port("COAPS_PORT", 5684),
            coaps_public_uri=_env("COAPS_PUBLIC_URI"),
            coaps_source_share=_env_share("COAPS_SOURCE_SHARE", coap.coaps_source_share),
            in_flight=in_flight,
            peer_per_s=_env_float("COAP_PEER_PER_S", coap.peer_per_s),
            peer_burst=_env_int("COAP_PEER_BURST", coap.peer_burst),
            address_per_s=_env_float("COAP_ADDRESS_PER_S", coap.address_per_s),
            address_burst=_env_int("COAP_ADDRESS_BURST", coap.address_burst),
            node_timeout_s=node_timeout_s,
            registration_followups=_env_float("REGISTRATION_FOLLOWUPS", coap.registration_followups),
            workers=_env_int("COAP_WORKERS", coap.workers),
        ),
        log=LogSettings(level=log_level, format=log_format),
        events=EventSettings(retention_days=_env_int("EVENTS_RETENTION_DAYS", 7)),
        firmware=FirmwareSettings(
            max_image_bytes=_env_int("FIRMWARE_MAX_BYTES", 64 * 1024 * 1024),
            download_base_uri=_env("FIRMWARE_DOWNLOAD_URI"),
        ),
        routing_url=_env("ROUTING_URL"),
        web=WebSettings(tiles_url=_env("MAP_TILES_URL"), tiles_attribution=_env("MAP_ATTRIBUTION", "") or "",
                        session_idle_hours=_env_float("SESSION_IDLE_HOURS", 12.0)),
        metrics=MetricsSettings(host=_env("METRICS_HOST", "127.0.0.1") or "127.0.0.1",
                                port=_env_port("METRICS_PORT", 9464), token=_env("METRICS_TOKEN")),
        security=SecuritySettings(credentials_key=parse_credentials_key(_env("CREDENTIALS_KEY"))),
    )
    database = settings.database
    # asyncpg refuses these only as the pools open, with a traceback.
    if database.pool_min < 0:
        raise SettingsError("FLEET_DB_POOL_MIN", "0 or more", str(database.pool_min))
    if database.pool_max < 1:
        raise SettingsError("FLEET_DB_POOL_MAX", "at least 1", str(database.pool_max))
    if database.system_pool_max < max(1, database.pool_min):
        raise SettingsError("FLEET_DB_SYSTEM_POOL_MAX", f"at least 1 and FLEET_DB_POOL_MIN ({database.pool_min})",
                            str(database.system_pool_max))
    if settings.coap.workers < 0:
        raise SettingsError("FLEET_COAP_WORKERS", "0 or more", str(settings.coap.workers))
    if settings.http.max_body_bytes < 1:
        raise SettingsError("FLEET_MAX_BODY_BYTES", "at least 1", str(settings.http.max_body_bytes))
    if settings.events.retention_days < 1:
        raise SettingsError("FLEET_EVENTS_RETENTION_DAYS", "at least 1", str(settings.events.retention_days))
    if settings.firmware.max_image_bytes < 1:
        raise SettingsError("FLEET_FIRMWARE_MAX_BYTES", "at least 1", str(settings.firmware.max_image_bytes))
    base = settings.firmware.download_base_uri
    if base is not None and not base.startswith(("coap://", "coaps://")):
        raise SettingsError("FLEET_FIRMWARE_DOWNLOAD_URI", "a coap:// or coaps:// URI", base)
    public = settings.coap.coaps_public_uri
    if public is not None and not public.startswith("coaps://"):
        raise SettingsError("FLEET_COAPS_PUBLIC_URI", "a coaps:// URI", public)
    if settings.routing_url is not None and not settings.routing_url.startswith(("http://", "https://")):
        raise SettingsError("FLEET_ROUTING_URL", "an http:// or https:// URL", settings.routing_url)
    tiles = settings.web.tiles_url
    if tiles is not None and not (tiles.startswith(("http://", "https://")) and "{z}" in tiles):
        raise SettingsError("FLEET_MAP_TILES_URL", "an http(s) URL with {z}, {x} and {y}", tiles)
    if settings.web.session_idle_hours <= 0:
        raise SettingsError("FLEET_SESSION_IDLE_HOURS", "more than 0", str(settings.web.session_idle_hours))
    limits = settings.http.limits
    for name, per_s, burst in (("RATE_KEY", limits.key_per_s, limits.key_burst),
                               ("RATE_ADDRESS", limits.address_per_s, limits.address_burst),
                               ("AUTH_FAILURES", limits.auth_failures_per_s, limits.auth_failures_burst),
                               ("COAP_PEER", settings.coap.peer_per_s, settings.coap.peer_burst),
                               ("COAP_ADDRESS", settings.coap.address_per_s, settings.coap.address_burst)):
        if per_s > 0 and burst < 1:
            raise SettingsError(f"FLEET_{name}_BURST", f"at least 1 while FLEET_{name}_PER_S is set", str(burst))
    return settings
