"""Device keys at rest (AES-GCM bound to the credential's id), the derived server key, and the checks
a PSK or a raw public key passes before it is stored."""

from __future__ import annotations

import uuid

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from fleet.errors import SettingsError
from fleet.security.crypto import CredentialCipher, public_key_xy, server_key, server_public_key_der
from fleet.security.validation import (credentials_from_row, duplicate_credentials, parse_key_hex,
                                       parse_public_key, psk_identity_errors)
from fleet.settings import SecuritySettings, parse_credentials_key

KEY = SecuritySettings(credentials_key=bytes(range(32)))
OTHER = SecuritySettings(credentials_key=bytes(range(1, 33)))


def pem(key) -> str:
    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def test_a_sealed_key_opens_only_for_its_own_credential_and_master_key():
    credential_id = uuid.uuid4()
    ciphertext, nonce = CredentialCipher(KEY).seal(credential_id, b"k" * 16)
    assert b"k" * 16 not in ciphertext and len(nonce) == 12
    assert CredentialCipher(KEY).open(credential_id, ciphertext, nonce) == b"k" * 16
    assert CredentialCipher(KEY).open(uuid.uuid4(), ciphertext, nonce) is None   # copied onto another row
    assert CredentialCipher(OTHER).open(credential_id, ciphertext, nonce) is None
    # A fresh nonce each time: the same key never gives the same ciphertext.
    assert CredentialCipher(KEY).seal(credential_id, b"k" * 16)[0] != ciphertext


def test_without_a_credentials_key_nothing_is_sealed_and_the_error_names_the_variable():
    with pytest.raises(SettingsError, match="FLEET_CREDENTIALS_KEY"):
        CredentialCipher(SecuritySettings())
    with pytest.raises(SettingsError, match="FLEET_CREDENTIALS_KEY"):
        server_key(SecuritySettings())


@pytest.mark.parametrize("raw", ["abc", "00" * 31, "00" * 33, "zz" * 32])
def test_a_malformed_credentials_key_is_refused_without_echoing_it(raw):
    with pytest.raises(SettingsError) as refused:
        parse_credentials_key(raw)
    assert raw not in str(refused.value)


def test_the_server_key_is_the_same_on_every_node_and_differs_per_credentials_key():
    first, again, other = server_key(KEY), server_key(KEY), server_key(OTHER)
    assert isinstance(first.curve, ec.SECP256R1)
    assert first.private_numbers() == again.private_numbers()
    assert first.private_numbers() != other.private_numbers()
    der = server_public_key_der(KEY)
    assert serialization.load_der_public_key(der).public_numbers() == first.public_key().public_numbers()


@pytest.mark.parametrize(("identity", "ok"), [
    ("a", True), ("x" * 32, True), ("x" * 33, False), ("", False),
    ("가" * 10, True), ("가" * 11, False),   # three bytes each in UTF-8: 30 and 33
    ("dev\x00ice", False), ("tab\there", False)])
def test_psk_identities_are_1_to_32_bytes_of_utf8(identity, ok):
    """32: tinydtls' DTLS_PSK_MAX_CLIENT_IDENTITY_LEN (a longer identity can never handshake)."""
    assert (psk_identity_errors(identity) == []) is ok


@pytest.mark.parametrize(("key_hex", "size"), [
    ("00" * 16, 16), ("AB" * 16, 16), (" " + "0f" * 16 + "\n", 16),
    ("00" * 15, None), ("00" * 17, None), ("AB" * 64, None), ("0" * 33, None), ("xy" * 16, None), ("", None)])
def test_psk_keys_are_16_bytes_of_hex(key_hex, size):
    """16: tinydtls' DTLS_PSK_MAX_KEY_LEN (a longer key fails every handshake with internal_error)."""
    key, errors = parse_key_hex(key_hex)
    assert (len(key) if key else None) == size
    assert bool(errors) is (size is None)


def test_a_raw_public_key_must_be_a_p256_subject_public_key_info():
    device = ec.generate_private_key(ec.SECP256R1())
    (der, xy), errors = parse_public_key(pem(device))
    assert errors == [] and xy == public_key_xy(device.public_key()) and len(xy) == 64
    assert serialization.load_der_public_key(der).public_numbers() == device.public_key().public_numbers()
    for refused in (pem(ec.generate_private_key(ec.SECP384R1())),
                    pem(rsa.generate_private_key(public_exponent=65537, key_size=1024)),
                    "-----BEGIN PUBLIC KEY-----\nnot base64\n-----END PUBLIC KEY-----", "04" + xy.hex()):
        parsed, errors = parse_public_key(refused)
        assert parsed is None and errors[0].field == "public_key", refused


def test_import_columns_give_the_credentials_of_a_row_or_every_fault():
    credentials, errors = credentials_from_row({"psk_identity": "lamp-1", "psk_key_hex": "11" * 16,
                                                "bootstrap_psk_identity": "bs-lamp-1",
                                                "bootstrap_psk_key_hex": "22" * 16}, 2)
    assert errors == [] and [(c.purpose, c.mode, c.identity, c.key) for c in credentials] == [
        ("operational", "psk", "lamp-1", b"\x11" * 16), ("bootstrap", "psk", "bs-lamp-1", b"\x22" * 16)]
    assert credentials_from_row({"security_mode": "nosec"}, 2) == ([], [])
    assert credentials_from_row({"security_mode": ""}, 2) == ([], [])
    _, errors = credentials_from_row({"security_mode": "psk", "psk_identity": "lamp-1"}, 3)
    assert [(e.field, e.row) for e in errors] == [("psk_key_hex", 3)]
    _, errors = credentials_from_row({"security_mode": "rpk", "psk_identity": "x"}, 4)
    assert {e.field for e in errors} == {"psk_identity", "public_key"}
    _, errors = credentials_from_row({"security_mode": "x509"}, 5)
    assert errors[0].field == "security_mode"
    rows = [(2, credentials_from_row({"psk_identity": "same", "psk_key_hex": "11" * 16}, 2)[0]),
            (3, credentials_from_row({"psk_identity": "same", "psk_key_hex": "22" * 16}, 3)[0])]
    assert [(e.field, e.row, e.message) for e in duplicate_credentials(rows)] == [
        ("psk_identity", 3, "duplicates row 2")]


def test_the_credentials_key_is_read_from_fleet_credentials_key(monkeypatch, tmp_path):
    from fleet.settings import load_settings

    monkeypatch.setenv("FLEET_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("FLEET_CREDENTIALS_KEY", "ab" * 32)
    settings = load_settings()
    assert settings.security.credentials_key == b"\xab" * 32 and "ab" * 32 not in repr(settings)
    monkeypatch.setenv("FLEET_CREDENTIALS_KEY", "")
    assert load_settings().security.credentials_key is None


def test_no_key_shows_in_a_repr():
    from fleet.security.directory import _Entry
    from fleet.security.models import ImportedCredential, IssuedPsk, KnownCredential
    from protocols.coap.dtls import PskCredentials
    key = bytes.fromhex("5ec2e7" * 5 + "00")
    known = KnownCredential(uuid.uuid4(), uuid.uuid4(), uuid.uuid4(), "sl-1", "operational", "psk", "active")
    for holder in (IssuedPsk("id", key, known), ImportedCredential("operational", "psk", "id", key),
                   _Entry(known, b"id", key, None), PskCredentials(b"id", key)):
        assert holder.key == key and str(key) not in repr(holder) and "5ec2e7" not in repr(holder)
