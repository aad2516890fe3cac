"""An independent DTLS client against the coaps engine: OpenSSL's s_client with a PSK
(TLS_PSK_WITH_AES_128_CCM_8, as mbedTLS/OpenSSL-based LwM2M clients offer it)."""

from __future__ import annotations

import asyncio
import shutil
import subprocess

import pytest

from protocols.coap.dtls import DtlsServer

KEY = bytes(range(16))

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="no openssl command")


class Keys:
    def psk(self, identity: bytes):
        return (KEY, "credential") if identity == b"lamp-ossl" else None

    def rpk(self, public_key_xy: bytes):
        return None


async def test_openssl_s_client_with_a_psk_gets_a_session_both_ways():
    loop = asyncio.get_running_loop()
    received: asyncio.Queue[bytes] = asyncio.Queue()

    def plaintext(data: bytes, address) -> None:
        received.put_nowait(data)
        server.send(b"echo:" + data, address)

    server = DtlsServer(Keys(), None, on_plaintext=plaintext)
    listening, _ = await loop.create_datagram_endpoint(lambda: server, local_addr=("127.0.0.1", 0))
    client = await asyncio.create_subprocess_exec(
        "openssl", "s_client", "-dtls1_2", "-connect", f"127.0.0.1:{listening.get_extra_info('sockname')[1]}",
        "-psk_identity", "lamp-ossl", "-psk", KEY.hex(), "-cipher", "PSK-AES128-CCM8", "-quiet",
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        client.stdin.write(b"hello\n")  # read by s_client once its handshake is done
        await client.stdin.drain()
        async with asyncio.timeout(20):
            assert await received.get() == b"hello\n"
            assert await client.stdout.readline() == b"echo:hello\n"
        assert server.handshakes_ok["psk"] == 1
    finally:
        client.kill()
        await client.wait()
        listening.close()
