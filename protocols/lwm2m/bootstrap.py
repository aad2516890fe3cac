"""The LwM2M bootstrap server: POST /bs, then Delete /0 and /1, Write /0/1 and /1/0, and Finish.

A device fresh from the factory holds a bootstrap credential (fleet.security, purpose
bootstrap). It asks `POST /bs?ep=NAME[&pct=FORMAT]` over coaps with that credential (over plain
coap only where its city takes NoSec devices and it holds no bootstrap credential); Fleet
answers 2.04 and then, as the server of that exchange (LwM2M 1.1 TS §5.2.7):

1. issues the device a new operational credential, stored *pending* (it authenticates, and the
   active one still does, until the device first registers with it: fleet.security activates it
   then and retires the old one), so a re-bootstrap rotates the key and a lost Finish leaves the
   device able to register with either. A PSK where the city takes PSK devices; otherwise a
   P-256 key pair whose private key is written to the device and not kept (as Leshan does);
2. Bootstrap-Delete `/0` and `/1` (the client keeps its bootstrap account, TS §5.2.7.5);
3. Bootstrap-Write `/0/1`, the Security instance of Fleet's coaps account (server URI, mode,
   PSK identity and key or the device's public and private key plus Fleet's public key, Short
   Server ID 1), and `/1/0`, the Server instance (SSID 1,
   lifetime, notification storing, binding U), in the format the device asked for (`pct`:
   SenML JSON or CBOR, LwM2M CBOR) or else TLV, as Leshan does; the Security object's resources
   have no operations in the registry, so nothing here checks them against it;
4. Bootstrap-Finish `POST /bs`.

The device then registers at the written URI with the new key.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog
from aiocoap import CHANGED, Code, Message

from fleet.errors import PermissionDenied
from fleet.objectmodel import Reading, ResourcePath
from fleet.registrations.models import DevicePolicy
from fleet.registrations.service import RegistrationService
from protocols.lwm2m import content, lwm2m_cbor, senml, tlv
from protocols.lwm2m.downlink import DeviceAddress, DeviceClient, DeviceRequestFailed
from protocols.lwm2m.errors import CodecError
from protocols.lwm2m.server import authenticated_device, peer_of, queries

log = structlog.get_logger("fleet.lwm2m.bootstrap")

SECURITY_OBJECT = 0
SERVER_OBJECT = 1
SECURITY_INSTANCE = 1  # /0/0 is where clients usually keep their bootstrap account
SERVER_INSTANCE = 0
SHORT_SERVER_ID = 1
PSK_MODE, RPK_MODE = 0, 1  # Security /0/x/2: 0 PSK, 1 RPK, 2 certificate, 3 NoSec, 4 EST
DEFAULT_LIFETIME_S = 3600
# What a device may ask the writes in (pct); anything else gets TLV, as from Leshan.
WRITE_FORMATS = (content.LWM2M_TLV, content.SENML_JSON, content.SENML_CBOR, content.LWM2M_CBOR)
_BS = ("bs",)

# Issues the device a pending operational credential: (security mode, resource 3: the PSK
# identity or the device's public key, resource 5: the PSK or the device's private key), the
# secret in plain this once.
IssueAccount = Callable[[DevicePolicy], Awaitable[tuple[int, bytes, bytes]]]


@dataclass(frozen=True, slots=True)
class ServerAccount:
    """What a bootstrap writes: the device's account on Fleet's coaps listener."""

    server_uri: str
    mode: int
    identity: bytes  # the PSK identity, or the device's public key (SubjectPublicKeyInfo DER)
    key: bytes  # the PSK, or the device's private key (PKCS#8 DER)
    server_public_key: bytes = b""
    lifetime_s: int = DEFAULT_LIFETIME_S

    def security_instance(self) -> list[tuple[ResourcePath, object]]:
        # Fleet's public key only where the device checks it (RPK); a PSK account has none.
        server_key = self.server_public_key if self.mode == RPK_MODE else b""
        values = {0: self.server_uri, 1: False, 2: self.mode, 3: self.identity, 4: server_key,
                  5: self.key, 10: SHORT_SERVER_ID}
        return [(ResourcePath(SECURITY_OBJECT, SECURITY_INSTANCE, rid), value) for rid, value in values.items()]

    def server_instance(self) -> list[tuple[ResourcePath, object]]:
        values = {0: SHORT_SERVER_ID, 1: self.lifetime_s, 6: True, 7: "U"}
        return [(ResourcePath(SERVER_OBJECT, SERVER_INSTANCE, rid), value) for rid, value in values.items()]


def encode_instance(values: list[tuple[ResourcePath, object]], instance: ResourcePath,
                    content_format: int) -> bytes:
    """A whole instance's payload for a Bootstrap-Write on `instance`, in `content_format`."""
    if content_format == content.LWM2M_TLV:
        return tlv.encode(values, instance)
    if content_format == content.LWM2M_CBOR:
        return lwm2m_cbor.encode(values)
    readings = [Reading(path, None, value) for path, value in values]
    return senml.encode_json(readings) if content_format == content.SENML_JSON else senml.encode_cbor(readings)


