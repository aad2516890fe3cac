"""What a /3/0 read records on a device (nothing rewritten when unchanged; another's serial left out), and its hints."""

from fleet.registry.models import DeviceKind, NewDevice
from fleet.registry.service import DeviceService
from fleet.objectmodel import ResourcePath
from fleet.registrations.models import DeviceInfo, RegisterRequest
from fleet.registrations.service import RegistrationService
from protocols.lwm2m import content
from protocols.lwm2m.negotiation import ContentFormats
from tests.conftest import make_city


async def _device(db, city, endpoint: str):
    device = await DeviceService(db).create_validated(
        city.principal, NewDevice(kind=DeviceKind.STREETLIGHT, endpoint=endpoint, lat=37.5, lon=127.0))
    return device.id


async def _row(db, device_id):
    async with db.system_tx() as conn:
        return await conn.fetchrow(
            "select xmin::text as version, manufacturer, model, serial, firmware_version, updated_at"
            " from devices where id = $1", device_id)


async def test_the_same_info_again_writes_nothing_and_a_held_serial_is_left_out(db):
    city = await make_city(db, "seoul")
    first, second = await _device(db, city, "light-1"), await _device(db, city, "light-2")
    registrations = RegistrationService(db, "test")
    info = DeviceInfo(manufacturer="Acme", model="SL-1", serial="SN-1", firmware_version="1.0")

    await registrations.record_device_info(first, info)
    recorded = await _row(db, first)
    assert (recorded["manufacturer"], recorded["model"], recorded["serial"], recorded["firmware_version"]) == (
        "Acme", "SL-1", "SN-1", "1.0")

    # A re-registration after a power cut reports the same: the row is not rewritten.
    await registrations.record_device_info(first, info)
    await registrations.record_device_info(first, DeviceInfo())  # nothing said: nothing changes
    assert await _row(db, first) == recorded

    # Firmware moved on: recorded, updated_at with it.
    await registrations.record_device_info(first, DeviceInfo(firmware_version="1.1"))
    upgraded = await _row(db, first)
    assert upgraded["firmware_version"] == "1.1" and upgraded["updated_at"] > recorded["updated_at"]
    assert upgraded["serial"] == "SN-1"

    # Another device claims the first one's serial: the rest of what it said is recorded.
    await registrations.record_device_info(second, DeviceInfo(manufacturer="Acme", serial="SN-1"))
    other = await _row(db, second)
    assert other["manufacturer"] == "Acme" and other["serial"] is None


async def test_a_register_hands_its_read_format_hints_over_without_a_lookup(db):
    city = await make_city(db, "seoul")
    device_id = await _device(db, city, "light-1")
    registrations = RegistrationService(db, "test")
    await registrations.record_read_content_format(device_id, content.SENML_CBOR)
    formats = ContentFormats(registrations)
    await registrations.register(RegisterRequest(
        endpoint="light-1", address="127.0.0.1", port=5683, lifetime_s=300, binding="U",
        lwm2m_version="1.1", object_links="</3/0>"))

    async def no_lookup(_device_id):
        raise AssertionError("the Register's hints were looked up again")

    registrations.read_format_hints = no_lookup
    assert (await formats.to_try(device_id, ResourcePath(3, 0)))[0] == content.SENML_CBOR
