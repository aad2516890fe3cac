"""A simulated device's server accounts (LwM2M objects 0 Security and 1 Server) and what a
bootstrap server does to them: Bootstrap-Delete, -Write, -Discover and -Finish (LwM2M 1.1 §5.2).

A device leaves the factory with either an operational account (a server URI and the
credential to reach it) or only a bootstrap account. Bootstrapping replaces every account but
the bootstrap one; Finish checks the result is usable and hands the client the account it
registers with. Pure logic: the client (client.py) does the talking.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from fleet.objectmodel import Reading, ResourcePath
from protocols.lwm2m import linkformat
from simulators.objects import BadRequest, MethodNotAllowed, NotAcceptable, NotFound

SECURITY, SERVER = 0, 1
# /0/x resources.
SERVER_URI, IS_BOOTSTRAP, SECURITY_MODE, PUBLIC_KEY_OR_IDENTITY, SERVER_PUBLIC_KEY, SECRET_KEY = range(6)
SECURITY_SSID = 10
# /1/x resources.
SERVER_SSID, LIFETIME, NOTIFICATION_STORING, BINDING = 0, 1, 6, 7
# /0/x/2 Security Mode codes, and the names Fleet's credentials use for them.
MODES = {0: "psk", 1: "rpk", 3: "nosec"}
MODE_CODES = {name: code for code, name in MODES.items()}
BOOTSTRAP_INSTANCE = 0  # where the factory puts the bootstrap account


@dataclass(frozen=True, slots=True)
class Account:
    """What a client needs to register with one server: where, and how it proves who it is."""

    server_uri: str
    mode: str  # "psk" | "rpk" | "nosec"
    identity: bytes = b""  # PSK identity; for RPK the device's public key (SubjectPublicKeyInfo DER)
    secret: bytes = b""  # the PSK; for RPK the device's private key (PKCS#8 DER)
    server_public_key: bytes = b""  # RPK: the server's SubjectPublicKeyInfo DER
    short_server_id: int | None = None
    lifetime_s: int | None = None
    binding: str = "U"


class Accounts:
    """Objects 0 and 1 of one device: {instance: {resource: value}} each."""

    __slots__ = ("security", "server")

    def __init__(self) -> None:
        self.security: dict[int, dict[int, object]] = {}
        self.server: dict[int, dict[int, object]] = {}

    @classmethod
    def factory(cls, account: Account, *, bootstrap: bool) -> Accounts:
        """The accounts a device leaves the factory with: a bootstrap account only, or one
        operational account (Security /0/0 with SSID 1 and its Server /1/0)."""
        accounts = cls()
        security = {SERVER_URI: account.server_uri, IS_BOOTSTRAP: bootstrap,
                    SECURITY_MODE: MODE_CODES[account.mode], PUBLIC_KEY_OR_IDENTITY: account.identity,
                    SERVER_PUBLIC_KEY: account.server_public_key, SECRET_KEY: account.secret}
        if not bootstrap:
            ssid = account.short_server_id or 1
            security[SECURITY_SSID] = ssid
            accounts.server[0] = {SERVER_SSID: ssid, LIFETIME: account.lifetime_s or 300,
                                  NOTIFICATION_STORING: False, BINDING: account.binding}
        accounts.security[BOOTSTRAP_INSTANCE] = security
        return accounts

    def _table(self, object_id: int) -> dict[int, dict[int, object]]:
        if object_id == SECURITY:
            return self.security
        if object_id == SERVER:
            return self.server
        raise NotFound(f"object {object_id} is not an account object")

    def _is_bootstrap(self, instance: int) -> bool:
        return bool(self.security.get(instance, {}).get(IS_BOOTSTRAP))

    # -- what the bootstrap server asks ---------------------------------------------------------

    def delete(self, path: ResourcePath | None) -> None:
        """Bootstrap-Delete on '/' (path None), an object or an instance: everything there but
        the bootstrap account goes (§5.2.7.5; the Device object is not ours to lose)."""
        if path is None:
            for object_id in (SECURITY, SERVER):
                self.delete(ResourcePath(object_id))
            return
        if path.depth > 2:
            raise BadRequest("Bootstrap-Delete takes '/', an object or an object instance")
        if path.object not in (SECURITY, SERVER):
            return  # objects a simulated device does not let the bootstrap server empty
        table = self._table(path.object)
        if path.instance is None:
            for instance in list(table):
                if not (path.object == SECURITY and self._is_bootstrap(instance)):
                    del table[instance]
            return
        if path.object == SECURITY and self._is_bootstrap(path.instance):
            raise BadRequest("the bootstrap-server account cannot be deleted")
        table.pop(path.instance, None)

    def write(self, path: ResourcePath, readings: Iterable[Reading]) -> None:
        """Bootstrap-Write: the values are written whether or not their instance exists
        (§5.2.7.4); resources the server gives no access to are written all the same."""
        if path.object not in (SECURITY, SERVER):
            raise MethodNotAllowed(f"a simulated device takes Bootstrap-Write on objects 0 and 1, not {path.object}")
        values = list(readings)
        if not values:
            raise BadRequest("nothing to write")
        planned: dict[int, dict[int, object]] = {}
        for reading in values:
            target = reading.path
            if not path.contains(target) or target.instance is None or target.resource is None:
                raise BadRequest(f"{target} is not a resource below {path}")
            if target.resource_instance is not None:
                raise BadRequest(f"{target}: account resources are single")
            if target.object == SECURITY and self._is_bootstrap(target.instance) \
                    and target.resource == IS_BOOTSTRAP and not reading.value:
                raise BadRequest("the bootstrap-server account stays a bootstrap-server account")
            planned.setdefault(target.instance, {})[target.resource] = reading.value
        table = self._table(path.object)
        for instance, resources in planned.items():
            table.setdefault(instance, {}).update(resources)

    def discover(self, path: ResourcePath | None) -> bytes:
        """Bootstrap-Discover on '/' or an object: its instances, Security ones with their
        SSID (the bootstrap account has none) and the server URI of each."""
        if path is not None and (path.depth != 1 or path.object not in (SECURITY, SERVER)):
            raise BadRequest("Bootstrap-Discover takes '/' or object 0 or 1")
        objects = (SECURITY, SERVER) if path is None else (path.object,)
        links = [linkformat.Link("/", {"lwm2m": "1.1"})] if path is None else []
        for object_id in objects:
            table = self._table(object_id)
            if not table:
                links.append(linkformat.Link(f"/{object_id}"))
            for instance in sorted(table):
                resources = table[instance]
                attrs: dict[str, str | None] = {}
                ssid = resources.get(SECURITY_SSID if object_id == SECURITY else SERVER_SSID)
                if ssid is not None and not (object_id == SECURITY and resources.get(IS_BOOTSTRAP)):
                    attrs["ssid"] = str(ssid)
                if object_id == SECURITY and resources.get(SERVER_URI):
                    attrs["uri"] = str(resources[SERVER_URI])
                links.append(linkformat.Link(f"/{object_id}/{instance}", attrs))
        return linkformat.serialize(links).encode()

    def finish(self) -> Account:
        """Bootstrap-Finish: the operational account the client now registers with. An
        inconsistent configuration answers 4.06 with a diagnostic (§5.2.7.6)."""
        account = self.operational()
        if account is None:
            raise NotAcceptable("no usable server account: a Security instance (not bootstrap) "
                                "with a Short Server ID, and its Server instance, are needed")
        return account

    # -- what the client needs ----------------------------------------------------------------

    def bootstrap(self) -> Account | None:
        for instance in sorted(self.security):
            resources = self.security[instance]
            if resources.get(IS_BOOTSTRAP):
                return _account(resources, None)
        return None

    def operational(self) -> Account | None:
        """The first server account with both halves (Security and Server instances) and a
        mode the device supports; None: the device has to bootstrap."""
        servers = {resources.get(SERVER_SSID): resources for resources in self.server.values()}
        for instance in sorted(self.security):
            resources = self.security[instance]
            if resources.get(IS_BOOTSTRAP):
                continue
            server = servers.get(resources.get(SECURITY_SSID))
            if server is None or not resources.get(SERVER_URI):
                continue
            if resources.get(SECURITY_MODE) not in MODES:
                continue
            return _account(resources, server)
        return None


def _account(security: dict[int, object], server: dict[int, object] | None) -> Account:
    server = server or {}
    lifetime = server.get(LIFETIME)
    return Account(str(security[SERVER_URI]), MODES.get(security.get(SECURITY_MODE), "nosec"),
                   _bytes(security.get(PUBLIC_KEY_OR_IDENTITY)), _bytes(security.get(SECRET_KEY)),
                   _bytes(security.get(SERVER_PUBLIC_KEY)),
                   security.get(SECURITY_SSID) if security.get(SECURITY_SSID) is not None else None,
                   int(lifetime) if lifetime is not None else None, str(server.get(BINDING) or "U"))


def _bytes(value: object) -> bytes:
    if value is None:
        return b""
    if isinstance(value, str):
        return value.encode()
    return bytes(value)
