"""/api/v1/devices/{id}/security: a device's DTLS credential, set (the key shown once), read, revoked; and
/api/v1/security/server-key: Fleet's own DTLS public key."""

from __future__ import annotations

import contextlib
from typing import Annotated, Literal
from uuid import UUID

from litestar import Controller, delete, get, put
from litestar.datastructures import CacheControlHeader
from litestar.params import Parameter

from api.problems import problems
from api.schemas import DeviceCredential, DeviceSecurity, ServerKey, credential_out, device_security_out
from fleet.access.models import Principal
from fleet.errors import NotConfigured
from fleet.security.models import SetPsk, SetRpk
from fleet.security.service import SecurityService


class DeviceSecurityController(Controller):
    path = "/api/v1/devices/{device_id:uuid}/security"
    tags = ["devices"]

    @put("/", summary="Set the device's DTLS credential: a PSK (no key_hex: Fleet makes one up and shows it "
                      "in this answer only) or its raw public key; earlier ones of that purpose are retired",
         responses=problems(403, 404, 409, 422, 500),
         cache_control=CacheControlHeader(no_store=True))  # the answer may hold the key, shown once
    async def set_credential(self, device_id: UUID, data: SetPsk | SetRpk, principal: Principal,
                             security_service: SecurityService, coaps_server_uri: str | None) -> DeviceCredential:
        result = await security_service.set_credential(principal, device_id, data)
        server_key = None
        if result.credential.mode == "rpk":
            # What the device checks Fleet by; a server without FLEET_CREDENTIALS_KEY has none.
            with contextlib.suppress(NotConfigured):
                server_key = security_service.server_public_key().pem
        return credential_out(result.credential, result.generated_key_hex, server_uri=coaps_server_uri,
                              server_public_key=server_key)

    @get("/", summary="The device's credentials that can authenticate (never a key)", responses=problems(403, 404))
    async def current(self, device_id: UUID, principal: Principal,
                      security_service: SecurityService) -> DeviceSecurity:
        return device_security_out(device_id, await security_service.credentials(principal, device_id))

    @delete("/", summary="Revoke the device's credentials (all, or one purpose): its DTLS sessions end",
            status_code=200, responses=problems(403, 404, 422))
    async def revoke(self, device_id: UUID, principal: Principal, security_service: SecurityService,
                     purpose: Annotated[Literal["operational", "bootstrap"] | None, Parameter(
                         required=False, description="only this purpose's credentials")] = None) -> DeviceSecurity:
        await security_service.revoke(principal, device_id, purpose)
        return device_security_out(device_id, await security_service.credentials(principal, device_id))


class ServerKeyController(Controller):
    path = "/api/v1/security/server-key"
    tags = ["devices"]

    @get("/", summary="Fleet's own DTLS public key, which raw-public-key devices check (the same on every node)",
         responses=problems(500))
    async def server_key(self, principal: Principal, security_service: SecurityService) -> ServerKey:
        del principal  # any authenticated key may read it: it is public
        key = security_service.server_public_key()
        return ServerKey(key.pem, key.der_hex, key.sha256)
