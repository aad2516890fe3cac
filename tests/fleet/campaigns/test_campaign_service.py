"""CampaignService against a real PostgreSQL: who takes part, waves, and every status change people ask for."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from fleet.access.models import Role
from fleet.campaigns.models import CampaignRequest, CampaignSettings, DeviceState, Waves
from fleet.campaigns.repository import begin_running
from fleet.campaigns.service import CampaignService
from fleet.commands.models import Target
from fleet.errors import Conflict, PermissionDenied, ValidationFailed
from fleet.registry.models import DeviceFilter
from tests.conftest import make_city
from tests.fleet.campaigns.firmware_helpers import (add_devices, add_image, another_key, require_approval,
                                                    set_state, tamper)


@pytest.fixture
async def seoul(db):
    return await make_city(db, "seoul")


def request(image_id, device_ids=(), **settings) -> CampaignRequest:
    return CampaignRequest(image_id, Target(device_ids=tuple(device_ids)), CampaignSettings(**settings))


async def device_states(db, tenant_id, campaign_id) -> dict:
    async with db.tenant_tx(tenant_id) as conn:
        rows = await conn.fetch("""select device_id, state, wave, reason, attempt from firmware_campaign_devices
                                   where campaign_id = $1""", campaign_id)
    return {r["device_id"]: r for r in rows}


async def test_compatible_devices_take_part_and_the_rest_are_skipped_with_reasons(db, seoul):
    image = await add_image(db, seoul.tenant_id, "2.0.0", models=("SL-1",), manufacturers=("Acme",))
    fits = await add_devices(db, seoul.tenant_id, 3, prefix="fit")
    other_model = await add_devices(db, seoul.tenant_id, 1, prefix="other", model="SL-9")
    unknown_model = await add_devices(db, seoul.tenant_id, 1, prefix="unknown", model=None)
    current = await add_devices(db, seoul.tenant_id, 1, prefix="current", version="2.0.0")
    service = CampaignService(db)

    campaign = await service.create(seoul.principal, request(image, fits + other_model + unknown_model + current))
    assert campaign.status == "draft" and campaign.device_count == 3 and campaign.image_version == "2.0.0"
    assert campaign.counts["pending"] == 3 and campaign.counts["skipped"] == 3
    assert campaign.counts["succeeded"] == 0 and campaign.counts["failed"] == 0
    assert set(campaign.counts) == {"pending", "waiting", "downloading", "downloaded", "installing", "verifying",
                                    "succeeded", "failed", "cancelled", "skipped"}
    states = await device_states(db, seoul.tenant_id, campaign.id)
    assert {d: states[d]["reason"] for d in other_model + unknown_model + current} == {
        other_model[0]: "incompatible", unknown_model[0]: "incompatible", current[0]: "already_on_version"}
    skipped = await service.devices(seoul.principal, campaign.id, state=DeviceState.SKIPPED)
    assert all(d.detail for d in skipped.items) and {d.endpoint for d in skipped.items} == {
        "other-1", "unknown-1", "current-1"}


async def test_targets_by_group_and_by_filter(db, seoul):
    image = await add_image(db, seoul.tenant_id)
    ids = await add_devices(db, seoul.tenant_id, 4, prefix="g")
    async with db.system_tx() as conn:
        group = await conn.fetchval("insert into device_groups (tenant_id, name) values ($1, 'night') returning id",
                                    seoul.tenant_id)
        await conn.execute("insert into device_group_members (tenant_id, group_id, device_id) select $1, $2, unnest($3::uuid[])",
                           seoul.tenant_id, group, ids[:2])
        await conn.execute("update devices set district = 'Mapo-gu' where id = $1", ids[3])
    service = CampaignService(db)
    by_group = await service.create(seoul.principal, CampaignRequest(image, Target(group_id=group), CampaignSettings()))
    assert by_group.device_count == 2 and by_group.target == {"group_id": str(group)}
    by_filter = await service.create(seoul.principal, CampaignRequest(
        image, Target(filter=DeviceFilter(district="Mapo-gu")), CampaignSettings()))
    assert by_filter.device_count == 1 and by_filter.target == {"filter": {"district": "Mapo-gu"}}


async def test_one_active_campaign_per_device(db, seoul):
    image = await add_image(db, seoul.tenant_id)
    ids = await add_devices(db, seoul.tenant_id, 3, prefix="busy")
    service = CampaignService(db)
    first = await service.create(seoul.principal, request(image, ids[:2]))
    with pytest.raises(Conflict) as refused:
        await service.create(seoul.principal, request(image, ids[1:]))
    assert str(ids[1]) in refused.value.detail and str(first.id) in refused.value.detail
    assert len((await service.list(seoul.principal)).items) == 1  # nothing of the refused one stays
    await service.delete(seoul.principal, first.id)
    assert (await service.create(seoul.principal, request(image, ids[1:]))).device_count == 2


async def test_two_campaigns_at_once_on_the_same_devices_one_wins(db, seoul):
    image = await add_image(db, seoul.tenant_id)
    ids = await add_devices(db, seoul.tenant_id, 50, prefix="race")
    service = CampaignService(db)
    # However the two interleave (the check, or the unique index under it), exactly one is refused.
    results = await asyncio.gather(service.create(seoul.principal, request(image, ids)),
                                   service.create(seoul.principal, request(image, ids[::-1])),
                                   return_exceptions=True)
    assert sorted(type(r).__name__ for r in results) == ["Campaign", "Conflict"]
    assert len((await service.list(seoul.principal)).items) == 1


async def test_waves_canary_one_percent_then_times_four_in_a_stable_order(db, seoul):
    image = await add_image(db, seoul.tenant_id)
    # The bench's city: 10,000 streetlights, taken in a few statements.
    ids = await add_devices(db, seoul.tenant_id, 10_000, prefix="w")
    service = CampaignService(db)
    campaign = await service.create(seoul.principal, CampaignRequest(image, Target(filter=DeviceFilter()),
                                                                     CampaignSettings()))
    assert campaign.wave_count == 5 and campaign.device_count == 10_000
    assert [w["devices"] for w in campaign.waves] == [100, 400, 1600, 6400, 1500]
    first = {d: r["wave"] for d, r in (await device_states(db, seoul.tenant_id, campaign.id)).items()}
    assert sorted(Counter(first.values()).items()) == [(0, 100), (1, 400), (2, 1600), (3, 6400), (4, 1500)]
    # Not creation order, and the same order again for the same campaign and devices.
    assert [first[d] for d in ids[:10]] != [0] * 10
    async with db.tenant_tx(seoul.tenant_id) as conn:
        again = await conn.fetch("""select d.id from unnest($1::uuid[]) d (id)
                                    order by md5($2::text || d.id::text)""", ids, str(campaign.id))
    assert [first[r["id"]] for r in again] == sorted(first.values())

    fixed = await service.create(seoul.principal, request(image, await add_devices(db, seoul.tenant_id, 25, prefix="f"),
                                                          waves=Waves(canary=5, size=10)))
    assert [w["devices"] for w in fixed.waves] == [5, 10, 10]


async def test_settings_rules_and_unknown_images_are_422(db, seoul):
    ids = await add_devices(db, seoul.tenant_id, 1, prefix="x")
    service = CampaignService(db)
    image = await add_image(db, seoul.tenant_id)
    with pytest.raises(ValidationFailed) as bad:
        await service.create(seoul.principal, request(image, ids, waves=Waves(canary=1, canary_percent=2.0, growth=2.0)))
    assert bad.value.errors[0].field == "waves"
    busan = await make_city(db, "busan")
    foreign = await add_image(db, busan.tenant_id)
    with pytest.raises(ValidationFailed) as unknown:
        await service.create(seoul.principal, request(foreign, ids))
    assert unknown.value.errors[0].field == "image_id"


async def test_start_runs_the_canary_and_the_timeline_records_it(db, seoul):
    image = await add_image(db, seoul.tenant_id)
    ids = await add_devices(db, seoul.tenant_id, 30, prefix="s")
    service = CampaignService(db)
    campaign = await service.create(seoul.principal, request(image, ids))
    started = await service.start(seoul.principal, campaign.id)
    assert started.status == "running" and started.current_wave == 0 and started.started_at is not None
    assert started.counts["waiting"] == 1 and started.counts["pending"] == 29
    assert started.version == campaign.version + 1
    canary = (await service.devices(seoul.principal, campaign.id, state=DeviceState.WAITING)).items[0]
    timeline = await service.device(seoul.principal, campaign.id, canary.device_id)
    assert [s.state for s in timeline.timeline] == ["pending", "waiting"]
    with pytest.raises(Conflict):
        await service.start(seoul.principal, campaign.id)
    # Each change published the campaign as the API shows it, counts included.
    async with db.tenant_tx(seoul.tenant_id) as conn:
        events = await conn.fetch("""select kind, payload from events where subject_type = 'campaign'
                                     and subject_id = $1 order by id""", str(campaign.id))
    assert [e["kind"] for e in events] == ["campaign.updated", "campaign.updated"]
    assert [(e["payload"]["status"], e["payload"]["counts"]["waiting"]) for e in events] == [
        ("draft", 0), ("running", 1)]


async def test_a_tampered_image_does_not_start(db, seoul):
    image = await add_image(db, seoul.tenant_id)
    campaign = await CampaignService(db).create(seoul.principal, request(image, await add_devices(
        db, seoul.tenant_id, 2, prefix="t")))
    await tamper(db, seoul.tenant_id, image)
    with pytest.raises(ValidationFailed):
        await CampaignService(db).start(seoul.principal, campaign.id)
    assert (await CampaignService(db).get(seoul.principal, campaign.id)).status == "draft"


async def test_approval_by_a_second_admin_then_a_scheduled_start(db, seoul):
    await require_approval(db, seoul.tenant_id)
    image = await add_image(db, seoul.tenant_id)
    ids = await add_devices(db, seoul.tenant_id, 3, prefix="a")
    service = CampaignService(db)
    operator, _ = await another_key(db, seoul.tenant_id, Role.OPERATOR, "operator")
    second, _ = await another_key(db, seoul.tenant_id, Role.ADMIN, "second admin")
    third, _ = await another_key(db, seoul.tenant_id, Role.ADMIN, "third admin")
    start_at = datetime.now(UTC) + timedelta(hours=2)
    campaign = await service.create(seoul.principal, CampaignRequest(
        image, Target(device_ids=tuple(ids)), CampaignSettings(), start_at=start_at))
    waiting = await service.start(second, campaign.id)
    assert waiting.status == "awaiting_approval" and waiting.counts["pending"] == 3
    for same in (seoul.principal, second):  # the creator, the starter
        with pytest.raises(Conflict, match="second admin"):
            await service.approve(same, campaign.id)
    with pytest.raises(PermissionDenied):
        await service.approve(operator, campaign.id)
    scheduled = await service.approve(third, campaign.id)
    assert scheduled.status == "scheduled" and scheduled.approved_by == third.api_key_id
    assert scheduled.counts["pending"] == 3 and scheduled.started_at is None
    # At start_at the engine begins it.
    async with db.tenant_tx(seoul.tenant_id) as conn:
        assert await begin_running(conn, seoul.tenant_id, campaign.id)
        assert not await begin_running(conn, seoul.tenant_id, campaign.id)
    running = await service.get(seoul.principal, campaign.id)
    assert running.status == "running" and running.counts["waiting"] == 1


async def test_pause_resume_abort(db, seoul):
    image = await add_image(db, seoul.tenant_id)
    ids = await add_devices(db, seoul.tenant_id, 8, prefix="p")
    service = CampaignService(db)
    campaign = await service.start(seoul.principal, (await service.create(seoul.principal, request(
        image, ids, waves=Waves(canary=8, size=1)))).id)
    paused = await service.pause(seoul.principal, campaign.id)
    assert paused.status == "paused" and paused.status_reason == "paused by seoul test key"
    await set_state(db, seoul.tenant_id, campaign.id, ids[:2], "failed", "install_failed")
    await set_state(db, seoul.tenant_id, campaign.id, ids[2:3], "succeeded")
    resumed = await service.resume(seoul.principal, campaign.id)
    assert resumed.status == "running" and resumed.status_reason is None
    async with db.tenant_tx(seoul.tenant_id) as conn:
        baseline = await conn.fetchrow("select baseline_succeeded, baseline_failed from firmware_campaigns where id = $1",
                                       campaign.id)
    assert tuple(baseline) == (1, 2)
    assert resumed.expected_finish is not None  # three ended since the start

    for device, state in zip(ids[3:], ("downloading", "downloaded", "installing", "verifying")):
        await set_state(db, seoul.tenant_id, campaign.id, [device], state)
    aborted = await service.abort(seoul.principal, campaign.id)
    assert aborted.status == "aborted" and aborted.status_reason == "aborted by seoul test key"
    states = await device_states(db, seoul.tenant_id, campaign.id)
    assert [states[d]["state"] for d in ids] == ["failed", "failed", "succeeded", "cancelled", "cancelled",
                                                 "installing", "verifying", "cancelled"]
    assert states[ids[3]]["reason"] == "aborted"
    with pytest.raises(Conflict):
        await service.resume(seoul.principal, campaign.id)


async def test_retry_failed_devices_and_cancel_pending_ones(db, seoul):
    image = await add_image(db, seoul.tenant_id)
    ids = await add_devices(db, seoul.tenant_id, 4, prefix="r")
    service = CampaignService(db)
    campaign = await service.start(seoul.principal, (await service.create(seoul.principal, request(
        image, ids, waves=Waves(canary=2, size=2)))).id)
    waiting = [d.device_id for d in (await service.devices(seoul.principal, campaign.id, wave=0)).items]
    pending = [d.device_id for d in (await service.devices(seoul.principal, campaign.id, wave=1)).items]
    await set_state(db, seoul.tenant_id, campaign.id, waiting, "failed", "integrity")
    async with db.system_tx() as conn:
        await conn.execute("update firmware_campaigns set status = 'completed', current_wave = 1 where id = $1",
                           campaign.id)
    # One failed device meanwhile joined another campaign: the retry says which.
    other = await service.create(seoul.principal, request(image, waiting[:1]))
    with pytest.raises(Conflict) as busy:
        await service.retry(seoul.principal, campaign.id)
    assert str(waiting[0]) in busy.value.detail and str(other.id) in busy.value.detail
    await service.delete(seoul.principal, other.id)

    retried = await service.retry(seoul.principal, campaign.id)
    assert retried.status == "running" and retried.counts["failed"] == 0 and retried.counts["waiting"] == 2
    states = await device_states(db, seoul.tenant_id, campaign.id)
    assert all((states[d]["wave"], states[d]["attempt"], states[d]["reason"]) == (1, 1, None) for d in waiting)
    with pytest.raises(Conflict, match="no failed devices"):
        await service.retry(seoul.principal, campaign.id)

    one = await service.cancel(seoul.principal, campaign.id, [pending[0]])
    assert one.counts["cancelled"] == 1
    rest = await service.cancel(seoul.principal, campaign.id)
    assert rest.counts["cancelled"] == 4 and rest.counts["pending"] == rest.counts["waiting"] == 0
    assert (await device_states(db, seoul.tenant_id, campaign.id))[pending[0]]["reason"] == "cancelled"


async def test_delete_only_drafts_and_viewers_only_read(db, seoul):
    image = await add_image(db, seoul.tenant_id)
    ids = await add_devices(db, seoul.tenant_id, 2, prefix="d")
    service = CampaignService(db)
    viewer, _ = await another_key(db, seoul.tenant_id, Role.VIEWER, "viewer")
    with pytest.raises(PermissionDenied):
        await service.create(viewer, request(image, ids))
    campaign = await service.create(seoul.principal, request(image, ids))
    assert (await service.get(viewer, campaign.id)).id == campaign.id
    await service.start(seoul.principal, campaign.id)
    with pytest.raises(Conflict):
        await service.delete(seoul.principal, campaign.id)
    with pytest.raises(PermissionDenied):
        await service.pause(viewer, campaign.id)


async def test_settings_that_would_make_too_many_waves_are_refused(db, seoul, monkeypatch):
    from fleet.campaigns import service as campaign_service
    monkeypatch.setattr(campaign_service, "MAX_WAVES", 3)
    image = await add_image(db, seoul.tenant_id)
    ids = await add_devices(db, seoul.tenant_id, 5, prefix="w")
    with pytest.raises(ValidationFailed) as refused:
        await CampaignService(db).create(seoul.principal, request(image, ids, waves=Waves(canary=1, size=1)))
    assert refused.value.errors[0].field == "waves" and "make 5 waves; at most 3" in refused.value.errors[0].message
    taken = await CampaignService(db).create(seoul.principal, request(image, ids, waves=Waves(canary=1, size=2)))
    assert taken.wave_count == 3
