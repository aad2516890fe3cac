"""The demo city: seeded once, with a lighting calendar every Seoul streetlight follows, a crew
with a key of its own, faults forced at start, and a banner that says how to use them."""

from __future__ import annotations

import dataclasses
import datetime as dt
import stat
from pathlib import Path
from types import SimpleNamespace
from uuid import uuid4
from zoneinfo import ZoneInfo

import msgspec
import pytest

from fleet.access.models import Role
from fleet.campaigns.models import CampaignStatus, DeviceState
from fleet.campaigns.service import CampaignService
from fleet.firmware.service import FirmwareService, verify_stored
from fleet.alarms.models import AlarmType, Finding
from fleet.alarms.service import AlarmService
from fleet.crews.service import CrewService
from fleet.access.service import ApiKeyService, TenantService, system_principal
from fleet.lighting.preview import PreviewService
from fleet.lighting.reconcile import Reconciler
from fleet.lighting.service import LightingService
from fleet.errors import ValidationFailed
from fleet.registry.models import DeviceFilter, DeviceKind
from fleet.registry.service import DeviceService
from fleet.workorders.automation import open_for_alarms
from fleet.workorders.models import AlarmRule, WorkOrderRules
from fleet.workorders.service import WorkOrderService
from simulators.geography import SEOUL
from api.commands import demo_banner
from simulators.devices.streetlight import Streetlight
from simulators.faults import ELIGIBLE, FaultPlan
from simulators.seed import (DEMO_COUNTS, DEMO_CREW, DEMO_CREW_BASE, DEMO_FAULTS, DEMO_RULES, DemoCity,
                             demo_fault_arguments, seed_demo_work_order_rules,
                             seed_demo_city)
from simulators.seed_keys import DEMO_ENV, read_demo_env
from simulators.seed_firmware import (DEMO_CAMPAIGN_NAME, DEMO_FIRMWARE_VERSION, DEMO_KEY_FILE, DemoFirmware,
                                      seed_demo_firmware)

KST = ZoneInfo("Asia/Seoul")


async def test_demo_city_is_seeded_once_with_its_lighting(db):
    seeded = await seed_demo_city(db)
    city = seeded.city
    assert seeded.created == sum(DEMO_COUNTS.values()) and seeded.admin_key
    again = await seed_demo_city(db)
    assert (again.city.id, again.created) == (city.id, 0) and again.admin_key != seeded.admin_key

    admin = system_principal(await TenantService(db).by_slug(city.slug))
    lighting = LightingService(db)
    (calendar,) = await lighting.list_calendars(admin)
    assignments = await lighting.list_assignments(admin)
    assert {a.district for a in assignments} == {d.name for d in SEOUL}
    assert {a.calendar_id for a in assignments} == {calendar.id}

    lights = (await DeviceService(db).list(admin, DeviceFilter(kind=DeviceKind.STREETLIGHT), limit=1000)).items
    previews = PreviewService(db)
    for at, level in ((dt.datetime(2026, 12, 1, 23, 30, tzinfo=KST), 60),   # a Tuesday: standard night
                      (dt.datetime(2026, 12, 25, 1, 30, tzinfo=KST), 100),   # Christmas night: festive
                      (dt.datetime(2026, 12, 5, 0, 15, tzinfo=KST), 100),    # Friday night: weekend
                      (dt.datetime(2026, 12, 2, 12, 0, tzinfo=KST), 0)):     # noon
        preview = await previews.preview(admin, device_id=lights[0].id, at=at)
        assert preview.lights[0].level.dimming_level == level, at

    report = await Reconciler(db).reconcile_tenant(
        await TenantService(db).by_slug(city.slug), dt.datetime(2026, 12, 1, 23, 30, tzinfo=KST))
    assert report.scheduled_lights == report.commanded == len(lights) == DEMO_COUNTS["streetlight"]


