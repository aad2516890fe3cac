"""Simulated devices over coaps:// against Fleet's DTLS listener, in a city that refuses NoSec:
a PSK device whose key the simulator set over REST registers and sends; an RPK device does the
same; a device holding only a factory bootstrap key bootstraps, then registers with the key
Fleet's bootstrap server wrote into its object 0."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from cryptography.hazmat.primitives import serialization

from fleet.security.crypto import server_public_key_der
from protocols.lwm2m.listener import Listener, open_listener
from simulators.credentials import CredentialsFile, new_credential
from simulators.rest import FleetApi
from simulators.simulation import SimulationConfig
from tests.conftest import TEST_SECURITY
from tests.simulators.conftest import eventually, provision, running


@pytest.fixture
async def secure_listener(db) -> AsyncIterator[Listener]:
    async with open_listener(db, "::", 0, coaps_port=0, security=TEST_SECURITY,
                             expiry_grace=timedelta(seconds=0), sweep_interval_s=0.2) as running_listener:
        yield running_listener


def secure_config(listener: Listener, devices_file, credentials, counts, **overrides) -> SimulationConfig:
    return SimulationConfig(**({
        "counts": counts, "server": f"coap://127.0.0.1:{listener.port}",
        "secure_server": f"coaps://127.0.0.1:{listener.coaps_port}", "devices_file": devices_file,
        "credentials_file": credentials, "progress_s": 0, "speed": 60} | overrides))


async def secure_registrations(db) -> dict[str, tuple[bool, int]]:
    """endpoint -> (registered over coaps, points it stored)"""
    async with db.system_tx() as conn:
        rows = await conn.fetch("""select r.endpoint, r.secure, (select count(*) from telemetry t
                                       where t.device_id = r.device_id) as points
                                   from registrations r""")
    return {r["endpoint"]: (r["secure"], r["points"]) for r in rows}


async def test_a_psk_device_keyed_over_rest_registers_and_sends_over_coaps(db, secure_listener, seoul, api_url,
                                                                             tmp_path):
    assert (await seoul.client.patch("/api/v1/tenant", json={"allow_nosec_devices": False})).status_code == 200
    devices_file = await provision(seoul, tmp_path, {"streetlight": 1})
    credentials = tmp_path / "credentials.json"
    config = secure_config(secure_listener, devices_file, credentials, {"streetlight": 1},
                           security="psk", api=api_url, key=seoul.key)
    async with running(config) as simulation:
        endpoint = simulation.devices[0].endpoint
        stored = CredentialsFile.load(credentials).devices[endpoint]
        assert stored.mode == "psk", "the key the simulator set in Fleet is kept for the next run"

        async def sent():
            found = (await secure_registrations(db)).get(endpoint)
            return found if found and found[1] > 0 else None

        assert (await eventually(sent, timeout_s=30))[0] is True, "registered over coaps"
        assert simulation.stats.sends_acked > 0


async def test_the_simulator_learns_fleets_coaps_key_over_rest(seoul, api_url):
    # What `--security rpk` asks for when the credentials file lacks server_public_key.
    expected = serialization.load_der_public_key(server_public_key_der(TEST_SECURITY)).public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    async with FleetApi(api_url, seoul.key) as api:
        assert (await api.server_public_key()).strip() == expected.strip()


async def test_rpk_and_bootstrapping_devices_register_over_coaps(db, secure_listener, seoul, tmp_path):
    devices_file = await provision(seoul, tmp_path, {"streetlight": 2})
    first, second = (f"{seoul.slug}-sim-sl-{n:05d}" for n in (1, 2))
    ids = {d["endpoint"]: d["id"] for d in (await seoul.client.get("/api/v1/devices")).json()["items"]}
    server_key = serialization.load_der_public_key(server_public_key_der(TEST_SECURITY)).public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    file = CredentialsFile({first: new_credential("rpk", first), second: new_credential("bootstrap", second)},
                           server_key)
    for endpoint, credential in file.devices.items():
        answer = await seoul.client.put(f"/api/v1/devices/{ids[endpoint]}/security", json=credential.security_body())
        assert answer.status_code in (200, 201), answer.text
    credentials = tmp_path / "credentials.json"
    file.save(credentials)
    config = secure_config(secure_listener, devices_file, credentials, {"streetlight": 2})
    async with running(config) as simulation:
        async def both_registered():
            found = await secure_registrations(db)
            return found if {first, second} <= set(found) else None

        found = await eventually(both_registered, timeout_s=40)
        assert found[first][0] and found[second][0], "both over coaps"
        assert simulation.stats.bootstraps == 1
        bootstrapped = simulation.device(second).link.accounts.operational()
        assert bootstrapped.mode == "psk" and bootstrapped.identity != file.devices[second].identity.encode()


async def test_a_device_bootstraps_with_a_factory_key_pair_in_a_city_that_takes_no_psk(db, secure_listener, seoul,
                                                                                         tmp_path):
    answer = await seoul.client.patch("/api/v1/tenant", json={"allow_nosec_devices": False, "security_modes": ["rpk"]})
    assert answer.status_code == 200, answer.text
    devices_file = await provision(seoul, tmp_path, {"streetlight": 1})
    endpoint = f"{seoul.slug}-sim-sl-00001"
    (device,) = (await seoul.client.get("/api/v1/devices")).json()["items"]
    server_key = serialization.load_der_public_key(server_public_key_der(TEST_SECURITY)).public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    file = CredentialsFile({endpoint: new_credential("bootstrap", endpoint, key_pair=True)}, server_key)
    answer = await seoul.client.put(f"/api/v1/devices/{device['id']}/security",
                                    json=file.devices[endpoint].security_body())
    assert answer.status_code in (200, 201), answer.text
    credentials = tmp_path / "credentials.json"
    file.save(credentials)
    async with running(secure_config(secure_listener, devices_file, credentials, {"streetlight": 1})) as simulation:
        async def registered():
            return (await secure_registrations(db)).get(endpoint)

        assert (await eventually(registered, timeout_s=40))[0] is True
        account = simulation.device(endpoint).link.accounts.operational()
        assert account.mode == "rpk", "the bootstrap server wrote a key pair: the city takes no PSK"
