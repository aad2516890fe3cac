"""How a simulated device reaches a server: a connected UDP socket for coap://, a DTLS session
(protocols.coap.dtls, PSK or raw public key) for coaps://, one per device, as a device behind its
own SIM or NAT would have. Also the accounts each device leaves the factory with."""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlsplit

from cryptography.hazmat.primitives import serialization

from simulators.bootstrap import Account, Accounts
from simulators.credentials import DeviceCredential

DEFAULT_PORTS = {"coap": 5683, "coaps": 5684}


class LinkError(Exception):
    """A server URI the device cannot use."""


@dataclass(frozen=True, slots=True)
class Servers:
    """The servers a run's devices are built for: plain, secure (DTLS) and bootstrap."""

    plain: str = "coap://127.0.0.1:5683"
    secure: str = "coaps://127.0.0.1:5684"
    bootstrap: str = "coaps://127.0.0.1:5684"  # Fleet's /bs lives on its coaps listener


def factory_accounts(credential: DeviceCredential, servers: Servers, server_key_der: bytes = b"",
                     lifetime_s: int | None = None) -> Accounts:
    """Objects 0 and 1 as the factory flashed them for this credential."""
    bootstrap = credential.mode == "bootstrap"
    uri = servers.bootstrap if bootstrap else servers.secure
    if credential.uses_public_key:
        key = credential.signing_key()
        account = Account(uri, "rpk",
                          key.public_key().public_bytes(serialization.Encoding.DER,
                                                        serialization.PublicFormat.SubjectPublicKeyInfo),
                          key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                            serialization.NoEncryption()),
                          server_key_der)
    elif credential.mode in ("psk", "bootstrap"):
        account = Account(uri, "psk", credential.identity.encode(), credential.key)
    else:
        account = Account(servers.plain, "nosec")
    if bootstrap:
        return Accounts.factory(account, bootstrap=True)
    return Accounts.factory(replace(account, short_server_id=1, lifetime_s=lifetime_s), bootstrap=False)


_resolved: dict[str, tuple[int, tuple]] = {}


def resolve(uri: str) -> tuple[int, tuple]:
    """(address family, socket address) of coap[s]://HOST[:PORT], cached: a run's devices
    share a handful of URIs."""
    found = _resolved.get(uri)
    if found is not None:
        return found
    try:
        parts = urlsplit(uri)
        port = parts.port
    except ValueError:
        raise LinkError(f"{uri!r} is not a URI") from None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS or not parts.hostname:
        raise LinkError(f"a server URI looks like coap://HOST:PORT or coaps://HOST:PORT, not {uri!r}")
    try:
        family, _, _, _, sockaddr = socket.getaddrinfo(parts.hostname, port or DEFAULT_PORTS[scheme],
                                                       type=socket.SOCK_DGRAM)[0]
    except (socket.gaierror, ValueError) as exc:
        raise LinkError(f"cannot resolve {parts.hostname}: {exc}") from None
    _resolved[uri] = found = (family, sockaddr)
    return found


def secure(uri: str) -> bool:
    return uri.lower().startswith("coaps:")


def dtls_credentials(account: Account) -> Any:
    """The credentials protocols.coap.dtls's client engine takes for this account."""
    from protocols.coap import dtls

    if account.mode == "psk":
        return dtls.PskCredentials(identity=account.identity, key=account.secret)
    if account.mode == "rpk":
        if not account.server_public_key:
            raise LinkError("an RPK device needs the server's public key (/0/x/4): put server_public_key"
                            " in the credentials file")
        private = serialization.load_der_private_key(account.secret, password=None)
        return dtls.RpkCredentials(private_key=private, server_public_key=account.server_public_key)
    raise LinkError(f"{account.mode} needs no DTLS credentials")


async def open_link(protocol: asyncio.DatagramProtocol, account: Account) -> asyncio.DatagramTransport:
    """A transport to the account's server whose datagrams go to protocol: plain, or DTLS
    (sendto before the handshake ends is queued; a failed handshake reaches
    protocol.error_received)."""
    family, sockaddr = resolve(account.server_uri)
    loop = asyncio.get_running_loop()
    if secure(account.server_uri):
        if account.mode == "nosec":
            raise LinkError(f"{account.server_uri} needs a credential, the account has none")
        from protocols.coap.dtls import open_dtls_endpoint

        transport, _ = await open_dtls_endpoint(loop, lambda: protocol, sockaddr, dtls_credentials(account))
        return transport
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        sock.connect(sockaddr)
        transport, _ = await loop.create_datagram_endpoint(lambda: protocol, sock=sock)
    except BaseException:
        sock.close()
        raise
    return transport