async def test_demo_seeds_a_crew_with_a_key_of_its_own(db):
    first = await seed_demo_city(db)
    second = await seed_demo_city(db)
    assert first.crew_name == second.crew_name == DEMO_CREW and first.crew_key != second.crew_key

    keys = ApiKeyService(db)
    principal = await keys.authenticate(second.crew_key)
    assert principal.role == Role.CREW and principal.tenant_id == first.city.id
    async with db.system_tx() as conn:
        crews = await conn.fetch("select id, name from crews where tenant_id = $1", first.city.id)
        crew_keys = await conn.fetch(
            "select crew_id from api_keys where tenant_id = $1 and role = 'crew'", first.city.id)
    # One crew however often the demo starts; each run's tablet key belongs to it.
    assert [c["name"] for c in crews] == [DEMO_CREW]
    assert [k["crew_id"] for k in crew_keys] == [crews[0]["id"]] * 2


async def test_demo_keys_are_kept_across_restarts_and_earlier_ones_revoked(db, tmp_path):
    unkept = await seed_demo_city(db)  # as before demo.env: a fresh set each start
    env = tmp_path / DEMO_ENV
    first = await seed_demo_city(db, env, "http://127.0.0.1:8000", tmp_path)
    assert stat.S_IMODE(env.stat().st_mode) == 0o600 and not first.keys_reused
    # FLEET_DATA_DIR too: the tour's `fleet tenant create` in that shell reaches the demo's database.
    assert read_demo_env(env) == {"FLEET_URL": "http://127.0.0.1:8000", "ADMIN_KEY": first.admin_key,
                                  "CREW_KEY": first.crew_key, "REPORTER_KEY": first.reporter_key,
                                  "FLEET_DATA_DIR": str(tmp_path.resolve())}
    again = await seed_demo_city(db, env, "http://127.0.0.1:8001")
    assert again.keys_reused and (again.admin_key, again.crew_key, again.reporter_key) == (
        first.admin_key, first.crew_key, first.reporter_key)
    assert read_demo_env(env)["FLEET_URL"] == "http://127.0.0.1:8001"

    keys = ApiKeyService(db)
    admin = system_principal(first.city)
    reporter = await keys.authenticate(first.reporter_key)
    assert (reporter.role, reporter.tenant_id) == (Role.REPORTER, first.city.id)
    # A key revoked meanwhile is replaced; the others are kept.
    await keys.revoke(admin, (await keys.authenticate(first.admin_key)).api_key_id)
    third = await seed_demo_city(db, env, "http://127.0.0.1:8000")
    assert not third.keys_reused and third.admin_key != first.admin_key
    assert (third.crew_key, third.reporter_key) == (first.crew_key, first.reporter_key)
    assert read_demo_env(env)["ADMIN_KEY"] == third.admin_key
    # However often the demo started, the city has three live demo keys: the file's.
    live = {key.prefix for key in await keys.list(admin) if key.revoked_at is None and key.name.startswith("demo")}
    assert live == {secret.split("_")[1] for secret in (third.admin_key, third.crew_key, third.reporter_key)}
    assert unkept.admin_key.split("_")[1] not in live


async def test_only_crew_keys_belong_to_a_crew(db):
    seeded = await seed_demo_city(db)
    admin = system_principal(seeded.city)
    keys = ApiKeyService(db)
    crew_id = (await CrewService(db).ensure(admin, DEMO_CREW)).id
    with pytest.raises(ValidationFailed):
        await keys.issue(admin, Role.VIEWER, "not a crew", crew_id=crew_id)
    with pytest.raises(ValidationFailed):
        await keys.issue(admin, Role.CREW, "no such crew", crew_id=uuid4())


