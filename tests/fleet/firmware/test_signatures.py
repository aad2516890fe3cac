"""Ed25519 release keys and signatures, without a database: what a key is, what verifies, what a
signature field may be."""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fleet.errors import ValidationFailed
from fleet.firmware.models import comma_list
from fleet.firmware.signatures import (BadKey, fingerprint, load_public_key, new_signing_key, sign,
                                       signature_from_base64, signing_key, verifies)


def test_a_new_key_signs_what_its_public_key_verifies():
    private, public = new_signing_key()
    assert private.startswith(b"-----BEGIN PRIVATE KEY-----") and public.startswith("-----BEGIN PUBLIC KEY-----")
    signature = signature_from_base64(sign(signing_key(private), b"image"))
    assert len(signature) == 64
    assert verifies(public, signature, b"image")
    assert not verifies(public, signature, b"image!")
    assert not verifies(new_signing_key()[1], signature, b"image")
    assert not verifies("not a key", signature, b"image")


def test_the_fingerprint_is_the_raw_key_whatever_the_pem_spelling():
    _, public = new_signing_key()
    respelled = public.replace("\n", "\r\n")
    assert fingerprint(load_public_key(public)) == fingerprint(load_public_key(respelled))
    assert fingerprint(load_public_key(public)) != fingerprint(load_public_key(new_signing_key()[1]))


@pytest.mark.parametrize("pem", [
    "",
    "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
    ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode(),
])
def test_only_ed25519_public_keys_are_release_keys(pem):
    with pytest.raises(BadKey):
        load_public_key(pem)


def test_a_private_key_of_another_kind_does_not_sign():
    with pytest.raises(BadKey, match="Ed25519"):
        signing_key(ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    with pytest.raises(BadKey):
        signing_key(b"nothing")


def test_a_signature_field_is_base64_of_64_bytes_with_line_breaks_allowed():
    signature = Ed25519PrivateKey.generate().sign(b"x")
    text = base64.b64encode(signature).decode()
    assert signature_from_base64(f"{text[:40]}\n{text[40:]}\n") == signature
    for bad, says in (("***", "base64"), (base64.b64encode(bytes(63)).decode(), "64 bytes"), ("", "64 bytes")):
        with pytest.raises(ValidationFailed) as refused:
            signature_from_base64(bad)
        assert refused.value.errors[0].field == "signature" and says in refused.value.errors[0].message


def test_models_and_manufacturers_are_comma_separated_and_empty_means_any():
    assert comma_list("") == ()
    assert comma_list(" SL-100, SL-200,,SL-100 ") == ("SL-100", "SL-200")
