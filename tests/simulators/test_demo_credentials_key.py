"""The demo's FLEET_CREDENTIALS_KEY: made once per data dir, kept in demo.env across restarts."""

from __future__ import annotations

from simulators.seed import seed_demo_city
from simulators.seed_keys import CREDENTIALS_KEY_VARIABLE, DEMO_ENV, demo_credentials_key, read_demo_env


async def test_the_demo_keeps_its_credentials_key_in_its_data_dir(db, tmp_path):
    env = tmp_path / DEMO_ENV
    first = demo_credentials_key(env)
    assert len(bytes.fromhex(first)) == 32
    await seed_demo_city(db, env, "http://127.0.0.1:8000", tmp_path, first)
    assert read_demo_env(env)[CREDENTIALS_KEY_VARIABLE] == first
    assert demo_credentials_key(env) == first          # the next start reads it back
    assert demo_credentials_key(tmp_path / "elsewhere" / DEMO_ENV) != first   # another data dir: its own
    # A new city refuses NoSec; the demo's allows it (its simulated devices include NoSec ones).
    async with db.system_tx() as conn:
        assert await conn.fetchval("select allow_nosec_devices from tenants where slug = 'seoul'") is True
