"""The LwM2M server's CoAP face: Register, Update, De-register and Send (and /bs), on one aiocoap site.

Thin on purpose: parse the CoAP request, call a Fleet service, render the answer. The device
sessions (which address speaks for which device) are cached here (`protocols.lwm2m.sessions`)
because every Send needs them; the listener keeps that cache true to the database.
"""

from __future__ import annotations

import asyncio
import random
from contextvars import ContextVar
from datetime import UTC, datetime
from urllib.parse import unquote

import structlog
from aiocoap import CHANGED, CREATED, DELETED, Message, error, interfaces
from aiocoap.numbers.codes import Code

from fleet.db.availability import database_away
from fleet.errors import FleetError
from fleet.firmware.delivery import Downloads, without_token
from fleet.metrics import LWM2M_SENDS, coap_answered
from fleet.objectmodel import ResourcePath
from fleet.registrations.models import (DEFAULT_LIFETIME_S, AuthenticatedDevice, Registration, RegisterRequest,
                                        UpdateRequest)
from fleet.registrations.service import RegistrationRefused, RegistrationService, UnknownEndpoint
from fleet.telemetry.models import PointRecord, split_value
from fleet.telemetry.service import TelemetryWriter
from protocols.coap.problems import to_coap_error
from protocols.lwm2m import content, linkformat, packages
from protocols.lwm2m.errors import CodecError
from protocols.lwm2m.sessions import Peer, Session, SessionCache
from protocols.lwm2m.values import check_text

log = structlog.get_logger("fleet.lwm2m")

MAX_PAYLOAD_BYTES = 64 * 1024
BACKOFF_S = 10
# Registers and Updates waiting for their commit at once, per listener. Up to it a device waits
# (an empty ACK after a second, then its 2.01 as a separate response): a few KB each, where a
# refusal costs a request again later and delays the device by its Max-Age (with 2,048, a storm
# of 5,000 on the bench machine was refused 3,191 times). Beyond it the
# device is answered 5.03 with a Max-Age of half to all the time the ones under way take to
# commit (REGISTER_BACKOFF_S to REGISTER_BACKOFF_MAX_S), spread so that the refused come back
# while the queue drains, not together.
MAX_REGISTERING = 8192
REGISTER_BACKOFF_S = 5
REGISTER_BACKOFF_MAX_S = 60


class ServiceUnavailable(error.ServiceUnavailable):
    """5.03 telling the device how long to wait (Max-Age), with a diagnostic."""

    def __init__(self, retry_after_s: int, message: str = "busy storing data; retry later") -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s

    def to_message(self) -> Message:
        message = super().to_message()
        message.opt.max_age = self.retry_after_s
        return message
LINK_FORMAT = 40


def _logged_path(request: Message) -> str:
    """The request's path for a log line, a download token left out (it opens a package)."""
    path = request.opt.uri_path
    return "fw/<token>" if packages.is_download(path) else "/".join(path)


def peer_of(request: Message) -> Peer:
    """(host, port, secure): `secure` when the request came through the coaps listener's DTLS
    session (protocols.coap.secure), whose remotes say so by their scheme."""
    host, port = request.remote.sockaddr[0], request.remote.sockaddr[1]
    # udp6 sockets see IPv4 peers as IPv4-mapped IPv6 addresses.
    return (host[7:] if host.startswith("::ffff:") else host), port, request.remote.scheme == "coaps"


def authenticated_device(request: Message) -> AuthenticatedDevice | None:
    """Who the DTLS handshake proved the peer to be (None over plain coap); 4.03 for a coaps
    request whose session carries no device credential (a bug of the listener, not the peer's)."""
    if request.remote.scheme != "coaps":
        return None
    claims = getattr(request.remote, "authenticated_claims", None) or ()
    credential = getattr(claims[0], "credential", None) if claims else None
    if credential is None:
        raise error.Forbidden("the DTLS session carries no device credential")
    return AuthenticatedDevice(credential.device_id, credential.purpose, credential.credential_id, credential.mode,
                               credential)


