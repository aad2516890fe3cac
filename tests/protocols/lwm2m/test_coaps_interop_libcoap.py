"""Interoperability of the coaps listener with DTLS stacks that are not ours: libcoap's coap-client
built on OpenSSL and on GnuTLS (C, independent DTLS implementations), and aiocoap's tinydtls
client transport (DTLSSocket's own binding, not our ctypes engine)."""

from __future__ import annotations

import asyncio
import os
import socket

import aiocoap
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from fleet.security.models import SetPsk
from fleet.security.service import SecurityService
from protocols.coap.dtls import public_key_xy
from protocols.coap.dtls.tinydtls import PSK_AES_128_CCM_8
from tests.conftest import TEST_SECURITY, free_port
from tests.libcoap import libcoap_binary
from tests.protocols.lwm2m.test_lwm2m_coaps import city, listener, registration, until  # noqa: F401 - fixtures
from tests.protocols.test_commands import light

STACKS = ("coap-client-openssl", "coap-client-gnutls")
PACK = '[{"bn":"/3435/0/","n":"2","v":63.5},{"n":"3","v":7}]'


async def coap_client(binary: str, *args: str, wait_s: int = 10) -> str:
    """coap-client's log at debug level (-v 7: each PDU as `v:1 t:ACK c:2.01 ...`). Its exit code
    says nothing (0 after a failed handshake too): tests look at the PDUs it printed."""
    process = await asyncio.create_subprocess_exec(
        binary, "-B", str(wait_s), "-v", "7", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    output, _ = await process.communicate()
    return output.decode("utf-8", "replace")


def answers(output: str) -> list[str]:
    """The codes of the responses coap-client received, e.g. ['2.01']."""
    return [line.split(" c:", 1)[1].split()[0] for line in output.splitlines()
            if line.startswith("v:1 t:ACK") or line.startswith("v:1 t:CON c:2") or line.startswith("v:1 t:CON c:4")]


async def keyed(db, listener, city, endpoint: str) -> tuple[object, str, str]:
    """A streetlight with a PSK; its identity and key. The key is printable: coap-client 4.3.1
    takes `-k` as text (16 bytes: what tinydtls takes)."""
    device = await light(db, city, endpoint)
    identity, key = f"{endpoint[:26]}-id", f"key-{os.urandom(6).hex()}"
    await SecurityService(db, TEST_SECURITY).set_credential(
        city.principal, device.id, SetPsk(identity=identity, key_hex=key.encode().hex()))
    await until(lambda: listener.directory.psk(identity.encode()) is not None)
    return device, identity, key


def register_args(port: int, endpoint: str) -> list[str]:
    return ["-m", "post", "-t", "40", "-e", "</3/0>,</3435/0>",
            f"coaps://127.0.0.1:{port}/rd?ep={endpoint}&lt=120&lwm2m=1.1&b=U"]


@pytest.mark.parametrize("stack", STACKS)
async def test_a_psk_device_registers_and_sends(db, listener, city, stack):
    binary = libcoap_binary(stack)
    lamp, identity, key = await keyed(db, listener, city, f"lamp-{stack}")
    local_port = str(free_port(socket.SOCK_DGRAM))  # both requests from the registration's address
    output = await coap_client(binary, "-u", identity, "-k", key, "-p", local_port,
                               *register_args(listener.coaps_port, lamp.endpoint))
    assert answers(output) == ["2.01"], output
    assert "Location-Path:rd" in output, output
    row = await registration(db, lamp.endpoint)
    assert row["secure"] is True and row["lifetime_s"] == 120

    # A Send in SenML JSON, over a new DTLS session from the same address (coap-client closed
    # the first one with close_notify when it exited): 2.04 once committed.
    output = await coap_client(binary, "-u", identity, "-k", key, "-p", local_port, "-m", "post", "-t", "110",
                               "-e", PACK, f"coaps://127.0.0.1:{listener.coaps_port}/dp")
    assert answers(output) == ["2.04"], output
    async with db.system_tx() as conn:
        rows = await conn.fetch("select path, v_num from telemetry where device_id = $1 and path like '/3435/%' "
                                "order by path", lamp.id)
    assert [(r["path"], r["v_num"]) for r in rows] == [("/3435/0/2", 63.5), ("/3435/0/3", 7.0)]


@pytest.mark.parametrize("stack", STACKS)
async def test_a_wrong_psk_gets_no_answer(db, listener, city, stack):
    binary = libcoap_binary(stack)
    lamp, identity, _ = await keyed(db, listener, city, f"wrong-{stack}")
    output = await coap_client(binary, "-u", identity, "-k", "key-000000000000",
                               *register_args(listener.coaps_port, lamp.endpoint), wait_s=5)
    assert not any(code.startswith("2.") for code in answers(output)), output
    assert await registration(db, lamp.endpoint) is None


@pytest.mark.parametrize("stack", STACKS)
async def test_a_psk_of_one_device_cannot_register_another(db, listener, city, stack):
    binary = libcoap_binary(stack)
    _, identity, key = await keyed(db, listener, city, f"x-{stack}")
    other = await light(db, city, f"y-{stack}")
    output = await coap_client(binary, "-u", identity, "-k", key, *register_args(listener.coaps_port, other.endpoint))
    assert answers(output) == ["4.03"], output
    assert await registration(db, other.endpoint) is None


async def test_an_rpk_device_registers_with_gnutls(db, listener, seoul, tmp_path):
    """The device's public key set over REST. libcoap's OpenSSL build has no raw public keys (its
    -h says so); GnuTLS has."""
    binary = libcoap_binary("coap-client-gnutls")
    private_key = ec.generate_private_key(ec.SECP256R1())
    keyfile = tmp_path / "device.pem"  # what -M takes: the EC private key in PEM
    keyfile.write_bytes(private_key.private_bytes(serialization.Encoding.PEM,
                                                  serialization.PrivateFormat.TraditionalOpenSSL,
                                                  serialization.NoEncryption()))
    lamp = await light(db, seoul, "lamp-rpk-gnutls")
    public_pem = private_key.public_key().public_bytes(serialization.Encoding.PEM,
                                                       serialization.PublicFormat.SubjectPublicKeyInfo)
    put = await seoul.client.put(f"/api/v1/devices/{lamp.id}/security",
                                 json={"mode": "rpk", "public_key": public_pem.decode()})
    assert put.status_code == 200, put.text
    await until(lambda: listener.directory.rpk(public_key_xy(private_key)) is not None)
    output = await coap_client(binary, "-M", str(keyfile), *register_args(listener.coaps_port, lamp.endpoint))
    assert answers(output) == ["2.01"], output
    assert (await registration(db, lamp.endpoint))["secure"] is True


async def test_aiocoap_tinydtls_client_registers(db, listener, city):
    lamp, identity, key = await keyed(db, listener, city, "lamp-aiocoap")
    context = await aiocoap.Context.create_client_context(transports=["tinydtls"])
    try:
        base = f"coaps://127.0.0.1:{listener.coaps_port}"
        context.client_credentials.load_from_dict(
            {f"{base}/*": {"dtls": {"psk": key.encode(), "client-identity": identity.encode()}}})
        request = aiocoap.Message(code=aiocoap.POST, uri=f"{base}/rd?ep={lamp.endpoint}&lt=120&b=U",
                                  content_format=40, payload=b"</3/0>,</3435/0>")
        async with asyncio.timeout(15):
            answer = await context.request(request).response
        assert answer.code == aiocoap.CREATED and answer.opt.location_path[0] == "rd"
        send = aiocoap.Message(code=aiocoap.POST, uri=f"{base}/dp", content_format=110, payload=PACK.encode())
        async with asyncio.timeout(15):
            assert (await context.request(send).response).code == aiocoap.CHANGED
    finally:
        await context.shutdown()
    assert (await registration(db, lamp.endpoint))["secure"] is True