async def test_demo_work_orders_land_on_the_demo_crews_tablet(db):
    seeded = await seed_demo_city(db)
    admin = system_principal(seeded.city)
    crew = await CrewService(db).ensure(admin, DEMO_CREW)
    assert crew.home_base == DEMO_CREW_BASE
    work_orders = WorkOrderService(db)
    assert (await work_orders.rules(admin)).alarm_rules == DEMO_RULES
    assert all(rule.assign == "nearest_crew" for rule in DEMO_RULES)

    # A demo database from before nearest-crew assignment gets it; a city's own rules are kept.
    await work_orders.put_rules(admin, WorkOrderRules(alarm_rules=[
        msgspec.structs.replace(rule, assign="none") for rule in DEMO_RULES]))
    await seed_demo_work_order_rules(db, admin)
    assert (await work_orders.rules(admin)).alarm_rules == DEMO_RULES
    own = WorkOrderRules(alarm_rules=[AlarmRule(alarm_types=["lamp_failure"], work_order_type="repair_lamp")])
    await work_orders.put_rules(admin, own)
    await seed_demo_work_order_rules(db, admin)
    assert (await work_orders.rules(admin)).alarm_rules == own.alarm_rules
    await work_orders.put_rules(admin, WorkOrderRules(alarm_rules=DEMO_RULES))

    # A lamp fails anywhere in Seoul; a minute later its work order is on the crew's list.
    light = (await DeviceService(db).list(admin, DeviceFilter(kind=DeviceKind.STREETLIGHT), limit=1)).items[0]
    now = dt.datetime.now(dt.UTC)
    await AlarmService(db).apply([Finding(seeded.city.id, light.id, AlarmType.LAMP_FAILURE, True,
                                          now - dt.timedelta(minutes=2))])
    assert await open_for_alarms(db, now) == 1
    tablet = await ApiKeyService(db).authenticate(seeded.crew_key)
    (order,) = (await work_orders.list(tablet, assigned_to="me")).items
    assert (order.status, order.crew_id, order.device_ids) == ("assigned", crew.id, [light.id])


def test_demo_faults_and_banner():
    # Every forced demo fault is a kind the simulator knows, and at least one of each kind strikes.
    assert set(DEMO_FAULTS) <= set(ELIGIBLE)
    arguments = demo_fault_arguments()
    assert arguments[0] == "--faults"
    plan = FaultPlan.parse(arguments[2::2], random=True)
    assert plan.forced == DEMO_FAULTS and plan.daily_rate("ap_down") > 0
    endpoints = {kind: [f"{kind}-{n}" for n in range(count)] for kind, count in DEMO_COUNTS.items()}
    chosen = plan.forced_on(endpoints, seed=1)
    assert set(chosen) == set(DEMO_FAULTS)
    assert 3 <= len(chosen["lamp_failure"]) <= 5 and len(chosen["ap_down"]) == 2

    assert {"fw_install_fail", "fw_rollback"} <= set(DEMO_FAULTS)  # the campaign shows failures

    campaign_id = uuid4()
    seeded = DemoCity(SimpleNamespace(name="Seoul Metropolitan Government", slug="seoul", allow_nosec_devices=True),
                      "fleet_admin_x", 315, DEMO_CREW, "fleet_crew_y",
                      DemoFirmware(Path("/data/demo-release-key.pem"), uuid4(), campaign_id,
                                   CampaignStatus.RUNNING, True))
    seeded = dataclasses.replace(seeded, env_file=Path("/home/a user/.local/share/fleet/demo.env"))
    banner = demo_banner(seeded, "http://127.0.0.1:8000", 5683)
    assert f"Crew key:  fleet_crew_y   ({DEMO_CREW})" in banner
    assert "315 devices seeded this run" in banner
    # A restart seeds nothing and says so, not "0 devices seeded".
    again = demo_banner(dataclasses.replace(seeded, created=0), "http://127.0.0.1:8000", 5683)
    assert "from an earlier run (nothing new seeded)" in again and "0 devices" not in again
    # The commands paste as they are once demo.env is sourced (a path with a space quoted).
    assert "Shell:     source '/home/a user/.local/share/fleet/demo.env'" in banner
    assert 'curl -H "Authorization: Bearer $CREW_KEY" "$FLEET_URL/api/v1/workorders?assigned_to=me"' in banner
    assert 'curl -N -H "Authorization: Bearer $ADMIN_KEY" "$FLEET_URL/api/v1/events"' in banner
    assert "Admin key: fleet_admin_x" in banner and "http://127.0.0.1:8000/schema" in banner
    assert "Browser:   http://127.0.0.1:8000/   (the control room" in banner
    assert ('curl -H "Authorization: Bearer $ADMIN_KEY" '
            f'"$FLEET_URL/api/v1/firmware/campaigns/{campaign_id}"') in banner
    assert f"campaign {campaign_id} (running)" in banner and "/api/v1/firmware/campaigns)" in banner
    # Without a campaign (the city's data stopped it) the banner simply says nothing of firmware.
    assert "Firmware" not in demo_banner(DemoCity(seeded.city, "k", 0, DEMO_CREW, "c"),
                                         "http://127.0.0.1:8000", 5683)


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


