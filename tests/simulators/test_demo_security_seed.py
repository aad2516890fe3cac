"""The demo's device security: most devices PSK, some RPK, some bootstrapping from a factory key,
the rest NoSec; the keys are in Fleet and in the credentials file the demo's simulator reads,
kept across restarts, and the banner says the city accepts NoSec."""

from __future__ import annotations

from collections import Counter
from types import SimpleNamespace

from api.commands import demo_banner, demo_security_arguments
from fleet.access.service import system_principal
from fleet.security.service import SecurityService
from simulators.credentials import CredentialsFile
from simulators.seed import DEMO_COUNTS, seed_demo_city
from simulators.seed_keys import CREDENTIALS_KEY_VARIABLE, DEMO_ENV, demo_credentials_key, read_demo_env
from simulators.seed_security import DEMO_CREDENTIALS
from tests.conftest import TEST_SECURITY


async def test_demo_devices_get_credentials_once_and_keep_them(db, tmp_path):
    env = tmp_path / DEMO_ENV
    key = TEST_SECURITY.credentials_key.hex()
    seeded = await seed_demo_city(db, env, "http://127.0.0.1:8000", tmp_path, key, TEST_SECURITY)
    total = sum(DEMO_COUNTS.values())
    modes = seeded.security.modes
    assert sum(modes.values()) == total and modes["psk"] > total / 2
    assert min(modes["rpk"], modes["bootstrap"], modes["nosec"]) > 0
    file = CredentialsFile.load(tmp_path / DEMO_CREDENTIALS)
    assert Counter(c.mode for c in file.devices.values()) == Counter(modes)
    assert file.server_public_key.startswith("-----BEGIN PUBLIC KEY-----")
    assert read_demo_env(env)[CREDENTIALS_KEY_VARIABLE] == TEST_SECURITY.credentials_key.hex()

    security = SecurityService(db, TEST_SECURITY)
    admin = system_principal(seeded.city)
    from simulators.seed_security import _devices
    ids = await _devices(db, seeded.city)
    for mode, purpose in (("psk", "operational"), ("rpk", "operational"), ("bootstrap", "bootstrap")):
        endpoint = next(e for e, c in sorted(file.devices.items()) if c.mode == mode)
        (stored,) = await security.credentials(admin, ids[endpoint])
        assert (stored.purpose, stored.state) == (purpose, "active")
        if mode != "rpk":
            assert stored.identity == file.devices[endpoint].identity

    again = await seed_demo_city(db, env, "http://127.0.0.1:8000", tmp_path, key, TEST_SECURITY)
    assert again.security.set_now == 0, "a restart keeps the devices' keys"
    assert CredentialsFile.load(tmp_path / DEMO_CREDENTIALS).devices == file.devices
    assert demo_credentials_key(env) == key

    banner = demo_banner(again, "http://127.0.0.1:8000", 5683, 5684)
    assert "udp/5684" in banner and '"allow_nosec_devices": false' in banner
    assert f"{modes['psk']} devices with a pre-shared key" in banner


def test_the_demo_simulator_reads_the_credentials_file(tmp_path):
    settings = SimpleNamespace(coap=SimpleNamespace(coaps_port=5684),
                               database=SimpleNamespace(data_dir=tmp_path))
    assert demo_security_arguments(settings) == ["--credentials-file", str(tmp_path / DEMO_CREDENTIALS),
                                                 "--secure-server", "coaps://127.0.0.1:5684"]
    settings.coap.coaps_port = 0
    assert demo_security_arguments(settings) == ["--security", "nosec"]