def queries(request: Message) -> dict[str, str]:
    """Uri-Query parameters; CodecError (4.00) for one PostgreSQL could not store (a NUL...)."""
    params: dict[str, str] = {}
    for item in request.opt.uri_query:
        key, sep, value = item.partition("=")
        if key in params:
            raise CodecError(f"query parameter {key!r} given twice")
        params[check_text(key, "query parameter name")] = check_text(unquote(value), key) if sep else ""
    return params


def _int_param(params: dict[str, str], name: str) -> int | None:
    if name not in params:
        return None
    raw = params[name]
    if not raw.isdigit() or len(raw) > 10:
        raise CodecError(f"{name} must be a positive integer")
    return int(raw)


class LwM2MServer(interfaces.Resource):
    """Root resource of the CoAP listener: routes /rd, /rd/{id}, /dp and /fw/{token}."""

    def __init__(self, registrations: RegistrationService, writer: TelemetryWriter,
                 on_registered=None, downloads: Downloads | None = None,
                 max_registering: int = MAX_REGISTERING) -> None:
        self.registrations = registrations
        self.writer = writer
        # Firmware packages by token (protocols.lwm2m.packages); None: this listener serves none.
        self.downloads = downloads
        # The bootstrap server (protocols.lwm2m.bootstrap) answering POST /bs; None: 4.04.
        self.bootstrap = None
        # Awaited with the pending credential a device first registers with over coaps: makes it
        # active and retires the one it replaces (the listener wires fleet.security's).
        self.activate = None
        # The device whose credential the DTLS session of a secure peer proved (the listener
        # wires the coaps listener's): a Send is that device's only, even where a NAT handed
        # a registered device's address and port on to another device.
        self.secure_device_of = None
        self.sessions = SessionCache()
        # Called with (registration, session, update=bool) once a Register or Update committed,
        # before it is answered: queues the /3/0 read and the command wake-up that follow
        # (protocols.lwm2m.pacing), and returns at once. Kept as a hook so this module stays
        # about the CoAP exchange itself.
        self.on_registered = on_registered
        self.max_registering = max_registering
        self._registering = 0  # Registers and Updates waiting for their commit
        self.refused_registering = 0  # ... and those answered 5.03 for it
        self._commits = _Throughput()  # of Registers and Updates, for the Max-Age of a refusal
        self.draining = False  # stopping: new requests get 5.03, those under way finish
        self.refused_draining = 0  # requests refused so, logged as one line on closing
        self._rendering = 0

    async def needs_blockwise_assembly(self, request: Message) -> bool:
        # A package is served block by block from the chunk cache, never rendered whole.
        return not (self.downloads is not None and packages.is_download(request.opt.uri_path))

    async def render(self, request: Message) -> Message:
        try:
            response = await self._render(request)
        except error.RenderableError as exc:
            coap_answered(request.code, getattr(exc, "code", Code.INTERNAL_SERVER_ERROR))
            raise
        except Exception:
            coap_answered(request.code, Code.INTERNAL_SERVER_ERROR)
            raise
        coap_answered(request.code, response.code)
        return response

    async def _render(self, request: Message) -> Message:
        if self.draining:
            self.refused_draining += 1
            raise ServiceUnavailable(BACKOFF_S)
        self._rendering += 1
        try:
            return await self._route(request)
        except error.RenderableError:
            raise
        except Exception as exc:
            if database_away(exc):
                # Logged once per change by the health registry, not once per request.
                self.writer.health.database_lost(exc)
                raise ServiceUnavailable(BACKOFF_S, "database unavailable; retry later") from None
            if not isinstance(exc, FleetError | CodecError):
                log.exception("LwM2M request failed", path=_logged_path(request))
                raise
            if isinstance(exc, UnknownEndpoint | RegistrationRefused):
                log.warning("registration refused", reason=exc.detail, peer=peer_of(request)[0])
            else:
                log.info("LwM2M request refused", path=_logged_path(request), error=str(exc))
            raise to_coap_error(exc) from None
        finally:
            self._rendering -= 1

    async def _route(self, request: Message) -> Message:
        path = request.opt.uri_path
        if len(request.payload) > MAX_PAYLOAD_BYTES:
            raise error.RequestEntityTooLarge(f"payload above {MAX_PAYLOAD_BYTES} bytes")
        if path == ("dp",):
            self._require(request, Code.POST)
            return await self._send(request)
        if self.downloads is not None and packages.is_download(path):
            return await packages.render_download(self.downloads, request)
        if path == ("bs",) and self.bootstrap is not None:
            return await self.bootstrap.render(request)
        if path and path[0] == "rd" and len(path) <= 2:
            with self.sessions.reading() as since:
                token = _read_since.set(since)
                try:
                    return await self._registration_interface(request, path)
                finally:
                    _read_since.reset(token)
        raise error.NotFound("no such resource: use /rd or /dp")

    async def _registration_interface(self, request: Message, path: tuple[str, ...]) -> Message:
        if len(path) > 1 and request.code == Code.DELETE:
            return await self._deregister(request, path[1])
        self._require(request, Code.POST)
        if self._registering >= self.max_registering:
            # A storm beyond what the database commits: answered, never left waiting unbounded.
            self.refused_registering += 1
            raise ServiceUnavailable(self._register_backoff_s(), "too many registrations under way; retry later")
        self._registering += 1
        try:
            return await (self._register(request) if len(path) == 1 else self._update(request, path[1]))
        finally:
            self._registering -= 1
            self._commits.tick()

    def _register_backoff_s(self) -> int:
        """Half to all the time the registrations under way take to commit, at the recent rate."""
        per_s = self._commits.per_s
        wait_s = self._registering / per_s if per_s > 0 else REGISTER_BACKOFF_S
        return min(REGISTER_BACKOFF_MAX_S, max(REGISTER_BACKOFF_S, round(wait_s * random.uniform(0.5, 1.0))))

    @staticmethod
    def _require(request: Message, code: Code) -> None:
        if request.code != code:
            raise error.MethodNotAllowed(f"{request.code} not allowed here")

    # -- registration interface ------------------------------------------------------------

    async def _register(self, request: Message) -> Message:
        params = queries(request)
        endpoint = params.get("ep")
        if not endpoint:
            raise CodecError("ep (endpoint name) is required")
        if request.opt.content_format not in (None, LINK_FORMAT):
            raise error.UnsupportedContentFormat("registration payload must be link-format (40)")
        links = bytes(request.payload)
        linkformat.parse(links)  # validates; raises CodecError with a diagnostic
        address, port, secure = peer_of(request)
        registration = await self.registrations.register(RegisterRequest(
            endpoint=endpoint, address=address, port=port,
            lifetime_s=_int_param(params, "lt") or DEFAULT_LIFETIME_S,
            binding=params.get("b", "U"), lwm2m_version=params.get("lwm2m", "1.0"),
            object_links=links.decode("utf-8", "replace"), sms_number=params.get("sms"),
            secure=secure, authenticated=(authenticated := authenticated_device(request))))
        if (authenticated is not None and self.activate is not None
                and getattr(authenticated.credential, "state", None) == "pending"):
            # The device's first Register with the key a bootstrap gave it: from now on that key
            # is the one, and the key it replaces (and its DTLS sessions) stop working.
            await self.activate(authenticated.credential)
        self._follow_up(registration, self._remember(registration), update=False)
        return Message(code=CREATED, location_path=("rd", registration.id))

    async def _update(self, request: Message, registration_id: str) -> Message:
        params = queries(request)
        links = bytes(request.payload) if request.payload else None
        if links is not None:
            linkformat.parse(links)
        address, port, secure = peer_of(request)
        registration = await self.registrations.update(UpdateRequest(
            registration_id=registration_id, address=address, port=port, secure=secure,
            authenticated=authenticated_device(request),
            lifetime_s=_int_param(params, "lt"), binding=params.get("b"),
            object_links=links.decode("utf-8", "replace") if links is not None else None,
            sms_number=params.get("sms")))
        self._follow_up(registration, self._remember(registration), update=True)
        return Message(code=CHANGED)

    async def _deregister(self, request: Message, registration_id: str) -> Message:
        authenticated = authenticated_device(request)
        registration = await self.registrations.deregister(
            registration_id, secure=peer_of(request)[2],
            device_id=authenticated.device_id if authenticated is not None else None)
        self.sessions.forget_device(registration.device_id)
        return Message(code=DELETED)

    # -- information reporting -------------------------------------------------------------

    async def _send(self, request: Message) -> Message:
        LWM2M_SENDS.inc()
        if not self.writer.health.database_ok:
            raise ServiceUnavailable(BACKOFF_S, "database unavailable; retry later")
        if self.writer.backed_up:
            # Shedding load beats a congestion collapse: a quick 5.03 with Max-Age makes the
            # device retry later, where waiting would turn every answer into empty ACK plus
            # separate response and retransmissions.
            raise ServiceUnavailable(BACKOFF_S)
        session = await self.session_for(peer_of(request))
        if session is None:
            raise error.Forbidden("not registered: Register before Send")
        authenticated = authenticated_device(request)
        if authenticated is not None and authenticated.device_id != session.device_id:
            # Another device's DTLS session from the address a registered one had (a NAT's port
            # handed on): it registers first.
            raise error.Forbidden("not registered: Register before Send")
        if request.opt.content_format not in content.SEND_FORMATS:
            raise error.UnsupportedContentFormat("Send takes SenML JSON (110) or SenML CBOR (112)")
        now = datetime.now(UTC)
        readings = content.decode(request.opt.content_format, bytes(request.payload), _ROOT, now)
        await self.store(session, readings, now)
        return Message(code=CHANGED)

    def fast_post(self, path: tuple[bytes, ...], content_format: int | None, payload: bytes,
                  peer: Peer) -> asyncio.Future[None] | None:
        """The common Send, taken straight from the transport (protocols.coap.fastpath).

        Returns a future that resolves once the points are committed; the transport answers
        2.04 only then. None declines, and the request takes the full path through render(),
        which answers every case this one leaves out (unknown peer, bad payload, ...).
        """
        if (path != _SEND_PATH or content_format not in content.SEND_FORMATS
                or len(payload) > MAX_PAYLOAD_BYTES or self.writer.backed_up or self.draining):
            return None
        session = self.sessions.get(peer)
        if session is None:
            return None  # render() asks the database, or answers 4.03
        if peer[2] and self.secure_device_of is not None and self.secure_device_of(peer) != session.device_id:
            return None  # another device's DTLS session from that address: render() answers 4.03
        now = datetime.now(UTC)
        try:
            readings = content.decode(content_format, payload, _ROOT, now)
        except CodecError:
            return None  # render() decodes it again and answers 4.00 with the diagnostic
        LWM2M_SENDS.inc()
        return self.writer.submit(_records(session, readings, now))

    def fast_get(self, path: tuple[bytes, ...], block2: bytes | None, size2_asked: bool):
        """A block of a firmware package, taken straight from the transport: (encoded options,
        payload) of the 2.05 from memory, a callable starting the lookup when it is not in
        memory (protocols.lwm2m.packages.fast_download), or None and render() answers."""
        if self.downloads is None or self.draining:
            return None
        return packages.fast_download(self.downloads, path, block2, size2_asked)

    async def store(self, session: Session, readings, now: datetime) -> None:
        """Commit readings of one device; returns only once they are durable."""
        await self.writer.write(_records(session, readings, now))

    async def session_for(self, peer: Peer) -> Session | None:
        session = self.sessions.get(peer)
        if session is None:
            # Registered through another process or node, before a restart, or not cached: the
            # database knows.
            with self.sessions.reading() as since:
                registration = await self.registrations.at_address(*peer)
                if registration is not None:
                    session = self.sessions.remember(registration, since=since)
        return session

    def _remember(self, registration: Registration) -> Session:
        """Cache the session a Register or Update just committed, unless a later change of the
        device committed elsewhere already arrived (a decommission, another Register)."""
        return self.sessions.remember(registration, since=_read_since.get())

    async def drain(self, grace_s: float) -> bool:
        """Stop taking requests and let those under way finish, for at most `grace_s`.

        From now on every request gets 5.03 with Max-Age (the device comes back later, to this
        node once it is up again or to another), while each one already taken is committed and
        answered, so that closing the socket afterwards loses no acknowledged data and leaves
        no committed data unacknowledged (which the device would send again). True if all
        finished in time.
        """
        self.draining = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace_s
        while self._rendering or not self.writer.idle:
            if loop.time() >= deadline:
                log.warning("stopping with CoAP requests unfinished", requests=self._rendering,
                            points=self.writer.waiting_points)
                return False
            await asyncio.sleep(0.01)
        # The last answers go out in callbacks and in the next steps of aiocoap's tasks.
        await asyncio.sleep(0.05)
        return True

    async def close(self) -> None:
        """Say, in one line each, what was refused for stopping or for a registration storm."""
        if self.refused_draining:
            # One line for them all: a busy node refuses dozens while it stops.
            log.info("CoAP requests refused while stopping (5.03, the devices retry later)",
                     count=self.refused_draining)
        if self.refused_registering:
            log.info("registrations refused while too many were under way (5.03, the devices retry later)",
                     count=self.refused_registering)

    def _follow_up(self, registration: Registration, session: Session, *, update: bool) -> None:
        if self.on_registered is None or self.draining:
            # A registration answered while stopping: its /3/0 read and command wake-up happen
            # at its next Register or Update, on whichever node is up.
            return
        self.on_registered(registration, session, update=update)