async def test_demo_firmware_campaign_is_seeded_once_and_started(db, tmp_path):
    seeded = await seed_demo_city(db)
    admin = system_principal(seeded.city)
    first = await seed_demo_firmware(db, seeded.city, tmp_path)
    assert first is not None and first.created and first.status == CampaignStatus.RUNNING

    # The private key stays in the demo's data directory, for its owner only.
    key_file = tmp_path / DEMO_KEY_FILE
    assert first.key_file == key_file and stat.S_IMODE(key_file.stat().st_mode) == 0o600
    pem = key_file.read_bytes()
    (key,) = await FirmwareService(db).keys(admin)
    async with db.tenant_tx(seeded.city.id) as conn:
        image = await verify_stored(conn, seeded.city.id, first.image_id)
    assert image.key_id == key.id and image.version == DEMO_FIRMWARE_VERSION
    assert image.fits(*Streetlight.defaults[:2]) and _version(image.version) > _version(Streetlight.defaults[2])

    campaigns = CampaignService(db)
    campaign = await campaigns.get(admin, first.campaign_id)
    canary = campaign.waves[0]["devices"]
    assert (campaign.name, campaign.device_count, campaign.current_wave) == (
        DEMO_CAMPAIGN_NAME, DEMO_COUNTS["streetlight"], 0)
    assert canary == round(DEMO_COUNTS["streetlight"] * 0.05) and campaign.counts["waiting"] == canary
    assert campaign.settings.health_period_s == 60 and campaign.settings.thresholds.on_error == "pause"

    # A restart finds the campaign: no second key, image or campaign, the same key file.
    again = await seed_demo_firmware(db, seeded.city, tmp_path)
    assert (again.campaign_id, again.image_id, again.created) == (first.campaign_id, first.image_id, False)
    assert key_file.read_bytes() == pem and len(await FirmwareService(db).keys(admin)) == 1
    assert len((await FirmwareService(db).images(admin)).items) == 1
    assert len((await campaigns.list(admin)).items) == 1


async def test_a_demo_campaign_left_a_draft_is_started_and_a_busy_city_is_left_alone(db, tmp_path):
    seeded = await seed_demo_city(db)
    admin = system_principal(seeded.city)
    first = await seed_demo_firmware(db, seeded.city, tmp_path)
    campaigns = CampaignService(db)
    await campaigns.abort(admin, first.campaign_id)
    async with db.system_tx() as conn:  # as if the demo stopped between creating and starting it
        await conn.execute("update firmware_campaigns set status = 'draft', started_at = null where id = $1",
                           first.campaign_id)
        await conn.execute("update firmware_campaign_devices set state = 'pending' where campaign_id = $1",
                           first.campaign_id)
    again = await seed_demo_firmware(db, seeded.city, tmp_path)
    assert (again.campaign_id, again.status, again.created) == (first.campaign_id, CampaignStatus.RUNNING, False)
    assert (await campaigns.get(admin, first.campaign_id)).counts[DeviceState.WAITING] > 0

    # The streetlights busy in a campaign of the city's own: the demo runs without one of its own.
    async with db.system_tx() as conn:
        await conn.execute("update firmware_campaigns set name = 'the city''s own' where id = $1",
                           first.campaign_id)
    assert await seed_demo_firmware(db, seeded.city, tmp_path) is None


async def test_a_damaged_demo_key_file_leaves_the_demo_without_a_campaign(db, tmp_path):
    seeded = await seed_demo_city(db)
    (tmp_path / DEMO_KEY_FILE).write_text("not a key")
    assert await seed_demo_firmware(db, seeded.city, tmp_path) is None
    assert not (await CampaignService(db).list(system_principal(seeded.city))).items
