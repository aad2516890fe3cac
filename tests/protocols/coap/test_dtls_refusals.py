"""Refused DTLS handshakes on real UDP: one source's share of the handshake rates (it cannot starve
the others), and the log line that says why a handshake failed, once per source per window."""

from __future__ import annotations

import contextlib
import hashlib

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from structlog.testing import capture_logs

from protocols.coap.dtls import PskCredentials, RpkCredentials, public_key_xy
from protocols.coap.dtls.server import _fingerprint, _printable, _source
from tests.protocols.coap.test_dtls_engine import (PSK_IDENTITY, PSK_KEY, SERVER_KEY, Echo, connect, refused,
                                                   until)


@contextlib.asynccontextmanager
async def serving(**limits):
    echo = Echo(**limits)
    echo.address = await echo.start()
    try:
        yield echo
    finally:
        echo.close()


async def test_one_source_takes_only_its_share_of_the_handshake_rate():
    # 10 handshakes a second for everyone, a tenth of a handshake a second for one source.
    async with serving(psk_handshakes_per_s=10.0, source_share=0.01) as echo:
        first, device = await connect(echo.address, PskCredentials(PSK_IDENTITY, PSK_KEY))
        first.sendto(b"hello")
        assert await device.next() == b"echo:hello"
        again, _ = await connect(echo.address, PskCredentials(PSK_IDENTITY, PSK_KEY), handshake_timeout_s=60)
        again.sendto(b"hello")
        await until(lambda: echo.server.handshakes_limited)  # the same host, over its share
        # Another host still gets in at once: the first one's cookie exchanges starve nobody.
        other, elsewhere = await connect(echo.address, PskCredentials(PSK_IDENTITY, PSK_KEY),
                                         local_addr=("127.0.0.2", 0))
        other.sendto(b"hello")
        assert await elsewhere.next() == b"echo:hello"
        assert echo.server.handshakes_ok["psk"] == 2
        for transport in (first, again, other):
            transport.close()


def test_a_source_is_an_ipv4_address_or_an_ipv6_64():
    assert _source(("::ffff:192.0.2.7", 5684, 0, 0)) == _source(("192.0.2.7", 1)) == "192.0.2.7"
    assert _source(("2001:db8:1:2::a", 1, 0, 0)) == _source(("2001:db8:1:2:ffff::1", 2, 0, 0))
    assert _source(("2001:db8:1:2::a", 1, 0, 0)) != _source(("2001:db8:1:3::a", 1, 0, 0))


async def test_a_refused_handshake_says_why_once_per_source():
    stranger = ec.generate_private_key(ec.SECP256R1())
    async with serving() as echo:
        with capture_logs() as logs:
            unknown, device = await connect(echo.address, PskCredentials(b"nobody\x00\xff" + b"x" * 20, PSK_KEY))
            await refused(device)
            wrong, device = await connect(echo.address, PskCredentials(PSK_IDENTITY, bytes(16)))
            await refused(device)
            other, device = await connect(echo.address, RpkCredentials(stranger, SERVER_KEY.public_key()),
                                          local_addr=("127.0.0.2", 0))
            await refused(device)
        for transport in (unknown, wrong, other):
            transport.close()
    failed = {line["reason"].split(" ")[1]: line for line in logs if line["event"] == "DTLS handshake failed"}
    assert failed["PSK"]["reason"] == "unknown PSK identity 'nobody\\x00\\xffxxxxxxxxxxxxxxxxxxxx'"
    assert failed["PSK"]["log_level"] == "warning" and failed["PSK"]["source"] == "127.0.0.1"
    assert failed["Finished:"]["reason"] == "bad Finished: a wrong key for its identity"
    assert failed["Finished:"]["log_level"] == "debug"  # the same source again, within its window
    xy = public_key_xy(stranger.public_key())
    rpk = [line for line in logs if line.get("mode") == "rpk"]
    assert [line["reason"] for line in rpk] == [f"unknown public key {_fingerprint(xy)}"]
    assert rpk[0]["log_level"] == "warning"  # another source: its own first line
    # The fingerprint is the key's usual one: SHA-256 of its SubjectPublicKeyInfo DER.
    der = stranger.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert _fingerprint(xy) == "SHA-256:" + hashlib.sha256(der).hexdigest()[:16]


def test_an_identity_in_a_log_line_is_printable_and_cut():
    assert _printable(b"lamp\x00\xff\\\n" + b"x" * 50) == "lamp\\x00\\xff\\\\\\n" + "x" * 24 + "..."
    assert _printable("가로등".encode()) == "가로등"


async def test_a_rate_limited_handshake_says_so():
    async with serving(psk_handshakes_per_s=10.0, source_share=0.01) as echo:
        with capture_logs() as logs:
            first, device = await connect(echo.address, PskCredentials(PSK_IDENTITY, PSK_KEY))
            first.sendto(b"hello")
            await device.next()
            again, _ = await connect(echo.address, PskCredentials(PSK_IDENTITY, PSK_KEY), handshake_timeout_s=60)
            await until(lambda: echo.server.handshakes_limited)
        first.close()
        again.close()
    assert [(line["reason"], line["log_level"]) for line in logs if line["event"] == "DTLS handshake failed"][:1] == [
        ("rate limited", "warning")]
