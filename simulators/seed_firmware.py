"""The demo's firmware campaign: a release key kept beside the demo's data, a signed image for
Seoul's streetlights and a campaign rolling it out wave by wave, seeded once."""

from __future__ import annotations

import contextlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from uuid import UUID

import structlog
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fleet.access.models import Principal, Tenant
from fleet.access.service import system_principal
from fleet.campaigns.models import (Campaign, CampaignRequest, CampaignSettings, CampaignStatus, Thresholds,
                                    Waves)
from fleet.campaigns.service import CampaignService
from fleet.commands.models import Target
from fleet.db import Database
from fleet.errors import FleetError
from fleet.firmware.models import Image, ImageUpload, KeyCreate
from fleet.firmware.service import FirmwareService
from fleet.firmware.signatures import BadKey, fingerprint, new_signing_key, public_pem, signing_key
from fleet.registry.models import DeviceFilter, DeviceKind
from simulators.devices.streetlight import Streetlight
from simulators.firmware import build_image

log = structlog.get_logger(__name__)

MANUFACTURER, MODEL, RUNNING_VERSION = Streetlight.defaults
# One minor release newer than what the simulated streetlights run (and report in /3/0/3).
DEMO_FIRMWARE_VERSION = "3.3.0"
DEMO_IMAGE_BYTES = 64 * 1024  # 64 blocks of 1 KiB: a download takes seconds, not minutes
DEMO_KEY_FILE = "demo-release-key.pem"
DEMO_KEY_NAME = "demo release key"
DEMO_CAMPAIGN_NAME = f"{MODEL} controller {DEMO_FIRMWARE_VERSION}"
# Every streetlight of the demo city (no district has more than ~15 of the demo's 180): a canary
# of 5 %, then waves four times larger, each device proving itself for a minute. A canary device
# or two carrying a firmware fault must not stall the campaign (hence 70 %), and the few faults the demo
# forces stay under the error threshold; a quarter of the ended devices failing pauses it.
DEMO_CAMPAIGN = CampaignSettings(
    waves=Waves(canary_percent=5.0, growth=4.0),
    thresholds=Thresholds(success_percent=70.0, error_percent=25.0, error_min_count=10, on_error="pause"),
    concurrency=50, health_period_s=60)


@dataclass(frozen=True, slots=True)
class DemoFirmware:
    key_file: Path
    image_id: UUID
    campaign_id: UUID
    status: CampaignStatus
    created: bool  # the campaign was created this run


def demo_release_key(path: Path) -> Ed25519PrivateKey:
    """The demo's private release key: written once (mode 0600), read again on every start.
    Written beside and linked into place, so a crash never leaves a half-written key file."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        private, _ = new_signing_key()
        descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=".demo-key-")  # mode 0600
        try:
            with os.fdopen(descriptor, "wb") as out:
                out.write(private)
            with contextlib.suppress(FileExistsError):  # another demo got there first: use its key
                os.link(temporary, path)
        finally:
            os.unlink(temporary)
    return signing_key(path.read_bytes())


async def seed_demo_firmware(db: Database, city: Tenant, data_dir: Path) -> DemoFirmware | None:
    """Register the demo's release key, upload its signed streetlight image and start a campaign
    over the city's streetlights, unless the demo's campaign exists already (a draft left by an
    interrupted start is started). None, with a warning, when the city's data stops it (e.g. the
    streetlights are in a campaign of the city's own)."""
    admin = system_principal(city)
    campaigns = CampaignService(db)
    key_file = data_dir / DEMO_KEY_FILE
    try:
        existing = await demo_campaign(campaigns, admin)
        if existing is not None and existing.status != CampaignStatus.DRAFT:
            return DemoFirmware(key_file, existing.image_id, existing.id, existing.status, False)
        key = demo_release_key(key_file)
        image = await demo_image(FirmwareService(db), admin, key)
        created = existing is None
        if existing is None:
            existing = await campaigns.create(admin, CampaignRequest(
                image_id=image.id, target=Target(filter=DeviceFilter(kind=DeviceKind.STREETLIGHT)),
                settings=DEMO_CAMPAIGN, name=DEMO_CAMPAIGN_NAME))
        started = await campaigns.start(admin, existing.id)
    except FleetError as exc:
        log.warning("demo firmware campaign not seeded", reason=exc.detail,
                    errors=[f"{e.field}: {e.message}" for e in exc.errors])
        return None
    except (OSError, BadKey) as exc:  # the data directory's key file: unwritable, or not a key
        log.warning("demo firmware campaign not seeded", reason=f"release key {key_file}: {exc}")
        return None
    log.info("demo firmware campaign started", campaign=str(started.id), devices=started.device_count,
             waves=started.wave_count)
    return DemoFirmware(key_file, image.id, started.id, started.status, created)


async def demo_campaign(campaigns: CampaignService, admin: Principal) -> Campaign | None:
    """The newest campaign the demo seeded, in whatever status."""
    cursor = None
    while True:
        page = await campaigns.list(admin, cursor=cursor, limit=100)
        found = next((c for c in page.items if c.name == DEMO_CAMPAIGN_NAME), None)
        if found is not None or page.next_cursor is None:
            return found
        cursor = page.next_cursor


async def demo_image(firmware: FirmwareService, admin: Principal, key: Ed25519PrivateKey) -> Image:
    """The demo's image, uploaded through the service (signature checked) unless it is there."""
    public = public_pem(key.public_key())
    if not any(k.fingerprint == fingerprint(key.public_key()) and k.revoked_at is None
               for k in await firmware.keys(admin)):
        await firmware.register_key(admin, KeyCreate(name=DEMO_KEY_NAME, public_key=public))
    cursor = None
    while True:
        page = await firmware.images(admin, cursor=cursor, limit=100)
        for image in page.items:
            if image.version == DEMO_FIRMWARE_VERSION and image.models == (MODEL,):
                return image
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    content = build_image(DEMO_FIRMWARE_VERSION, DEMO_IMAGE_BYTES)
    return await firmware.upload(admin, ImageUpload(
        content=content, version=DEMO_FIRMWARE_VERSION, models=(MODEL,), manufacturers=(MANUFACTURER,),
        signature=key.sign(content), notes=f"Demo release: smoother dimming ramps (from {RUNNING_VERSION})",
        filename=f"{MODEL.lower()}-{DEMO_FIRMWARE_VERSION}.bin"))
