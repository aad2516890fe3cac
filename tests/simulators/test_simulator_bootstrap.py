"""A simulated device's accounts (objects 0 and 1) under Bootstrap-Delete, -Write, -Discover
and -Finish, in the formats a bootstrap server writes them (TLV by default, SenML when asked)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from fleet.objectmodel import CATALOG, Reading, ResourcePath
from protocols.lwm2m import content, linkformat, senml, tlv
from simulators.bootstrap import Account, Accounts
from simulators.credentials import CredentialsFile, DeviceCredential, new_credential
from simulators.links import Servers, factory_accounts
from simulators.objects import BadRequest, MethodNotAllowed, NotAcceptable, decode_write

FACTORY = Account("coaps://bs.example:5684", "psk", b"factory-id", bytes(16))
P = ResourcePath.parse


def operational_writes(fmt: int = content.LWM2M_TLV) -> list[tuple[ResourcePath, list[Reading]]]:
    """What Fleet's bootstrap server writes: Security /0/1 and Server /1/0, decoded as the device does."""
    security = [(P("/0/1/0"), "coaps://fleet.example:5684"), (P("/0/1/1"), False), (P("/0/1/2"), 0),
                (P("/0/1/3"), b"sl-1-op"), (P("/0/1/4"), b""), (P("/0/1/5"), bytes(range(16))),
                (P("/0/1/10"), 1)]
    server = [(P("/1/0/0"), 1), (P("/1/0/1"), 86400), (P("/1/0/6"), True), (P("/1/0/7"), "U")]
    writes = []
    for path, values in ((P("/0/1"), security), (P("/1/0"), server)):
        if fmt == content.LWM2M_TLV:
            payload = tlv.encode(values, path, CATALOG)
        else:
            payload = senml.encode_json([Reading(p, None, v) for p, v in values])
        writes.append((path, decode_write(fmt, payload, path, datetime.now(UTC))))
    return writes


def test_a_factory_bootstrap_account_has_no_server_to_register_with():
    accounts = Accounts.factory(FACTORY, bootstrap=True)
    assert accounts.operational() is None
    assert accounts.bootstrap().server_uri == "coaps://bs.example:5684"
    assert accounts.bootstrap().identity == b"factory-id"


@pytest.mark.parametrize("fmt", [content.LWM2M_TLV, content.SENML_JSON])
def test_delete_write_finish_gives_the_account_written(fmt):
    accounts = Accounts.factory(FACTORY, bootstrap=True)
    accounts.delete(None)  # DELETE /
    assert accounts.bootstrap() is not None, "the bootstrap account survives Bootstrap-Delete"
    for path, values in operational_writes(fmt):
        accounts.write(path, values)
    account = accounts.finish()
    assert account == Account("coaps://fleet.example:5684", "psk", b"sl-1-op", bytes(range(16)), b"",
                              short_server_id=1, lifetime_s=86400, binding="U")
    assert accounts.bootstrap() is not None


def test_re_bootstrap_replaces_the_old_account():
    accounts = Accounts.factory(FACTORY, bootstrap=True)
    for path, values in operational_writes():
        accounts.write(path, values)
    accounts.delete(P("/0"))
    accounts.delete(P("/1"))
    assert accounts.operational() is None
    with pytest.raises(NotAcceptable):
        accounts.finish()  # nothing usable written: 4.06
    for path, values in operational_writes():
        accounts.write(path, [Reading(r.path, None, b"sl-1-new") if r.path == P("/0/1/3") else r
                              for r in values])
    assert accounts.finish().identity == b"sl-1-new"


def test_finish_refuses_a_security_instance_without_its_server():
    accounts = Accounts.factory(FACTORY, bootstrap=True)
    security, _server = operational_writes()
    accounts.write(*security)
    with pytest.raises(NotAcceptable):
        accounts.finish()


