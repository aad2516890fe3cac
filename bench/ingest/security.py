"""The DTLS side of the ingest benchmark (`--security psk`): its devices and their keys, the
clients' credentials, and the PSK store of the bare aiocoap DTLS baseline.

The PSK round's devices are other devices than the NoSec round's (a device holding a key may
not register over plain CoAP), named bench-psk-NNNNNN, their keys derived from their names
(a throw-away database; nothing to protect). A few bench-rpk-NNNNNN devices hold raw public
keys, only to count RPK handshakes per second.
"""

from __future__ import annotations

import hashlib

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from bench.ingest.database import streetlight_row

# FLEET_CREDENTIALS_KEY of the benchmark's listeners (their database is thrown away after the run).
BENCH_CREDENTIALS_KEY = hashlib.sha256(b"fleet bench credentials key").hexdigest()


def psk_endpoint_name(client_index: int) -> str:
    return f"bench-psk-{client_index:06d}"


def rpk_endpoint_name(client_index: int) -> str:
    return f"bench-rpk-{client_index:06d}"


def bench_psk(identity: bytes) -> bytes:
    return hashlib.sha256(b"fleet bench psk:" + identity).digest()[:16]


def rpk_private_key(client_index: int) -> ec.EllipticCurvePrivateKey:
    """A device's P-256 key, the same every run (a scalar from its name; far below the order)."""
    scalar = int.from_bytes(hashlib.sha256(rpk_endpoint_name(client_index).encode()).digest()[:31], "big")
    return ec.derive_private_key(scalar + 1, ec.SECP256R1())


def device_row(index: int, endpoint: str) -> dict:
    """A bench streetlight, with the credential columns of the registry import for DTLS ones."""
    row = streetlight_row(index, endpoint)
    if endpoint.startswith("bench-psk-"):
        row |= {"security_mode": "psk", "psk_identity": endpoint, "psk_key_hex": bench_psk(endpoint.encode()).hex()}
    elif endpoint.startswith("bench-rpk-"):
        public = rpk_private_key(int(endpoint.rsplit("-", 1)[1])).public_key()
        row |= {"security_mode": "rpk", "public_key": public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()}
    return row


def psk_credentials(client_index: int):
    from protocols.coap.dtls import PskCredentials

    identity = psk_endpoint_name(client_index).encode()
    return PskCredentials(identity=identity, key=bench_psk(identity))


def rpk_credentials(server_public_key_der: bytes):
    """client index -> RpkCredentials trusting the listeners' key."""
    from protocols.coap.dtls import RpkCredentials

    def credentials(client_index: int):
        return RpkCredentials(private_key=rpk_private_key(client_index), server_public_key=server_public_key_der)

    return credentials


def server_credentials():
    """aiocoap's PSK store for the tinydtls_server baseline: any bench identity, its key. aiocoap
    asks it synchronously from tinydtls' callback (find_dtls_psk), like Fleet's directory."""
    from aiocoap.credentials import CredentialsMap

    class BenchPsks(CredentialsMap):
        def __bool__(self) -> bool:
            return True  # aiocoap replaces a falsy (empty) map with its own

        def find_dtls_psk(self, identity: bytes):
            if not identity.startswith(b"bench-psk-"):
                raise KeyError(identity)
            return bench_psk(identity), identity.decode()

    return BenchPsks()
