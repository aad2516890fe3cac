"""Interoperability: libcoap's coap-client (a C implementation) registers and sends to our listener."""

from __future__ import annotations

import asyncio
import socket

import pytest

from fleet.registry.models import DeviceKind, NewDevice
from fleet.registry.service import DeviceService
from tests.conftest import free_port, make_city
from tests.libcoap import libcoap_binary

COAP_CLIENT = "coap-client-notls"


@pytest.fixture(scope="session")
def coap_client_binary() -> str:
    return libcoap_binary(COAP_CLIENT)


async def coap_client(binary: str, *args: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        binary, "-B", "10", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    output, _ = await process.communicate()
    return process.returncode, output.decode("utf-8", "replace")


async def test_register_and_send_with_libcoap(db, listener, coap_client_binary):
    city = await make_city(db, "seoul")
    device = await DeviceService(db).create_validated(city.principal, NewDevice(
        kind=DeviceKind.WASTE_BIN, endpoint="libcoap-bin", lat=37.5, lon=127.0))
    local_port = str(free_port(socket.SOCK_DGRAM))  # both requests from one source port: the registration's address
    base = f"coap://127.0.0.1:{listener.port}"
    code, output = await coap_client(
        coap_client_binary, "-p", local_port, "-m", "post", "-t", "40", "-e", "</3/0>,</3435/0>",
        f"{base}/rd?ep=libcoap-bin&lt=120&lwm2m=1.1&b=U")
    assert code == 0, output
    async with db.system_tx() as conn:
        registration = await conn.fetchrow("select * from registrations where device_id = $1", device.id)
    assert registration is not None and registration["lifetime_s"] == 120

    pack = '[{"bn":"/3435/0/","n":"2","v":63.5},{"n":"3","v":7}]'
    code, output = await coap_client(coap_client_binary, "-p", local_port, "-m", "post", "-t", "110",
                                     "-e", pack, f"{base}/dp")
    assert code == 0, output
    async with db.system_tx() as conn:
        rows = await conn.fetch("select path, v_num from telemetry where device_id = $1 order by path", device.id)
        status = await conn.fetchval("select status from devices where id = $1", device.id)
    assert [(r["path"], r["v_num"]) for r in rows] == [("/3435/0/2", 63.5), ("/3435/0/3", 7.0)]
    assert status == "online"

    # A malformed pack from the same client: 4.00 with a diagnostic, nothing stored.
    code, output = await coap_client(coap_client_binary, "-p", local_port, "-m", "post", "-t", "110",
                                     "-e", '[{"n":"/3435/0/2","v":"full"}]', f"{base}/dp")
    assert "4.00" in output or "Bad Request" in output, output
    async with db.system_tx() as conn:
        assert await conn.fetchval("select count(*) from telemetry where device_id = $1", device.id) == 2
