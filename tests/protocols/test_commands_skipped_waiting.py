"""A filter's command skips devices whose registration lacks its path, and every queued
command says why it waits; real UDP devices, real database."""

from __future__ import annotations

from fleet.commands.models import CommandRequest, Operation, Target
from fleet.commands.service import CommandService
from fleet.registry.models import DeviceFilter, DeviceKind, NewDevice
from fleet.registry.service import DeviceService
from tests.conftest import make_city
from tests.protocols.devices import MiniDevice
from tests.protocols.test_commands import wait_for_batch


async def test_devices_lacking_the_path_are_skipped_and_queued_ones_say_why(db, listener):
    city = await make_city(db, "seoul")
    registry = DeviceService(db)

    async def add(endpoint: str, kind: DeviceKind):
        return (await registry.create_validated(city.principal, NewDevice(
            kind=kind, endpoint=endpoint, lat=37.56, lon=126.97, district="Jung-gu",
            attributes={"capacity_litres": 240} if kind is DeviceKind.WASTE_BIN else {}))).id

    ids = {name: await add(name, kind) for name, kind in (
        ("awake", DeviceKind.STREETLIGHT), ("sleepy", DeviceKind.STREETLIGHT),
        ("away", DeviceKind.STREETLIGHT), ("bin", DeviceKind.WASTE_BIN))}
    devices = {name: MiniDevice(name) for name in ("awake", "sleepy", "bin")}
    devices["awake"].add("/3311/0/5851", 100)
    devices["sleepy"].add("/3311/0/5851", 100)
    devices["bin"].add("/3/0/0", "bins inc")
    try:
        for name, device in devices.items():
            await device.start()
            binding = "UQ" if name == "sleepy" else "U"
            assert (await device.register(listener.port, binding=binding)).code.is_successful()
        service = CommandService(db)
        batch = await service.submit(city.principal, CommandRequest(
            Target(filter=DeviceFilter(district="Jung-gu")), Operation.WRITE, "/3311/0/5851", 40))
        assert batch.device_count == 4 and batch.counts["skipped"] == 1
        await wait_for_batch(db, city, batch.id, done=lambda counts: counts["succeeded"] == 1)
        shown = {c.device_id: c for c in (await service.get(city.principal, batch.id)).commands}
        bin_command = shown[ids["bin"]]
        assert (bin_command.status, bin_command.result) == ("skipped", {"reason": "path_not_hosted", "lacks": "/3311"})
        assert bin_command.error.startswith("path_not_hosted") and devices["bin"].writes == []
        assert shown[ids["awake"]].status == "succeeded" and shown[ids["awake"]].waiting_reason is None
        assert (shown[ids["sleepy"]].status, shown[ids["sleepy"]].waiting_reason) == ("queued", "queue_mode")
        assert (shown[ids["away"]].status, shown[ids["away"]].waiting_reason) == ("queued", "not_registered")
        # Named one by one, a device is sent what was asked, as before.
        listed = await service.submit(city.principal, CommandRequest(
            Target(device_ids=(ids["bin"],)), Operation.READ, "/3311/0/5851"))
        assert listed.counts["skipped"] == 0
    finally:
        for device in devices.values():
            await device.stop()