class BootstrapServer:
    """Answers POST /bs on the listener (LwM2MServer routes it here) and runs each device's
    bootstrap as a task of its own; a device asking again replaces its bootstrap under way."""

    def __init__(self, registrations: RegistrationService, client: DeviceClient, issue_account: IssueAccount, *,
                 server_uri: str, server_public_key: bytes = b"",
                 lifetime_s: int = DEFAULT_LIFETIME_S) -> None:
        self.registrations = registrations
        self.client = client
        self.issue_account = issue_account
        self.server_uri = server_uri
        self.server_public_key = server_public_key
        self.lifetime_s = lifetime_s
        self._running: dict[str, asyncio.Task] = {}
        self.finished = 0
        self.failed = 0

    async def render(self, request: Message) -> Message:
        if request.code != Code.POST:
            raise CodecError("bootstrap is POST /bs?ep=NAME")
        params = queries(request)
        endpoint = params.get("ep")
        if not endpoint:
            raise CodecError("ep (endpoint name) is required")
        content_format = content.LWM2M_TLV
        if params.get("pct", "").isdigit() and int(params["pct"]) in WRITE_FORMATS:
            content_format = int(params["pct"])
        policy = await self.registrations.policy(endpoint)
        if policy is None:
            raise PermissionDenied(f"endpoint {endpoint!r} is not provisioned")
        host, port, secure = peer_of(request)
        refused = policy.refuse_bootstrap(secure, authenticated_device(request))
        if refused is not None:
            raise PermissionDenied(refused)
        previous = self._running.pop(endpoint, None)
        if previous is not None:
            previous.cancel()
        task = asyncio.create_task(self._bootstrap(DeviceAddress(host, port, secure, policy.device_id), policy,
                                                      content_format))
        self._running[endpoint] = task
        task.add_done_callback(lambda done: self._running.pop(endpoint, None) if self._running.get(
            endpoint) is done else None)
        return Message(code=CHANGED)

    async def _bootstrap(self, address: DeviceAddress, policy: DevicePolicy, content_format: int) -> None:
        try:
            mode, identity, key = await self.issue_account(policy)
            account = ServerAccount(self.server_uri, mode, identity, key, self.server_public_key, self.lifetime_s)
            for path in ("0", "1"):
                await self._ask(address, Code.DELETE, (path,), deleted=True)
            for values, instance in ((account.security_instance(), ResourcePath(SECURITY_OBJECT, SECURITY_INSTANCE)),
                                     (account.server_instance(), ResourcePath(SERVER_OBJECT, SERVER_INSTANCE))):
                await self._ask(address, Code.PUT, tuple(str(i) for i in instance.ids),
                                payload=encode_instance(values, instance, content_format),
                                content_format=content_format)
            await self._ask(address, Code.POST, _BS)
        except DeviceRequestFailed as exc:
            # The device asks again after its own timeout; its pending key is replaced then.
            self.failed += 1
            log.info("bootstrap failed", endpoint=policy.endpoint, error=exc.detail)
            return
        except Exception:
            self.failed += 1
            log.exception("bootstrap failed", endpoint=policy.endpoint)
            return
        self.finished += 1
        log.info("bootstrapped", endpoint=policy.endpoint, server=self.server_uri, secure=address.secure)

    async def _ask(self, address: DeviceAddress, code: Code, segments: tuple[str, ...], *,
                   deleted: bool = False, **fields) -> None:
        try:
            await self.client.exchange(address, code, segments, **fields)
        except DeviceRequestFailed as exc:
            # Nothing to delete is as good as deleted.
            if not (deleted and (exc.code or "").startswith("4.04")):
                raise

    async def close(self) -> None:
        tasks = list(self._running.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