class _Throughput:
    """Events a second, as last measured over a second or more: cheap enough for every Register."""

    def __init__(self) -> None:
        self.per_s = 0.0
        self._count = 0
        self._since: float | None = None

    def tick(self) -> None:
        now = asyncio.get_running_loop().time()
        if self._since is None:
            self._since = now
        self._count += 1
        if now - self._since >= 1.0:
            self.per_s = self._count / (now - self._since)
            self._count, self._since = 0, now


# Which change the registration interface request under way has seen (SessionCache.reading).
_read_since: ContextVar[int | None] = ContextVar("_read_since", default=None)
_SEND_PATH = (b"dp",)
_ROOT = ResourcePath(0)


def _records(session: Session, readings, now: datetime) -> list[PointRecord]:
    tenant_id, device_id = session.tenant_id, session.device_id
    path_text = _path_text
    records = []
    for path, time, value in readings:
        # Numbers are nearly all a city reports; everything else takes split_value's checks.
        kind = type(value)
        if kind is float:
            records.append((tenant_id, device_id, time or now, path_text(path), value, None, None))
        elif kind is int:
            records.append((tenant_id, device_id, time or now, path_text(path), float(value), None, None))
        else:
            text = path_text(path)
            records.append((tenant_id, device_id, time or now, text, *split_value(without_token(text, value))))
    return records


_PATH_TEXT: dict[ResourcePath, str] = {}


def _path_text(path: ResourcePath) -> str:
    text = _PATH_TEXT.get(path)
    if text is None:
        text = str(path)
        if len(_PATH_TEXT) < 65_536:
            _PATH_TEXT[path] = text
    return text
