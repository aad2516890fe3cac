"""The demo's device security: most devices hold a PSK, some a raw public key, some only a
factory bootstrap key (they bootstrap at every start), the rest none (NoSec, which the demo
city allows and says so). The keys go to Fleet (encrypted under FLEET_CREDENTIALS_KEY) and,
in plain text, to the credentials file the demo's `fleet simulate` reads, as a factory would
flash them into the devices."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from uuid import UUID

from cryptography.hazmat.primitives import serialization

from fleet.access.models import Tenant
from fleet.access.service import system_principal
from fleet.db import Database
from fleet.registry.models import DeviceFilter
from fleet.registry.service import DeviceService
from fleet.security.crypto import server_public_key_der
from fleet.security.models import SetPsk, SetRpk
from fleet.security.service import SecurityService
from fleet.settings import SecuritySettings
from simulators.credentials import CredentialsFile, DeviceCredential, new_credential

DEMO_CREDENTIALS = "demo-credentials.json"
# Of every twenty devices (by endpoint order): 14 PSK, 2 RPK (slow handshakes, ~10/s a core),
# 2 bootstrapping from a factory PSK, 2 NoSec.
DEMO_MODES = ("psk",) * 14 + ("rpk",) * 2 + ("bootstrap",) * 2 + ("nosec",) * 2


@dataclass(frozen=True, slots=True)
class DemoSecurity:
    modes: dict[str, int]  # devices per mode
    credentials_file: Path
    set_now: int  # credentials given to Fleet this run (0 on a restart that kept them)


def demo_mode(index: int) -> str:
    return DEMO_MODES[index % len(DEMO_MODES)]


async def seed_demo_security(db: Database, city: Tenant, settings: SecuritySettings, path: Path,
                             *, fresh: bool) -> DemoSecurity:
    """Give each demo device its credential, unless the file shows it has it already (`fresh`:
    the devices were just created, so whatever the file holds is stale)."""
    admin = system_principal(city)
    file = CredentialsFile() if fresh else CredentialsFile.load(path)
    service = SecurityService(db, settings)
    modes: Counter[str] = Counter()
    set_now = 0
    for index, (endpoint, device_id) in enumerate(sorted((await _devices(db, city)).items())):
        mode = demo_mode(index)
        modes[mode] += 1
        stored = file.devices.get(endpoint)
        if stored is not None and stored.mode == mode:
            continue
        credential = new_credential(mode, endpoint)
        if mode != "nosec":
            await service.set_credential(admin, device_id, _command(credential))
            set_now += 1
        file.devices[endpoint] = credential
    public = serialization.load_der_public_key(server_public_key_der(settings))
    file.server_public_key = public.public_bytes(serialization.Encoding.PEM,
                                                 serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    file.save(path)
    return DemoSecurity(dict(modes), path, set_now)


def _command(credential: DeviceCredential) -> SetPsk | SetRpk:
    if credential.mode == "rpk":
        return SetRpk(public_key=credential.public_key_pem())
    purpose = "bootstrap" if credential.mode == "bootstrap" else "operational"
    return SetPsk(identity=credential.identity, key_hex=credential.key_hex, purpose=purpose)


async def _devices(db: Database, city: Tenant) -> dict[str, UUID]:
    devices = DeviceService(db)
    admin = system_principal(city)
    found: dict[str, UUID] = {}
    cursor = None
    while True:
        page = await devices.list(admin, DeviceFilter(), cursor=cursor, limit=1000)
        found |= {device.endpoint: device.id for device in page.items}
        cursor = page.next_cursor
        if not cursor:
            return found
