"""`fleet doctor`: checks a deployment and prints one line per check, with what to do when not ok."""

from __future__ import annotations

import asyncio
import secrets
import socket
from dataclasses import replace

import httpx

from api.runtime import resolve_dsn
from fleet.db.doctor import Check, Status, check_credentials, database_checks
from fleet.db.embedded import NO_EMBEDDED_FIX, has_embedded
from fleet.db.reach import DatabaseUnreachable, connect
from fleet.settings import CoapSettings, HttpSettings, SecuritySettings, Settings

# CoAP (RFC 7252 §4.3): an empty Confirmable message is a "ping"; a CoAP endpoint answers it
# with a Reset of the same message id, whatever resources it has.
COAP_VERSION_CON_EMPTY = 0x40
COAP_TYPE_RST = 3
# DTLS 1.2 (RFC 6347): a record of type handshake, a ClientHello, the answer a server without
# our state gives it (its cookie).
DTLS_HANDSHAKE, DTLS_CLIENT_HELLO, DTLS_HELLO_VERIFY_REQUEST = 22, 1, 3
DTLS_1_2 = b"\xfe\xfd"
PROBE_TIMEOUT_S = 1.0
PROBE_TRIES = 3
WILDCARDS = ("", "0.0.0.0", "::")


def render(check: Check) -> str:
    line = f"{check.status.value:<4}  {check.name:<12}  {check.found}"
    # The fix on the same line: `fleet doctor | grep FAIL` shows what to do too.
    return f"{line}  -> {check.fix}" if check.fix and check.status is not Status.OK else line


def _local(host: str) -> str:
    """Where to reach a listener bound to `host` from this machine."""
    return "127.0.0.1" if host in WILDCARDS else host


def _probe(host: str, port: int, request, answers, *, timeout_s: float, tries: int) -> bool:
    """Whether `host`:`port` answers the datagram `request(nonce)` with one `answers(reply, nonce)`."""
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0]
    with socket.socket(family, kind, proto) as sock:
        sock.settimeout(timeout_s)
        # Connected, so a closed port's ICMP "unreachable" comes back as an error at once.
        sock.connect(address)
        for _ in range(tries):
            nonce = secrets.token_bytes(32)
            sock.send(request(nonce))
            try:
                while True:
                    if answers(sock.recv(2048), nonce):
                        return True
            except TimeoutError:
                continue
            except ConnectionRefusedError:  # nothing listens there
                return False
    return False


def coap_ping(host: str, port: int, *, timeout_s: float = PROBE_TIMEOUT_S, tries: int = PROBE_TRIES) -> bool:
    """Whether a CoAP endpoint answers an empty CON with a RST of the same message id."""
    return _probe(host, port, lambda nonce: bytes([COAP_VERSION_CON_EMPTY, 0]) + nonce[:2],
                  lambda reply, nonce: len(reply) >= 4 and reply[0] >> 4 & 3 == COAP_TYPE_RST and reply[2:4] == nonce[:2],
                  timeout_s=timeout_s, tries=tries)


def _client_hello(random: bytes) -> bytes:
    """A DTLS 1.2 ClientHello without a cookie, offering TLS_PSK_WITH_AES_128_CCM_8."""
    body = DTLS_1_2 + random + b"\x00" + b"\x00" + b"\x00\x02\xc0\xa8" + b"\x01\x00"  # session id, cookie, suites, null compression
    handshake = bytes([DTLS_CLIENT_HELLO]) + len(body).to_bytes(3, "big") + bytes(5) + len(body).to_bytes(3, "big") + body
    return bytes([DTLS_HANDSHAKE]) + DTLS_1_2 + bytes(8) + len(handshake).to_bytes(2, "big") + handshake


def dtls_hello(host: str, port: int, *, timeout_s: float = PROBE_TIMEOUT_S, tries: int = PROBE_TRIES) -> bool:
    """Whether a DTLS server answers a ClientHello with a HelloVerifyRequest (RFC 6347 §4.2.1):
    its stateless cookie exchange, which needs no credential."""
    return _probe(host, port, _client_hello,
                  lambda reply, _: len(reply) > 13 and reply[0] == DTLS_HANDSHAKE and reply[13] == DTLS_HELLO_VERIFY_REQUEST,
                  timeout_s=timeout_s, tries=tries)


