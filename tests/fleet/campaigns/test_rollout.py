"""The rollout engine against PostgreSQL: devices simulated by writing what they would write."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
from zoneinfo import ZoneInfo

import pytest

from fleet.alarms.service import AlarmService
from fleet.campaigns.rollout import CampaignJobs
from fleet.commands.models import Outcome
from fleet.commands.repository import CommandRepository
from fleet.scheduling.leader import Leadership, NotLeader
from tests.conftest import make_city
from tests.fleet.campaigns.firmware_helpers import tamper
from tests.fleet.campaigns.rollout_env import BASE, SECURE_BASE, Rollout

SEOUL = ZoneInfo("Asia/Seoul")
QUICK = {"health_period_s": 0}


@pytest.fixture
async def rollout(db):
    city = await make_city(db, "fwcity")
    rollout = Rollout(db, city.tenant_id, alarm_service=AlarmService(db))
    rollout.city = city
    return rollout


async def test_a_device_registered_over_coaps_downloads_over_coaps(rollout, db):
    plain, secure = await rollout.campaign([0, 0], **QUICK)
    async with db.system_tx() as conn:
        await conn.execute("update registrations set secure = true where device_id = $1", secure)
    await rollout.start()
    await rollout.tick()
    for device in (plain, secure):
        await rollout.report(device, "/5/0/9", 0)
        await rollout.answer(device)
    await rollout.tick()
    assert (await rollout.device(plain))["value"].startswith(f"{BASE}/fw/")
    assert (await rollout.device(secure))["value"].startswith(f"{SECURE_BASE}/fw/")


async def installing(rollout, device, method: int = 0, *, taken: bool = True) -> None:
    await rollout.tick()
    await rollout.downloaded(device, method)
    await rollout.tick()
    assert await rollout.state(device) == "installing"
    if taken:
        await rollout.taken(device)  # the Update went out: the device may come back from now


@pytest.mark.parametrize(("method", "operation", "path"), [
    (0, "write", "/5/0/1"), (1, "push_firmware", "/5/0/0"), (2, "write", "/5/0/1")])
async def test_a_device_is_updated_by_the_method_it_offers(rollout, method, operation, path):
    (device,) = await rollout.campaign([0], **QUICK)
    await rollout.start()
    await rollout.tick()
    row = await rollout.device(device)
    assert (row["state"], row["operation"], row["path"]) == ("downloading", "observe", "/5/0")
    await rollout.report(device, "/5/0/9", method)
    await rollout.answer(device)
    await rollout.tick()
    row = await rollout.device(device)
    assert (row["operation"], row["path"]) == (operation, path)
    if operation == "write":
        uri = row["value"]
        assert uri.startswith(f"{BASE}/fw/")
        assert hashlib.sha256(uri.rsplit("/", 1)[1].encode()).digest() == row["token_hash"]
        # Only the device's own command holds its token, never the batch people list.
        async with rollout.db.system_tx() as conn:
            assert await conn.fetchval("select b.value from command_batches b join commands c on c.batch_id = b.id "
                                       "where c.id = $1", row["command_id"]) is None
    else:
        assert row["value"] == {"image_id": str(rollout.image_id)} and row["token_hash"] is None
    await rollout.answer(device)
    await rollout.report(device, "/5/0/3", 2)
    await rollout.tick()
    row = await rollout.device(device)
    assert (row["state"], row["operation"], row["path"], row["token_hash"]) == (
        "installing", "execute", "/5/0/2", None)
    assert all(c["origin"] == f"firmware:{rollout.campaign_id}" for c in await rollout.commands(device))
    await rollout.answer(device)
    await rollout.register_again(device, "2.0")
    await rollout.tick()
    assert await rollout.state(device) == "verifying"
    await rollout.tick()
    assert await rollout.state(device) == "succeeded"
    campaign = await rollout.campaign_row()
    assert campaign["status"] == "completed" and campaign["finished_at"] is not None


async def test_a_device_that_ended_is_observed_no_longer(rollout):
    """The /5/0 observation of the download (renewed at each Register) ends with the device's
    campaign, or every device ever updated would keep one in the listener for good."""
    succeeding, failing = await rollout.campaign([0, 0], **QUICK)
    await rollout.start()
    await installing(rollout, succeeding)
    await rollout.answer(succeeding)
    await rollout.register_again(succeeding, "2.0")
    await rollout.tick()
    await rollout.answer(failing, False, "device does not support observing this path")
    await rollout.tick()
    await rollout.answer(failing, False, "device answered 4.04 Not Found: no /5")
    await rollout.tick(2)
    assert await rollout.states([succeeding, failing]) == ["succeeded", "failed"]
    for device in (succeeding, failing):
        cancels = [c for c in await rollout.commands(device, "/5/0") if c["operation"] == "cancel_observe"]
        assert len(cancels) == 1 and cancels[0]["origin"] == f"firmware:{rollout.campaign_id}"
    # the step remembered is still the last one the device took, not the cancel
    assert (await rollout.device(succeeding))["operation"] == "execute"


async def test_a_device_that_does_not_observe_is_read_and_polled(rollout):
    (device,) = await rollout.campaign([0], **QUICK)
    await rollout.start()
    await rollout.tick()
    await rollout.answer(device, False, "device does not support observing this path")
    await rollout.tick()
    row = await rollout.device(device)
    assert (row["operation"], row["path"], row["observing"]) == ("read", "/5/0", False)
    await rollout.report(device, "/5/0/9", 0)
    await rollout.answer(device)
    await rollout.tick()
    await rollout.answer(device)
    await rollout.tick()
    assert {c["path"] for c in await rollout.commands(device)} >= {"/5/0/3", "/5/0/5"}


async def test_a_device_without_object_5_is_refused(rollout):
    (device,) = await rollout.campaign([0], **QUICK)
    await rollout.start()
    await rollout.tick()
    await rollout.answer(device, False, "device does not support observing this path")
    await rollout.tick()
    await rollout.answer(device, False, "device answered 4.04 Not Found: no /5")
    await rollout.tick()
    row = await rollout.device(device)
    assert (row["state"], row["reason"], row["detail"]) == ("failed", "device_refused",
                                                            "device answered 4.04 Not Found: no /5")


async def test_no_more_devices_download_at_once_than_the_campaign_allows(rollout):
    devices = await rollout.campaign([0] * 5, concurrency=2, **QUICK)
    await rollout.start()
    await rollout.tick(2)
    assert sorted(await rollout.states(devices)) == ["downloading"] * 2 + ["waiting"] * 3
    downloading = [d for d in devices if await rollout.state(d) == "downloading"]
    await rollout.downloaded(downloading[0])
    await rollout.tick()
    assert sorted(await rollout.states(devices)) == ["downloading"] * 2 + ["installing"] + ["waiting"] * 2


async def test_the_update_waits_for_the_maintenance_window(rollout):
    (device,) = await rollout.campaign([0], window={"start": "01:00", "end": "05:00"}, **QUICK)
    await rollout.start()
    yesterday = dt.datetime.now(SEOUL).date() - dt.timedelta(days=1)
    rollout.clock.at(dt.datetime.combine(yesterday, dt.time(12), SEOUL))
    await rollout.tick()
    await rollout.downloaded(device)
    await rollout.tick(2)
    assert await rollout.state(device) == "downloaded"
    assert not await rollout.commands(device, "/5/0/2")
    rollout.clock.at(dt.datetime.combine(yesterday, dt.time(2), SEOUL))
    await rollout.tick()
    assert await rollout.state(device) == "installing"


async def test_the_citys_window_applies_when_the_campaign_has_none(rollout, db):
    (device,) = await rollout.campaign([0], **QUICK)
    async with db.system_tx() as conn:
        await conn.execute("insert into maintenance_windows (tenant_id, starts, ends) values ($1, '22:00', '04:00')",
                           rollout.tenant_id)
    await rollout.start()
    yesterday = dt.datetime.now(SEOUL).date() - dt.timedelta(days=1)
    rollout.clock.at(dt.datetime.combine(yesterday, dt.time(12), SEOUL))
    await rollout.tick()
    await rollout.downloaded(device)
    await rollout.tick()
    assert await rollout.state(device) == "downloaded"
    rollout.clock.at(dt.datetime.combine(yesterday, dt.time(3), SEOUL))  # after midnight
    await rollout.tick()
    assert await rollout.state(device) == "installing"


async def test_each_device_is_told_to_install_exactly_once(rollout, db):
    devices = await rollout.campaign([0] * 3, **QUICK)
    await rollout.start()
    await rollout.tick()
    for device in devices:
        await rollout.report(device, "/5/0/9", 0)
        await rollout.answer(device)
    await rollout.tick()
    for device in devices:
        await rollout.answer(device)
        await rollout.report(device, "/5/0/3", 2)
    other = CampaignJobs(db, download_base_uri=BASE)
    await asyncio.gather(rollout.jobs.tick(), other.tick(), rollout.jobs.tick(), other.tick())
    await rollout.tick()
    for device in devices:
        assert len(await rollout.commands(device, "/5/0/2")) == 1
        assert await rollout.state(device) == "installing"


async def test_a_node_dying_mid_update_never_sends_it_again(rollout, db):
    (device,) = await rollout.campaign([0], **QUICK)
    await rollout.start()
    await installing(rollout, device)
    async with db.system_tx() as conn:
        # The node that sent it is gone (a stale `sent`, whatever its age).
        await CommandRepository(conn).recover_stale(dt.timedelta(0))
    (execute,) = await rollout.commands(device, "/5/0/2")
    assert (execute["status"], execute["error"]) == ("failed", "outcome unknown after a node stopped")
    await rollout.tick()
    assert await rollout.state(device) == "installing"  # waits for the device to come back
    await rollout.register_again(device, "2.0")
    await rollout.tick()
    assert await rollout.state(device) == "verifying"


async def test_a_device_back_on_its_old_version_rolled_back(rollout):
    (device,) = await rollout.campaign([0], **QUICK)
    await rollout.start()
    await installing(rollout, device)
    await rollout.answer(device)
    await rollout.register_again(device, "1.0")
    await rollout.tick()
    row = await rollout.device(device)
    assert (row["state"], row["reason"]) == ("failed", "rolled_back")


async def test_a_device_back_on_its_old_version_is_judged_by_its_update_result(rollout):
    devices = await rollout.campaign([0, 0], **QUICK)
    await rollout.start()
    for device in devices:
        await installing(rollout, device)
        await rollout.answer(device)
        await rollout.register_again(device, "1.0", result=None)
    await rollout.tick()
    assert [await rollout.state(d) for d in devices] == ["installing", "installing"]
    await rollout.report(devices[0], "/5/0/5", 8)
    rollout.clock.offset = dt.timedelta(seconds=6)  # the other never says
    await rollout.tick()
    assert [((row := await rollout.device(d))["state"], row["reason"]) for d in devices] == [
        ("failed", "install_failed"), ("failed", "rolled_back")]


async def test_a_device_whose_version_was_unknown_when_its_download_began_still_rolls_back(rollout, db):
    # `fleet demo` starts its campaign before its devices first register: the version a device
    # runs is learnt from its Register during the download, before the install.
    (device,) = await rollout.campaign([0], old=None, **QUICK)
    await rollout.start()
    await rollout.tick()
    assert (await rollout.device(device))["previous_version"] is None
    async with db.system_tx() as conn:
        await conn.execute("update devices set firmware_version = '1.0' where id = $1", device)
    await rollout.downloaded(device)
    await rollout.tick()
    assert await rollout.state(device) == "installing"
    await rollout.answer(device)
    await rollout.register_again(device, "1.0")
    await rollout.tick()
    row = await rollout.device(device)
    assert (row["state"], row["reason"], row["previous_version"]) == ("failed", "rolled_back", "1.0")


async def test_a_device_that_never_comes_back_fails(rollout):
    (device,) = await rollout.campaign([0], timeouts={"install_s": 60}, **QUICK)
    await rollout.start()
    await installing(rollout, device, taken=False)
    rollout.clock.offset = dt.timedelta(seconds=61)
    await rollout.tick()
    row = await rollout.device(device)
    assert (row["state"], row["reason"]) == ("failed", "never_came_back")
    assert "never reached it" in row["detail"]  # its Execute was still queued: called off
    (execute,) = await rollout.commands(device, "/5/0/2")
    assert execute["status"] == "cancelled"


async def test_a_sleeping_device_keeps_its_update_until_it_wakes(rollout):
    (device,) = await rollout.campaign([0], timeouts={"install_s": 60}, **QUICK)
    async with rollout.db.system_tx() as conn:
        await conn.execute("update registrations set binding = 'UQ' where device_id = $1", device)
    await rollout.start()
    await installing(rollout, device, taken=False)  # asleep: no dispatcher could send it yet
    rollout.clock.offset = dt.timedelta(seconds=61)
    await rollout.tick()
    assert await rollout.state(device) == "installing"
    (execute,) = await rollout.commands(device, "/5/0/2")
    assert execute["status"] == "queued"
    assert execute["expires_at"] - execute["created_at"] >= dt.timedelta(hours=24)


async def test_a_refused_update_failed_to_install(rollout):
    (device,) = await rollout.campaign([0], **QUICK)
    await rollout.start()
    await installing(rollout, device)
    await rollout.answer(device, False, "device answered 4.05 Method Not Allowed: not downloaded")
    await rollout.tick()
    row = await rollout.device(device)
    assert (row["state"], row["reason"]) == ("failed", "install_failed")
    assert "4.05" in row["detail"]


@pytest.mark.parametrize(("code", "reason"), [
    (2, "out_of_storage"), (3, "out_of_memory"), (4, "download_failed"), (5, "integrity"),
    (6, "unsupported_package"), (7, "invalid_uri"), (8, "install_failed"), (9, "unsupported_protocol"),
    (42, "install_failed")])
async def test_every_update_result_names_its_reason(rollout, code, reason):
    (device,) = await rollout.campaign([0], **QUICK)
    await rollout.start()
    await rollout.tick()
    await rollout.report(device, "/5/0/9", 0)
    await rollout.answer(device)
    await rollout.tick()
    await rollout.answer(device)
    await rollout.report(device, "/5/0/5", code)
    await rollout.tick()
    row = await rollout.device(device)
    assert (row["state"], row["reason"], row["detail"]) == ("failed", reason, f"Update Result {code}")


async def test_an_install_failure_reported_by_the_device(rollout):
    (device,) = await rollout.campaign([0], **QUICK)
    await rollout.start()
    await installing(rollout, device)
    await rollout.report(device, "/5/0/5", 8)
    await rollout.tick()
    assert (await rollout.device(device))["reason"] == "install_failed"


async def test_success_counts_after_a_healthy_health_period(rollout):
    (device,) = await rollout.campaign([0], health_period_s=60)
    await rollout.start()
    await installing(rollout, device)
    await rollout.register_again(device, "2.0")
    await rollout.tick()
    assert await rollout.state(device) == "verifying"
    await rollout.tick()
    assert await rollout.state(device) == "verifying"
    await rollout.report(device, "/3/0/7", 3300)
    rollout.clock.offset = dt.timedelta(seconds=61)
    await rollout.tick()
    assert await rollout.state(device) == "succeeded"


async def test_a_critical_alarm_in_the_health_period_is_unhealthy(rollout, db):
    (device,) = await rollout.campaign([0], health_period_s=60)
    await rollout.start()
    await installing(rollout, device)
    await rollout.register_again(device, "2.0")
    await rollout.tick()
    await rollout.report(device, "/3/0/7", 3300)
    async with db.system_tx() as conn:
        await conn.execute(
            """insert into alarms (tenant_id, device_id, type, severity, first_seen, last_seen)
               values ($1, $2, 'lamp_failure', 'critical', now(), now())""", rollout.tenant_id, device)
    rollout.clock.offset = dt.timedelta(seconds=61)
    await rollout.tick()
    row = await rollout.device(device)
    assert (row["state"], row["reason"], row["detail"]) == (
        "failed", "unhealthy", "a critical alarm since it came back")


async def test_a_failed_update_raises_an_alarm(rollout, db):
    (device,) = await rollout.campaign([0], **QUICK)
    await rollout.start()
    await installing(rollout, device)
    await rollout.register_again(device, "1.0")
    await rollout.tick()
    async with db.system_tx() as conn:
        alarm = await conn.fetchrow("select * from alarms where device_id = $1 and type = 'firmware_update_failed'",
                                    device)
        events = await conn.fetch("select kind, payload from events where kind like 'campaign.%' order by id")
    assert alarm["status"] == "active" and alarm["detail"].startswith("rolled_back")
    assert {"campaign.device_updated", "campaign.updated"} <= {e["kind"] for e in events}
    last = [e["payload"] for e in events if e["kind"] == "campaign.updated"][-1]
    assert (last["status"], last["counts"]["failed"], last["current_wave"]) == ("completed", 1, 0)
    ended = [e["payload"] for e in events if e["kind"] == "campaign.device_updated"]
    assert [(e["device_id"], e["state"], e["reason"]) for e in ended] == [(str(device), "failed", "rolled_back")]
    assert (await rollout.device(device))["alarm_todo"] is None


async def two_succeed(rollout, devices) -> None:
    for device in devices:
        await installing(rollout, device)
        await rollout.register_again(device, "2.0")
    await rollout.tick(2)


async def test_a_successful_canary_opens_the_next_wave(rollout):
    devices = await rollout.campaign([0, 1, 1], **QUICK)
    await rollout.start()
    assert await rollout.states(devices) == ["waiting", "pending", "pending"]
    await two_succeed(rollout, devices[:1])
    assert (await rollout.campaign_row())["current_wave"] == 1
    assert await rollout.states(devices) == ["succeeded", "waiting", "waiting"]
    await rollout.tick()
    assert await rollout.states(devices) == ["succeeded", "downloading", "downloading"]


async def test_a_wave_that_ended_below_its_success_threshold_says_so(rollout):
    # A canary device failed, under the error threshold: the campaign runs on but opens nothing
    # more, and tells the control room why instead of looking busy.
    devices = await rollout.campaign([0, 0, 1], **QUICK)
    await rollout.start()
    await two_succeed(rollout, devices[:1])
    assert (await rollout.campaign_row())["status_reason"] is None
    await installing(rollout, devices[1])
    await rollout.register_again(devices[1], "1.0")
    await rollout.tick(2)
    campaign = await rollout.campaign_row()
    assert (campaign["status"], campaign["current_wave"]) == ("running", 0)
    assert campaign["status_reason"] == ("wave 0 ended below its success threshold: 1 of 2 succeeded "
                                         "(50 % < 95 %); retry its failed devices or abort")
    assert await rollout.state(devices[2]) == "pending"


@pytest.mark.parametrize(("on_error", "status"), [("pause", "paused"), ("abort", "aborted")])
async def test_the_error_threshold_stops_the_campaign_by_itself(rollout, db, on_error, status):
    devices = await rollout.campaign([0, 0, 1], thresholds={
        "error_min_count": 2, "error_percent": 50, "on_error": on_error}, **QUICK)
    await rollout.start()
    for device in devices[:2]:
        await installing(rollout, device)
        await rollout.register_again(device, "1.0")
    await rollout.tick()
    campaign = await rollout.campaign_row()
    assert campaign["status"] == status
    assert campaign["status_reason"] == "error threshold: 2 of 2 ended devices failed (100 % >= 50 %)"
    assert await rollout.state(devices[2]) == ("pending" if on_error == "pause" else "cancelled")
    async with db.system_tx() as conn:
        audited = await conn.fetchrow("select actor, entity_type from audit_log where action = $1",
                                      f"campaign.{on_error}")
        subjects = {r["subject_type"] for r in await conn.fetch(
            "select subject_type from events where kind like 'campaign.%'")}
    # Named as the API's own changes of a campaign are (`campaign.pause` by a person, same entity).
    assert (audited["actor"], audited["entity_type"]) == ("system:firmware-rollout", "campaign")
    assert subjects == {"campaign"}


async def test_a_scheduled_campaign_starts_at_its_time(rollout):
    (device,) = await rollout.campaign([0], status="scheduled",
                                       start_at=dt.datetime.now(dt.UTC) + dt.timedelta(minutes=5), **QUICK)
    await rollout.tick()
    assert await rollout.state(device) == "pending"
    rollout.clock.offset = dt.timedelta(minutes=6)
    await rollout.tick()
    assert (await rollout.campaign_row())["status"] == "running"
    await rollout.tick()
    assert await rollout.state(device) == "downloading"


async def test_a_scheduled_start_checks_the_image_again_and_refuses_a_tampered_one(rollout, db):
    (device,) = await rollout.campaign([0], status="scheduled",
                                       start_at=dt.datetime.now(dt.UTC) + dt.timedelta(minutes=5), **QUICK)
    await tamper(db, rollout.tenant_id, rollout.image_id)
    rollout.clock.offset = dt.timedelta(minutes=6)
    await rollout.tick(2)
    campaign = await rollout.campaign_row()
    assert campaign["status"] == "draft" and "SHA-256" in campaign["status_reason"]
    assert await rollout.state(device) == "pending" and not await rollout.commands(device)


async def test_a_deposed_leaders_pass_changes_nothing(rollout, db):
    (device,) = await rollout.campaign([0], **QUICK)
    await rollout.start()
    async with db.system_tx() as conn:
        epoch = await conn.fetchval("update scheduler_leadership set epoch = epoch + 1 returning epoch")
    with pytest.raises(NotLeader):
        await rollout.jobs.tick(Leadership("old", epoch - 1, None))
    assert await rollout.state(device) == "waiting" and not await rollout.commands(device)
    await rollout.jobs.tick(Leadership("new", epoch, None))
    assert await rollout.state(device) == "downloading"


async def test_the_leader_runs_passes_until_its_term_ends(rollout, db):
    (device,) = await rollout.campaign([0], **QUICK)
    await rollout.start()
    async with db.system_tx() as conn:
        epoch = await conn.fetchval("select epoch from scheduler_leadership")
    async with db.pool.acquire() as conn:
        async with rollout.jobs.lead(Leadership("n", epoch, conn)):
            for _ in range(100):
                if await rollout.state(device) == "downloading":
                    break
                await asyncio.sleep(0.05)
    assert await rollout.state(device) == "downloading"


async def test_an_aborted_campaign_finishes_when_its_last_install_ends(rollout, db):
    devices = await rollout.campaign([0, 0], **QUICK)
    await rollout.start()
    await installing(rollout, devices[0])
    async with db.system_tx() as conn:  # what the management's abort does
        await conn.execute("update firmware_campaigns set status = 'aborted' where id = $1", rollout.campaign_id)
        await conn.execute("update firmware_campaign_devices set state = 'cancelled' where device_id = $1",
                           devices[1])
    await rollout.tick()
    assert (await rollout.campaign_row())["finished_at"] is None
    await rollout.register_again(devices[0], "2.0")
    await rollout.tick(2)
    assert await rollout.state(devices[0]) == "succeeded"
    campaign = await rollout.campaign_row()
    assert (campaign["status"], campaign["finished_at"] is not None) == ("aborted", True)


async def test_a_later_success_clears_the_alarm(rollout, db):
    (device,) = await rollout.campaign([0], **QUICK)
    await rollout.start()
    await installing(rollout, device)
    await rollout.register_again(device, "1.0")
    await rollout.tick()
    async with db.system_tx() as conn:  # what the management's retry does
        await conn.execute("update firmware_campaign_devices set state = 'waiting', attempt = attempt + 1 "
                           "where device_id = $1", device)
        await conn.execute("update firmware_campaigns set status = 'running' where id = $1", rollout.campaign_id)
    await installing(rollout, device)
    await rollout.register_again(device, "2.0")
    await rollout.tick(2)
    assert await rollout.state(device) == "succeeded"
    async with db.system_tx() as conn:
        alarm = await conn.fetchrow("select * from alarms where device_id = $1", device)
    assert alarm["clearing_since"] is not None or alarm["status"] == "cleared"


async def test_a_groups_window_wins_over_the_citys(rollout, db):
    grouped, plain = await rollout.campaign([0, 0], **QUICK)
    async with db.system_tx() as conn:
        group = await conn.fetchval("insert into device_groups (tenant_id, name) values ($1, 'night crew') "
                                    "returning id", rollout.tenant_id)
        await conn.execute("insert into device_group_members (tenant_id, group_id, device_id) values ($1, $2, $3)",
                           rollout.tenant_id, group, grouped)
        await conn.execute("""insert into maintenance_windows (tenant_id, group_id, starts, ends)
                              values ($1, $2, '01:00', '05:00'), ($1, null, '11:00', '13:00')""",
                           rollout.tenant_id, group)
    await rollout.start()
    yesterday = dt.datetime.now(SEOUL).date() - dt.timedelta(days=1)
    rollout.clock.at(dt.datetime.combine(yesterday, dt.time(12), SEOUL))
    await rollout.tick()
    for device in (grouped, plain):
        await rollout.downloaded(device)
    await rollout.tick()
    assert await rollout.states([grouped, plain]) == ["downloaded", "installing"]
    rollout.clock.at(dt.datetime.combine(yesterday, dt.time(2), SEOUL))
    await rollout.tick()
    assert await rollout.state(grouped) == "installing"


async def test_restricted_downloads_wait_for_the_window_too(rollout):
    (device,) = await rollout.campaign([0], window={"start": "01:00", "end": "05:00"}, restrict_downloads=True,
                                       **QUICK)
    await rollout.start()
    yesterday = dt.datetime.now(SEOUL).date() - dt.timedelta(days=1)
    rollout.clock.at(dt.datetime.combine(yesterday, dt.time(12), SEOUL))
    await rollout.tick()
    assert await rollout.state(device) == "waiting"
    rollout.clock.at(dt.datetime.combine(yesterday, dt.time(1, 30), SEOUL))
    await rollout.tick()
    assert await rollout.state(device) == "downloading"


async def test_a_download_that_takes_too_long_times_out(rollout):
    (device,) = await rollout.campaign([0], timeouts={"download_s": 60}, **QUICK)
    await rollout.start()
    await rollout.tick()
    await rollout.report(device, "/5/0/9", 0)
    await rollout.answer(device)
    await rollout.tick()
    row = await rollout.device(device)
    assert row["token_expires_at"] > row["step_at"] + dt.timedelta(hours=23)  # timeouts.token_s
    rollout.clock.offset = dt.timedelta(seconds=61)
    await rollout.tick()
    row = await rollout.device(device)
    assert (row["state"], row["reason"], row["token_hash"], row["command_status"]) == (
        "failed", "timed_out", None, "cancelled")


async def test_a_paused_campaign_starts_nothing_new(rollout, db):
    devices = await rollout.campaign([0, 0], concurrency=1, **QUICK)
    await rollout.start()
    await rollout.tick()
    first, second = devices
    if await rollout.state(first) != "downloading":
        first, second = second, first
    async with db.system_tx() as conn:  # what the management's pause does
        await conn.execute("update firmware_campaigns set status = 'paused' where id = $1", rollout.campaign_id)
    await rollout.downloaded(first)
    await rollout.tick()
    assert await rollout.states([first, second]) == ["downloaded", "waiting"]
    assert not await rollout.commands(first, "/5/0/2")


async def test_a_device_reporting_nonsense_holds_up_no_one(rollout):
    devices = await rollout.campaign([0, 0], **QUICK)
    await rollout.start()
    await rollout.tick()
    for device in devices:
        await rollout.report(device, "/5/0/9", "both, please")  # not a number: pull, the default
        await rollout.answer(device)
    await rollout.tick()
    odd, fine = devices
    await rollout.answer(odd)
    await rollout.report(odd, "/5/0/3", "Downloaded")
    await rollout.report(odd, "/5/0/5", "oops")
    await rollout.answer(fine)
    await rollout.report(fine, "/5/0/3", 2)
    await rollout.tick()
    assert await rollout.states(devices) == ["downloading", "installing"]


async def test_an_abort_calls_off_the_steps_still_queued(rollout, db):
    from fleet.campaigns.service import CampaignService

    pulled, pushed, installs = await rollout.campaign([0, 0, 0], **QUICK)
    await rollout.start()
    await rollout.tick()
    for device, method in ((pulled, 0), (pushed, 1), (installs, 0)):
        await rollout.report(device, "/5/0/9", method)
        await rollout.answer(device)
    await rollout.tick()
    await rollout.answer(installs)
    await rollout.report(installs, "/5/0/3", 2)
    await rollout.tick()
    queued = {d: (await rollout.device(d))["command_status"] for d in (pulled, pushed, installs)}
    assert queued == {pulled: "queued", pushed: "queued", installs: "queued"}
    aborted = await CampaignService(db).abort(rollout.city.principal, rollout.campaign_id)
    assert aborted.status == "aborted"
    for device, path in ((pulled, "/5/0/1"), (pushed, "/5/0/0")):
        row = await rollout.device(device)
        assert (row["state"], row["path"], row["command_status"]) == ("cancelled", path, "cancelled")
    # Mid-install: its Update goes out and the device finishes.
    assert (await rollout.device(installs))["command_status"] == "queued"


async def test_the_engine_publishes_and_audits_a_campaign_as_people_s_changes_do(rollout, db):
    (device,) = await rollout.campaign([0], **QUICK)
    await rollout.start()
    await installing(rollout, device)
    await rollout.register_again(device, "2.0")
    await rollout.tick(2)
    async with db.system_tx() as conn:
        events = await conn.fetch("select kind, subject_type, payload from events where subject_id = $1 order by id",
                                  str(rollout.campaign_id))
        audited = await conn.fetch("select action from audit_log where entity_type = 'campaign' and entity_id = $1",
                                   str(rollout.campaign_id))
    assert {(e["kind"], e["subject_type"]) for e in events} == {
        ("campaign.updated", "campaign"), ("campaign.device_updated", "campaign")}
    last = [e["payload"] for e in events if e["kind"] == "campaign.updated"][-1]
    assert (last["id"], last["status"], last["counts"]["succeeded"]) == (str(rollout.campaign_id), "completed", 1)
    assert "waves" in last and "settings" in last
    assert [a["action"] for a in audited] == ["campaign.complete"]


async def test_a_sleeping_device_waking_on_its_old_version_before_its_update_is_not_rolled_back(rollout):
    (device,) = await rollout.campaign([0], **QUICK)
    await rollout.start()
    await installing(rollout, device, taken=False)
    await rollout.register_again(device, "1.0")  # wakes with a Register: /3/0 read again
    await rollout.tick()
    assert await rollout.state(device) == "installing"
    await rollout.taken(device)  # its queued Update goes out now
    await rollout.tick()
    assert await rollout.state(device) == "installing"
    await rollout.register_again(device, "2.0")
    await rollout.tick()
    assert await rollout.state(device) == "verifying"


async def test_a_retried_device_that_came_back_late_is_verified_not_updated_again(rollout, db):
    from fleet.campaigns.service import CampaignService

    (device,) = await rollout.campaign([0], timeouts={"install_s": 60}, **QUICK)
    await rollout.start()
    await installing(rollout, device)
    rollout.clock.offset = dt.timedelta(seconds=61)
    await rollout.tick()
    assert (await rollout.device(device))["reason"] == "never_came_back"
    await rollout.register_again(device, "2.0")  # its reboot just took longer
    await CampaignService(db).retry(rollout.city.principal, rollout.campaign_id)
    await rollout.tick()
    row = await rollout.device(device)
    assert (row["state"], row["attempt"], row["previous_version"]) == ("verifying", 1, "1.0")
    await rollout.tick()
    assert await rollout.state(device) == "succeeded"
    assert len(await rollout.commands(device, "/5/0/2")) == 1
    # No new download began (each time it ended, its observation was called off).
    assert [c["operation"] for c in await rollout.commands(device, "/5/0")].count("observe") == 1


async def test_a_package_uri_write_whose_answer_was_lost_is_not_retried_once_downloaded(rollout, db):
    # A window hours away, whatever the hour the test runs at: outside it the download may end,
    # and nothing is installed (a fixed 01:00 window would be minutes away just after midnight).
    opens = dt.datetime.now(SEOUL) + dt.timedelta(hours=6)
    opens += dt.timedelta(minutes=2) if (opens.hour, opens.minute) == (23, 59) else dt.timedelta()
    window = {"start": f"{opens:%H:%M}", "end": f"{opens + dt.timedelta(minutes=1):%H:%M}"}
    (device,) = await rollout.campaign([0], window=window, **QUICK)
    await rollout.start()
    await rollout.tick()
    await rollout.report(device, "/5/0/9", 0)
    await rollout.answer(device)
    await rollout.tick()
    await rollout.taken(device)  # the write went out; its 2.04 is lost, and the device downloads
    await rollout.report(device, "/5/0/3", 2)
    await rollout.tick()
    row = await rollout.device(device)
    assert (row["state"], row["path"]) == ("downloaded", "/5/0/1")
    async with db.system_tx() as conn:  # the lost answer, as the dispatcher records it: retryable
        await CommandRepository(conn).complete([Outcome(row["command_id"], False, None, "no answer: timed out")],
                                               max_attempts=5, backoff_base_s=1)
    (write,) = await rollout.commands(device, "/5/0/1")
    assert write["status"] == "expired"  # not queued again: the device would download once more


async def test_an_update_expires_with_its_window_and_waits_for_the_next(rollout, db):
    (device,) = await rollout.campaign([0], window={"start": "01:00", "end": "05:00"}, **QUICK)
    await rollout.start()
    # The story's "today" is yesterday: every moment of it but the last is then behind the
    # database's real clock, as the test was written for (at 00:05 in Seoul, "today 05:01" was
    # five hours ahead of it, and the install timed out).
    today = dt.datetime.now(SEOUL).date() - dt.timedelta(days=1)
    rollout.clock.at(dt.datetime.combine(today, dt.time(12), SEOUL) - dt.timedelta(days=1))
    await rollout.tick()
    await rollout.downloaded(device)
    rollout.clock.at(dt.datetime.combine(today, dt.time(4, 58, 10), SEOUL))
    await rollout.tick()
    (execute,) = await rollout.commands(device, "/5/0/2")
    assert execute["expires_at"] - execute["created_at"] <= dt.timedelta(minutes=1, seconds=1)
    async with db.system_tx() as conn:  # a sleeping device: still queued when the window closed
        await conn.execute("update commands set expires_at = now() where id = $1", execute["id"])
        await CommandRepository(conn).expire()
    rollout.clock.at(dt.datetime.combine(today, dt.time(5, 1), SEOUL))
    await rollout.tick()
    assert await rollout.state(device) == "downloaded"
    rollout.clock.at(dt.datetime.combine(today + dt.timedelta(days=1), dt.time(1, 30), SEOUL))
    await rollout.tick()
    assert await rollout.state(device) == "installing"
    assert len(await rollout.commands(device, "/5/0/2")) == 2
