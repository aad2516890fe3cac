"""`fleet firmware keygen` and `sign`: a key made on the command line signs what Fleet then
verifies; no database involved."""

from __future__ import annotations

import base64
import stat

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from api.cli import main
from fleet.firmware.signatures import signature_from_base64, verifies


def test_keygen_then_sign_round_trip(tmp_path, capsys):
    key_file = tmp_path / "release.pem"
    assert main(["firmware", "keygen", "--out", str(key_file)]) == 0
    public = capsys.readouterr().out
    assert public.startswith("-----BEGIN PUBLIC KEY-----") and public.rstrip().endswith("-----END PUBLIC KEY-----")
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600

    image = tmp_path / "lamp.bin"
    image.write_bytes(b"\x00firmware\xff" * 1000)
    assert main(["firmware", "sign", str(image), "--key", str(key_file)]) == 0
    signature = signature_from_base64(capsys.readouterr().out)
    assert verifies(public, signature, image.read_bytes())
    assert not verifies(public, signature, image.read_bytes() + b"!")


def test_keygen_never_overwrites_a_key(tmp_path, capsys):
    key_file = tmp_path / "release.pem"
    key_file.write_text("the key images were signed with")
    assert main(["firmware", "keygen", "--out", str(key_file)]) == 1
    assert "cannot write" in capsys.readouterr().err
    assert key_file.read_text() == "the key images were signed with"


def test_sign_says_what_is_wrong(tmp_path, capsys):
    image = tmp_path / "lamp.bin"
    image.write_bytes(b"firmware")
    assert main(["firmware", "sign", str(image), "--key", str(tmp_path / "missing.pem")]) == 1
    assert "missing.pem" in capsys.readouterr().err
    not_a_key = tmp_path / "notes.txt"
    not_a_key.write_text("hello")
    assert main(["firmware", "sign", str(image), "--key", str(not_a_key)]) == 1
    assert "private key" in capsys.readouterr().err
    # A key made elsewhere (cryptography's own PKCS#8 PEM) signs as well.
    other = tmp_path / "other.pem"
    other.write_bytes(Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    assert main(["firmware", "sign", str(image), "--key", str(other)]) == 0
    assert len(base64.b64decode(capsys.readouterr().out)) == 64