async def _probed(name: str, probe, host: str, port: int, answered: str, unanswered: str, fix: str) -> Check:
    where = f"udp {host}:{port}"
    try:
        ok = await asyncio.to_thread(probe, host, port)
    except OSError as exc:
        return Check(name, Status.FAIL, f"{where}: {exc}", "check FLEET_COAP_HOST / --coap-host")
    if ok:
        return Check(name, Status.OK, f"{where} {answered}")
    return Check(name, Status.FAIL, f"{where}: {unanswered}", f"start `fleet serve` (or `fleet coap`) here, {fix} "
                 "and the firewall; give --no-node when no node runs on this machine, "
                 "--coap-workers 0 when its node has no device edge")


async def check_coap(coap: CoapSettings) -> Check:
    return await _probed("coap", coap_ping, _local(coap.host), coap.port,
                         "answers a CoAP ping (an empty CON, answered with RST)", "no answer to a CoAP ping",
                         "check FLEET_COAP_PORT")


async def check_coaps(coap: CoapSettings, security: SecuritySettings) -> Check:
    if not coap.coaps_port:
        return Check("coaps", Status.OK, "off (--coaps-port 0): devices speak plain CoAP only")
    if security.credentials_key is None:
        return Check("coaps", Status.WARN, f"udp {_local(coap.host)}:{coap.coaps_port}: no listener, "
                     "FLEET_CREDENTIALS_KEY is unset",
                     "set FLEET_CREDENTIALS_KEY (`openssl rand -hex 32`), the same on every node")
    return await _probed("coaps", dtls_hello, _local(coap.host), coap.coaps_port,
                         "answers a DTLS ClientHello (with a HelloVerifyRequest)", "no answer to a DTLS ClientHello",
                         "check FLEET_COAPS_PORT / --coaps-port")


async def check_http(http: HttpSettings) -> Check:
    host = _local(http.host)
    url = f"http://[{host}]:{http.port}/readyz" if ":" in host else f"http://{host}:{http.port}/readyz"
    try:
        async with httpx.AsyncClient(timeout=3.0) as client:
            response = await client.get(url)
    except httpx.HTTPError as exc:
        return Check("http", Status.FAIL, f"{url}: {str(exc) or type(exc).__name__}",
                     "start `fleet serve` here, check FLEET_HTTP_HOST / FLEET_HTTP_PORT; "
                     "give --no-node when no node runs on this machine, --http-workers 0 when its node has no API")
    if response.status_code == 200:
        return Check("http", Status.OK, f"{url} ready")
    return Check("http", Status.FAIL, f"{url} answers {response.status_code}: {response.text.strip()[:200]}",
                 "the node is up but a component is not; its log says which")


async def _database(settings: Settings) -> list[Check]:
    embedded = settings.database.url is None
    if embedded and not has_embedded(settings.database.data_dir):
        # Starting the embedded server there would create an empty one: a check changes nothing.
        return [Check("database", Status.FAIL, f"no embedded PostgreSQL in {settings.database.data_dir}",
                      NO_EMBEDDED_FIX)]
    try:
        dsn = await asyncio.to_thread(resolve_dsn, settings)
    except Exception as exc:  # noqa: BLE001 - whatever stops the embedded server is the finding
        return [Check("database", Status.FAIL, f"the embedded PostgreSQL in {settings.database.data_dir} "
                      f"did not start: {exc}", "set FLEET_DATABASE_URL to a server of your own, or see "
                      "the embedded server's log in its data directory")]
    try:
        conn = await connect(dsn, timeout=10, application_name="fleet-doctor")
    except DatabaseUnreachable as exc:
        return [Check("database", Status.FAIL, str(exc),
                      "start PostgreSQL, or correct FLEET_DATABASE_URL (host, port, user, password, database)")]
    try:
        checks = await database_checks(conn)
        checks.append(await check_credentials(conn, settings.security))
    finally:
        await conn.close()
    if embedded:
        checks[0] = replace(checks[0], found=f"{checks[0].found} (embedded, in {settings.database.data_dir})")
    return checks


async def doctor(settings: Settings, *, node: bool = True, coap: bool = True, http: bool = True) -> int:
    """Print each check as it completes; 0 when none failed, else 1. `coap`, `http`: whether the
    node runs that side (`--coap-workers 0` or `--http-workers 0` leaves it off)."""
    checks = await _database(settings)
    for check in checks:
        print(render(check), flush=True)
    if node:
        probes = []
        if coap:
            probes += [check_coap(settings.coap), check_coaps(settings.coap, settings.security)]
        if http:
            probes.append(check_http(settings.http))
        for check in await asyncio.gather(*probes):
            print(render(check), flush=True)
            checks.append(check)
    return 1 if any(check.status is Status.FAIL for check in checks) else 0