def test_the_bootstrap_account_cannot_be_deleted_or_demoted():
    accounts = Accounts.factory(FACTORY, bootstrap=True)
    with pytest.raises(BadRequest):
        accounts.delete(P("/0/0"))
    with pytest.raises(BadRequest):
        accounts.write(P("/0/0"), [Reading(P("/0/0/1"), None, False)])
    with pytest.raises(MethodNotAllowed):
        accounts.write(P("/3/0"), [Reading(P("/3/0/0"), None, "x")])
    accounts.delete(P("/3"))  # other objects: nothing of the device's goes
    assert accounts.bootstrap() is not None


def test_bootstrap_discover_names_the_accounts():
    accounts = Accounts.factory(FACTORY, bootstrap=True)
    for path, values in operational_writes():
        accounts.write(path, values)
    links = {link.path: link.attrs for link in linkformat.parse(accounts.discover(None))}
    assert links["/"] == {"lwm2m": "1.1"}
    assert "ssid" not in links["/0/0"], "the bootstrap account has no Short Server ID"
    assert links["/0/1"]["ssid"] == "1" and links["/1/0"] == {"ssid": "1"}


def test_factory_accounts_of_each_credential():
    servers = Servers("coap://h:5683", "coaps://h:5684", "coaps://h:5684")
    assert factory_accounts(DeviceCredential("nosec"), servers).operational().server_uri == "coap://h:5683"
    psk = factory_accounts(DeviceCredential("psk", "id-1", "00" * 16), servers, lifetime_s=60).operational()
    assert (psk.server_uri, psk.mode, psk.identity, psk.secret, psk.lifetime_s) == (
        "coaps://h:5684", "psk", b"id-1", bytes(16), 60)
    rpk = factory_accounts(new_credential("rpk", "sl-2"), servers).operational()
    assert rpk.mode == "rpk" and rpk.identity.startswith(b"0Y0") and rpk.secret
    bootstrap = factory_accounts(new_credential("bootstrap", "sl-3"), servers)
    assert bootstrap.operational() is None and bootstrap.bootstrap().mode == "psk"


def test_the_credentials_file_round_trips_for_its_owner_only(tmp_path):
    path = tmp_path / "credentials.json"
    written = CredentialsFile({"a": new_credential("psk", "a"), "b": new_credential("rpk", "b"),
                               "c": new_credential("bootstrap", "c"), "d": DeviceCredential("nosec")})
    written.save(path)
    assert path.stat().st_mode & 0o777 == 0o600
    assert CredentialsFile.load(path).devices == written.devices
    assert CredentialsFile.load(tmp_path / "missing.json").devices == {}
    assert written.devices["b"].security_body()["public_key"].startswith("-----BEGIN PUBLIC KEY-----")


async def test_rpk_devices_need_the_servers_key_before_anything_is_set(tmp_path):
    from simulators.inventory import DeviceSpec
    from simulators.security import SecurityError, device_credentials

    path = tmp_path / "credentials.json"
    CredentialsFile({"sl-1": new_credential("rpk", "sl-1")}).save(path)
    spec = DeviceSpec("streetlight", "sl-1", 37.5, 127.0)
    with pytest.raises(SecurityError, match="server_public_key"):
        await device_credentials([spec], None, path, None, None)
    credentials, _file = await device_credentials([spec], "nosec", path, None, None)
    assert credentials["sl-1"].mode == "nosec"
    with pytest.raises(SecurityError, match="--api"):
        await device_credentials([spec], "psk", path, None, None)


def test_a_factory_bootstrap_key_pair():
    servers = Servers("coap://h:5683", "coaps://h:5684", "coaps://bs:5684")
    credential = new_credential("bootstrap", "sl-4", key_pair=True)
    assert credential.security_body()["purpose"] == "bootstrap" and credential.security_body()["mode"] == "rpk"
    accounts = factory_accounts(credential, servers, b"server-key")
    assert accounts.operational() is None
    bootstrap = accounts.bootstrap()
    assert (bootstrap.server_uri, bootstrap.mode, bootstrap.server_public_key) == ("coaps://bs:5684", "rpk",
                                                                                   b"server-key")
