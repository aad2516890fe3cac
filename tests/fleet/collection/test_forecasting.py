"""Fill forecasting against real PostgreSQL: the leader's profile pass (incremental, idempotent,
drops and Executes recorded as emptyings), record_emptying, and the forecasts interface (own
history, borrowed district and city rates, decommissioned bins left out)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from fleet.collection.forecast_repository import record_emptying
from fleet.collection.forecasting import forecasts
from fleet.collection.profiling import refresh_all, refresh_city
from tests.conftest import make_city
from tests.fleet.collection.forecast_helpers import add_bin, sawtooth, write_fills

NOW = datetime.now(UTC).replace(minute=30, second=0, microsecond=0)
START = NOW - timedelta(hours=96)


async def _emptyings(db, tenant_id, source=None):
    async with db.tenant_tx(tenant_id) as conn:
        return await conn.fetch("select * from bin_emptyings where ($1::text is null or source = $1) order by at",
                                source)


async def test_the_pass_learns_incrementally_and_records_drops_once(db):
    city = await make_city(db, "seoul")
    bin_id = await add_bin(db, city.principal, "bin-1")
    await write_fills(db, city.tenant_id, bin_id, START, 60, sawtooth(1.0, empty_at=40))

    first = await refresh_city(db, city.tenant_id, NOW, batch=1)
    assert (first.bins, first.readings) == (1, 60)
    drops = await _emptyings(db, city.tenant_id, "drop")
    assert len(drops) == 1 and drops[0]["fill_before"] >= 40 and drops[0]["fill_after"] <= 3

    # Later readings arrive: only they are read; the drop is not recorded again.
    await write_fills(db, city.tenant_id, bin_id, START + timedelta(hours=60), 36,
                      lambda h: sawtooth(1.0, empty_at=40)(h + 60))
    second = await refresh_city(db, city.tenant_id, NOW, batch=1)
    assert second.readings == 37  # the 36 new and the one held back for its neighbour
    assert len(await _emptyings(db, city.tenant_id, "drop")) == 2
    again = await refresh_city(db, city.tenant_id, NOW)
    assert again.readings == 1 and again.drops == 0  # only the newest, still waiting for its neighbour
    async with db.tenant_tx(city.tenant_id) as conn:
        profile = await conn.fetchrow("select * from bin_fill_profiles where device_id = $1", bin_id)
    assert len(profile["rates"]) == 168 and profile["through"] == START + timedelta(hours=94)
    assert profile["residual_sd"] is None  # no hour of the week seen twice yet: nothing out of sample


async def test_executes_and_crew_stops_are_emptyings(db):
    city = await make_city(db, "seoul")
    bin_id = await add_bin(db, city.principal, "bin-1")
    done = NOW - timedelta(hours=3)
    async with db.system_tx() as conn:
        batch = await conn.fetchval(
            """insert into command_batches (tenant_id, operation, path, target, device_count, expires_at)
               values ($1, 'execute', '/3435/0/9', '{}', 1, now() + interval '1 hour') returning id""",
            city.tenant_id)
        await conn.execute(
            """insert into commands (batch_id, tenant_id, device_id, operation, path, status, expires_at, completed_at)
               values ($1, $2, $3, 'execute', '/3435/0/9', 'succeeded', now() + interval '1 hour', $4)""",
            batch, city.tenant_id, bin_id, done)
        # A crew's done stop sent this one: its stop already recorded the emptying.
        by_stop = await conn.fetchval(
            """insert into command_batches (tenant_id, operation, path, target, device_count, expires_at, origin)
               values ($1, 'execute', '/3435/0/9', '{}', 1, now() + interval '1 hour', 'collection') returning id""",
            city.tenant_id)
        await conn.execute(
            """insert into commands (batch_id, tenant_id, device_id, operation, path, status, expires_at, completed_at)
               values ($1, $2, $3, 'execute', '/3435/0/9', 'succeeded', now() + interval '1 hour', $4)""",
            by_stop, city.tenant_id, bin_id, done + timedelta(minutes=5))
    await refresh_all(db, NOW)
    await refresh_all(db, NOW)
    assert [r["at"] for r in await _emptyings(db, city.tenant_id, "execute")] == [done]

    async with db.tenant_tx(city.tenant_id) as conn:
        assert await record_emptying(conn, city.tenant_id, bin_id, NOW, "stop", fill_before=85.0)
        assert not await record_emptying(conn, city.tenant_id, bin_id, NOW, "stop", fill_before=85.0)
    assert len(await _emptyings(db, city.tenant_id)) == 2


async def test_forecasts_use_own_history_then_district_then_city(db):
    city = await make_city(db, "seoul")
    other = await make_city(db, "busan")
    learned = await add_bin(db, city.principal, "learned")
    await write_fills(db, city.tenant_id, learned, START, 96, sawtooth(1.0, empty_at=70))
    await refresh_city(db, city.tenant_id, NOW)
    newcomer = await add_bin(db, city.principal, "newcomer")
    await write_fills(db, city.tenant_id, newcomer, NOW - timedelta(hours=2), 1, lambda h: 20.0)
    elsewhere = await add_bin(db, city.principal, "elsewhere", district="Mapo")
    await write_fills(db, city.tenant_id, elsewhere, NOW - timedelta(hours=2), 1, lambda h: 20.0)
    glass = await add_bin(db, city.principal, "glass", waste_kind="glass")
    gone = await add_bin(db, city.principal, "gone")
    async with db.system_tx() as conn:
        await conn.execute("update devices set status = 'decommissioned' where id = $1", gone)
        # Other bins without profiles would be learned on the spot; these two have a single reading.
    foreign = await add_bin(db, other.principal, "busan-bin")
    await write_fills(db, other.tenant_id, foreign, START, 96, sawtooth(3.0))

    async with db.tenant_tx(city.tenant_id) as conn:
        result = {f.device_id: f for f in await forecasts(conn, city.tenant_id, until=NOW + timedelta(hours=24),
                                                           now=NOW)}
    assert set(result) == {learned, newcomer, elsewhere, glass}
    own = result[learned]
    assert own.basis == "bin" and own.fill_now == sawtooth(1.0)(95) == 31.0
    # 31 % an hour and a half ago, 1 point an hour: 80 % in about 47.5 hours.
    assert own.hours_to_threshold == pytest.approx(47.5, abs=3)
    assert own.hours_to_threshold_low < own.hours_to_threshold < own.hours_to_threshold_high
    assert own.fill_until == pytest.approx(31 + 25.5, abs=3) and own.rate_per_hour == pytest.approx(1, abs=0.2)
    assert own.threshold_percent == 80 and own.last_emptied_at is not None
    assert [(result[b].basis, result[b].waste_kind) for b in (newcomer, elsewhere, glass)] == [
        ("district", "plastic"), ("city", "plastic"), ("none", "glass")]
    assert result[newcomer].hours_to_threshold == pytest.approx(62, abs=4)
    assert result[glass].hours_to_threshold is None and result[glass].fill_now is None

    async with db.tenant_tx(city.tenant_id) as conn:
        await conn.execute("insert into collection_settings (tenant_id, threshold_percent) values ($1, 50)",
                           city.tenant_id)
        only = await forecasts(conn, city.tenant_id, until=NOW + timedelta(hours=24), now=NOW,
                               device_ids=[learned, foreign])
    assert [f.device_id for f in only] == [learned] and only[0].hours_to_threshold == pytest.approx(17.5, abs=3)


async def test_a_bin_the_pass_has_not_reached_is_learned_on_the_spot(db):
    city = await make_city(db, "seoul")
    fresh = await add_bin(db, city.principal, "fresh")
    await write_fills(db, city.tenant_id, fresh, START, 96, sawtooth(1.0))
    async with db.tenant_tx(city.tenant_id) as conn:
        [forecast] = await forecasts(conn, city.tenant_id, until=NOW + timedelta(hours=24), now=NOW)
        assert await conn.fetchval("select count(*) from bin_fill_profiles") == 0
    assert forecast.basis == "bin" and forecast.hours_to_threshold == pytest.approx(47.5, abs=3)
