"""Fill forecasts over real HTTP and PostgreSQL: the city's bins with filters, `until` and pages,
one bin, the errors, and nothing of another city's bins."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import uuid4

import pytest

from fleet.collection.profiling import refresh_city
from tests.fleet.collection.forecast_helpers import add_bin, sawtooth, write_fills

FORECAST = "/api/v1/bins/forecast"
NOW = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)


async def _bins(db, city):
    start = NOW - timedelta(hours=96)
    jongno = await add_bin(db, city.principal, f"{city.slug}-jongno")
    mapo = await add_bin(db, city.principal, f"{city.slug}-mapo", district="Mapo", waste_kind="paper")
    for device_id, rate in ((jongno, 1.0), (mapo, 2.0)):
        await write_fills(db, city.tenant_id, device_id, start, 96, sawtooth(rate))
    await refresh_city(db, city.tenant_id, NOW)
    return jongno, mapo


async def test_the_city_s_bins_with_their_forecasts_filters_and_pages(db, seoul, busan):
    jongno, mapo = await _bins(db, seoul)
    theirs, _ = await _bins(db, busan)
    listed = await seoul.client.get(FORECAST)
    assert listed.status_code == 200, listed.text
    items = {i["device_id"]: i for i in listed.json()["items"]}
    assert set(items) == {str(jongno), str(mapo)} and listed.json()["next_cursor"] is None
    one = items[str(jongno)]
    assert (one["endpoint"], one["district"], one["waste_kind"], one["basis"]) == (
        "seoul-jongno", "Jongno", "plastic", "bin")
    assert one["fill_now"] == sawtooth(1.0)(95) and one["threshold_percent"] == 80
    assert one["hours_to_threshold_low"] < one["hours_to_threshold"] < one["hours_to_threshold_high"]
    assert one["fill_until"] == pytest.approx(one["fill_now"] + 25, abs=3)
    assert datetime.fromisoformat(one["until"]) - datetime.now(UTC) == pytest.approx(timedelta(hours=24),
                                                                                    abs=timedelta(minutes=5))

    paper = (await seoul.client.get(FORECAST, params={"waste_kind": "paper"})).json()["items"]
    assert [i["device_id"] for i in paper] == [str(mapo)]
    mapo_only = (await seoul.client.get(FORECAST, params={"district": "Mapo"})).json()["items"]
    assert [i["device_id"] for i in mapo_only] == [str(mapo)]
    later = (datetime.now(UTC) + timedelta(hours=48)).isoformat()
    far = (await seoul.client.get(FORECAST, params={"until": later})).json()["items"]
    assert {i["device_id"]: i for i in far}[str(jongno)]["fill_until"] > one["fill_until"]

    first = (await seoul.client.get(FORECAST, params={"limit": 1})).json()
    second = (await seoul.client.get(FORECAST, params={"limit": 1, "cursor": first["next_cursor"]})).json()
    assert len(first["items"]) == len(second["items"]) == 1 and second["next_cursor"] is None
    assert {first["items"][0]["device_id"], second["items"][0]["device_id"]} == {str(jongno), str(mapo)}

    assert str(theirs) not in {i["device_id"] for i in (await seoul.client.get(FORECAST)).json()["items"]}
    assert {i["device_id"] for i in (await busan.client.get(FORECAST)).json()["items"]} >= {str(theirs)}


@pytest.mark.parametrize("until", ["past", "far", "naive"])
async def test_until_must_be_ahead_within_two_weeks(seoul, until):
    value = {"past": datetime.now(UTC) - timedelta(hours=1),
             "far": datetime.now(UTC) + timedelta(days=15),
             "naive": datetime.now() + timedelta(hours=2)}[until].isoformat()
    response = await seoul.client.get(FORECAST, params={"until": value})
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert "until" in response.text


async def test_a_bad_cursor_is_refused(seoul):
    response = await seoul.client.get(FORECAST, params={"cursor": "nonsense"})
    assert response.status_code == 422 and "cursor" in response.text


async def test_one_bin_and_what_has_none(db, seoul, busan):
    jongno, _ = await _bins(db, seoul)
    theirs = await add_bin(db, busan.principal, "busan-bin")
    light = await add_bin(db, seoul.principal, "seoul-light", kind="streetlight")
    response = await seoul.client.get(f"/api/v1/devices/{jongno}/forecast",
                                      params={"until": (datetime.now(UTC) + timedelta(hours=6)).isoformat()})
    assert response.status_code == 200, response.text
    assert (response.json()["device_id"], response.json()["basis"]) == (str(jongno), "bin")
    assert response.json()["hours_to_full"] is not None
    assert (await seoul.client.get(f"/api/v1/devices/{theirs}/forecast")).status_code == 404
    assert (await seoul.client.get(f"/api/v1/devices/{uuid4()}/forecast")).status_code == 404
    not_a_bin = await seoul.client.get(f"/api/v1/devices/{light}/forecast")
    assert not_a_bin.status_code == 409 and "not a waste bin" in not_a_bin.text
