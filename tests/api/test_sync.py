"""Tablet sync over real HTTP: a full snapshot and a token, then every change after it, in commit
order — including a change committed late by a transaction that began early."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import UUID

from fleet.events.models import WORK_ORDER_UPDATED
from fleet.events.repository import EventRepository
from fleet.events.service import publish
from tests.api.workorder_helpers import add_crew, add_device, create_order, crew_client, patch_order

SYNC = "/api/v1/sync"


async def test_full_snapshot_then_changes_for_the_crew(db, seoul, api_url):
    north = await add_crew(seoul, "North team")
    south = await add_crew(seoul, "South team")
    lamp = await add_device(seoul, 1, 37.5, 127.0)
    ours = await create_order(seoul.client, device_ids=[lamp["id"]], crew_id=north["id"])
    theirs = await create_order(seoul.client, location={"lat": 37.6, "lon": 127.1}, crew_id=south["id"])
    async with await crew_client(db, seoul, north["id"], api_url) as tablet:
        full = await tablet.get(SYNC)
        assert full.status_code == 200, full.text
        body = full.json()
        assert [o["id"] for o in body["work_orders"]] == [ours["id"]]
        assert [d["id"] for d in body["devices"]] == [lamp["id"]] and body["more"] is False
        token = body["next"]

        nothing = (await tablet.get(SYNC, params={"since": token})).json()
        assert nothing["work_orders"] == [] and nothing["next"] == token

        # Changes: ours moves on (its device goes into maintenance); theirs changes too (not ours).
        ours = await patch_order(tablet, ours, status="in_progress")
        await patch_order(seoul.client, theirs, notes="not for the north team")
        changes = (await tablet.get(SYNC, params={"since": token})).json()
        assert [(o["id"], o["status"]) for o in changes["work_orders"]] == [(ours["id"], "in_progress")]
        assert [(d["id"], d["status"]) for d in changes["devices"]] == [(lamp["id"], "maintenance")]
        token = changes["next"]

        # Reassigned away: the tablet hears of it once, to drop it.
        await patch_order(seoul.client, ours, crew_id=south["id"])
        moved = (await tablet.get(SYNC, params={"since": token})).json()
        assert [(o["id"], o["crew_id"]) for o in moved["work_orders"]] == [(ours["id"], south["id"])]

        assert (await tablet.get(SYNC, params={"since": "yesterday"})).status_code == 422
    # Operators follow every work order.
    everything = (await seoul.client.get(SYNC)).json()
    assert {o["id"] for o in everything["work_orders"]} == {ours["id"], theirs["id"]}


async def test_a_change_committed_late_is_not_skipped(db, seoul):
    first = await create_order(seoul.client, location={"lat": 37.5, "lon": 127.0})
    second = await create_order(seoul.client, location={"lat": 37.6, "lon": 127.0})
    token = (await seoul.client.get(SYNC)).json()["next"]
    async with db.tenant_tx(seoul.tenant_id) as early:
        # This transaction takes its place in the log first, and commits last.
        await publish(early, seoul.tenant_id, WORK_ORDER_UPDATED, "work_order", UUID(first["id"]), {})
        await patch_order(seoul.client, second, notes="committed while the first is still open")
        meanwhile = (await seoul.client.get(SYNC, params={"since": token})).json()
        # The later commit waits behind the open one: handing it out now would move the token
        # past the first change.
        assert meanwhile["work_orders"] == [] and meanwhile["next"] == token
    after = (await seoul.client.get(SYNC, params={"since": token})).json()
    assert [o["id"] for o in after["work_orders"]] == [first["id"], second["id"]]
    assert (await seoul.client.get(SYNC, params={"since": after["next"]})).json()["work_orders"] == []


async def test_a_token_older_than_the_kept_history_gets_a_full_snapshot_to_start_over(db, seoul):
    order = await create_order(seoul.client, location={"lat": 37.5, "lon": 127.0})
    token = (await seoul.client.get(SYNC)).json()["next"]
    order = await patch_order(seoul.client, order, notes="changed while the tablet was away")
    async with db.system_tx() as conn:
        # Retention (fleet.scheduling.retention) forgets the change the tablet never saw.
        assert await EventRepository(conn).prune_before(datetime.now(UTC) + timedelta(days=1)) > 0
    answer = (await seoul.client.get(SYNC, params={"since": token})).json()
    assert answer["reset"] is True
    assert [(o["id"], o["notes"]) for o in answer["work_orders"]] == [(order["id"], order["notes"])]
    # A token this database never gave out: the same.
    assert (await seoul.client.get(SYNC, params={"since": f"{2**62}-1"})).json()["reset"] is True
    following = (await seoul.client.get(SYNC, params={"since": answer["next"]})).json()
    assert following["reset"] is False and following["work_orders"] == []
