"""What a simulated device proves itself with: its credential, kept in a devices' credentials file.

The file is what a factory would flash into each device: JSON, written by whoever set the
credentials in Fleet (the demo's seeder, or `fleet simulate --security` over REST), readable by
its owner only. The simulator never reads Fleet's database; it knows a key because it is the
one that chose it.

    {"server_public_key": "-----BEGIN PUBLIC KEY-----...",      (for RPK devices; optional)
     "devices": {"seoul-sl-00001": {"mode": "psk", "identity": "seoul-sl-00001", "key_hex": "..."},
                 "seoul-sl-00002": {"mode": "rpk", "private_key": "-----BEGIN PRIVATE KEY-----..."},
                 "seoul-sl-00003": {"mode": "bootstrap", "identity": "...", "key_hex": "..."},
                 "seoul-sl-00005": {"mode": "bootstrap", "private_key": "-----BEGIN PRIVATE KEY-----..."},
                 "seoul-sl-00004": {"mode": "nosec"}}}
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import asdict, dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

MODES = ("nosec", "psk", "rpk", "bootstrap")
PSK_BYTES = 16


class CredentialsError(Exception):
    """The credentials file cannot be read, or holds something a device cannot use."""


@dataclass(frozen=True, slots=True)
class DeviceCredential:
    mode: str  # one of MODES; "bootstrap" is a factory bootstrap key: a PSK, or a key pair
    identity: str = ""  # PSK identity (psk, bootstrap)
    key_hex: str = ""  # the PSK (psk, bootstrap)
    private_key: str = ""  # the device's P-256 private key, PKCS#8 PEM (rpk, bootstrap)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise CredentialsError(f"mode {self.mode!r} is not one of {', '.join(MODES)}")
        if self.mode == "psk" and not (self.identity and self.key_hex):
            raise CredentialsError("a psk credential needs identity and key_hex")
        if self.mode == "rpk" and not self.private_key:
            raise CredentialsError("an rpk credential needs private_key")
        if self.mode == "bootstrap" and not (self.identity and self.key_hex) and not self.private_key:
            raise CredentialsError("a bootstrap credential needs identity and key_hex, or private_key")

    @property
    def uses_public_key(self) -> bool:
        """It proves itself with a key pair (and so must know the server's public key)."""
        return bool(self.private_key)

    @property
    def key(self) -> bytes:
        return bytes.fromhex(self.key_hex)

    def signing_key(self) -> ec.EllipticCurvePrivateKey:
        key = serialization.load_pem_private_key(self.private_key.encode(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
            raise CredentialsError("an rpk private key must be P-256")
        return key

    def public_key_pem(self) -> str:
        """What Fleet registers for an RPK device (PUT .../security {"mode": "rpk", "public_key": ...})."""
        return self.signing_key().public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()

    def security_body(self) -> dict[str, str]:
        """The body of PUT /api/v1/devices/{id}/security that gives Fleet this credential."""
        if self.mode == "psk":
            return {"mode": "psk", "identity": self.identity, "key_hex": self.key_hex}
        if self.mode == "bootstrap" and self.uses_public_key:
            return {"mode": "rpk", "purpose": "bootstrap", "public_key": self.public_key_pem()}
        if self.mode == "bootstrap":
            return {"mode": "psk", "purpose": "bootstrap", "identity": self.identity, "key_hex": self.key_hex}
        if self.mode == "rpk":
            return {"mode": "rpk", "public_key": self.public_key_pem()}
        raise CredentialsError("a nosec device has no credential to set")


def new_credential(mode: str, endpoint: str, *, key_pair: bool = False) -> DeviceCredential:
    """A fresh credential: random keys, the endpoint as PSK identity (unique across cities,
    because simulated endpoints carry their city's slug), a random suffix for a bootstrap one;
    `key_pair`: a bootstrap key pair instead of a bootstrap PSK (a city that takes no PSK)."""
    if mode == "psk":
        return DeviceCredential("psk", endpoint, secrets.token_hex(PSK_BYTES))
    if mode == "bootstrap" and key_pair:
        return DeviceCredential("bootstrap", private_key=_new_private_key())
    if mode == "bootstrap":
        return DeviceCredential("bootstrap", f"{endpoint}-bs-{secrets.token_hex(3)}", secrets.token_hex(PSK_BYTES))
    if mode == "rpk":
        return DeviceCredential("rpk", private_key=_new_private_key())
    return DeviceCredential("nosec")


def _new_private_key() -> str:
    return ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()


@dataclass
class CredentialsFile:
    devices: dict[str, DeviceCredential] = field(default_factory=dict)
    server_public_key: str = ""  # Fleet's coaps key (PEM), which RPK devices check the server by

    @classmethod
    def load(cls, path: Path) -> CredentialsFile:
        """The file's credentials; a missing file is empty."""
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return cls()
        except (OSError, ValueError) as exc:
            raise CredentialsError(f"cannot read credentials file {path}: {exc}") from None
        try:
            devices = {endpoint: DeviceCredential(**entry)
                       for endpoint, entry in (document.get("devices") or {}).items()}
        except TypeError as exc:
            raise CredentialsError(f"credentials file {path}: {exc}") from None
        return cls(devices, document.get("server_public_key") or "")

    def save(self, path: Path) -> None:
        """Write it for its owner only (0600 from creation: it holds keys), replacing the old
        file at once so the simulator never reads half of it."""
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.{os.getpid()}")
        descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        document = {"server_public_key": self.server_public_key,
                    "devices": {endpoint: {k: v for k, v in asdict(credential).items() if v}
                                for endpoint, credential in sorted(self.devices.items())}}
        with os.fdopen(descriptor, "w", encoding="utf-8") as out:
            json.dump(document, out, indent=1)
        os.replace(partial, path)

    def server_key_der(self) -> bytes:
        """The server's public key as SubjectPublicKeyInfo DER (what LwM2M /0/x/4 holds)."""
        if not self.server_public_key:
            return b""
        key = serialization.load_pem_public_key(self.server_public_key.encode())
        return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
