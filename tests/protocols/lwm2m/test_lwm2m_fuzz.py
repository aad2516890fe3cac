"""Random, truncated and mutated payloads: every decoder either succeeds or raises CodecError."""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable
from pathlib import Path

import cbor2
import pytest

from fleet.objectmodel import CATALOG, ResourcePath
from protocols.lwm2m import linkformat, lwm2m_cbor, senml, tlv, values
from protocols.lwm2m.errors import CodecError

P = ResourcePath.parse


def _typed_senml_json(data: bytes) -> object:
    return values.typed(senml.decode_json(data), CATALOG)


def _typed_senml_cbor(data: bytes) -> object:
    return values.typed(senml.decode_cbor(data), CATALOG)


def _typed_lwm2m_cbor(data: bytes) -> object:
    return values.typed(lwm2m_cbor.decode(data, within=P("/3")), CATALOG)


DECODERS: dict[str, Callable[[bytes], object]] = {
    "senml-json": _typed_senml_json,
    "senml-cbor": _typed_senml_cbor,
    "lwm2m-cbor": _typed_lwm2m_cbor,
    "tlv-object": lambda data: tlv.decode_typed(data, P("/3"), CATALOG),
    "tlv-instance": lambda data: tlv.decode_typed(data, P("/3/0"), CATALOG),
    "tlv-resource": lambda data: tlv.decode_typed(data, P("/3/0/6"), CATALOG),
    "tlv-resource-instance": lambda data: tlv.decode_typed(data, P("/3/0/6/1"), CATALOG),
    "link-format": linkformat.parse,
}
FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "lwm2m"
SEEDS = [path.name for path in sorted(FIXTURES.iterdir()) if path.suffix != ".md"]


def _only_codec_errors(decode: Callable[[bytes], object], data: bytes) -> None:
    try:
        decode(data)
    except CodecError as exc:
        message = str(exc)
        assert message.isascii() and 0 < len(message) <= 120, message
    # Any other exception propagates and fails the test, with the payload in the traceback.


@pytest.mark.parametrize("decoder", DECODERS)
def test_random_bytes(decoder: str) -> None:
    rng = random.Random(f"random-{decoder}")
    for _ in range(3000):
        data = rng.randbytes(rng.randint(0, 48))
        _only_codec_errors(DECODERS[decoder], data)


@pytest.mark.parametrize("decoder", DECODERS)
@pytest.mark.parametrize("seed", SEEDS)
def test_truncated_and_mutated_fixtures(decoder: str, seed: str, payload) -> None:
    original = payload(seed)
    decode = DECODERS[decoder]
    for end in range(len(original)):
        _only_codec_errors(decode, original[:end])
    rng = random.Random(f"mutate-{decoder}-{seed}")
    for _ in range(300):
        data = bytearray(original)
        for _ in range(rng.randint(1, 4)):
            position = rng.randrange(len(data))
            choice = rng.random()
            if choice < 0.5:
                data[position] = rng.randrange(256)
            elif choice < 0.75:
                del data[position]
            else:
                data.insert(position, rng.randrange(256))
        _only_codec_errors(decode, bytes(data))


def _random_item(rng: random.Random, depth: int = 0) -> object:
    leaves = [
        lambda: rng.randint(-(2**70), 2**70),
        lambda: rng.randint(-5, 70000),
        lambda: rng.choice([0.5, -1e308, math.inf, math.nan, 1e-300]),
        lambda: rng.choice(["/3/0/9", "/3/0/", "9", "6/1", "/3303/0/5700", "x", "", "3416:0"]),
        lambda: rng.randbytes(rng.randint(0, 4)),
        lambda: rng.choice([True, False, None, cbor2.undefined]),
        lambda: cbor2.CBORTag(rng.choice([0, 1, 2, 4, 30, 37, 258, 55799, 12345]),
                              rng.choice([0, 1.5, "2024", b"\x01", [1]])),
    ]
    if depth < 4 and rng.random() < 0.4:
        if rng.random() < 0.5:
            return [_random_item(rng, depth + 1) for _ in range(rng.randint(0, 3))]
        keys = [-6, -5, -4, -3, -2, -1, 0, 1, 2, 3, 4, 5, 6, 7, 8, "vlo", 3, 13, 26, (3, 0),
                (3, 0, 6), (13, 26, 1), 70000]
        return {rng.choice(keys): _random_item(rng, depth + 1) for _ in range(rng.randint(0, 4))}
    return rng.choice(leaves)()


def test_random_cbor_documents() -> None:
    rng = random.Random("cbor-documents")
    for _ in range(4000):
        document = _random_item(rng)
        if rng.random() < 0.5:
            document = [_random_item(rng, 1) for _ in range(rng.randint(1, 3))]
        data = cbor2.dumps(document)
        for decoder in ("senml-cbor", "lwm2m-cbor"):
            _only_codec_errors(DECODERS[decoder], data)


def test_random_json_documents() -> None:
    rng = random.Random("json-documents")
    labels = ["bn", "bt", "bu", "bv", "bver", "bs", "n", "u", "v", "vs", "vb", "vd", "vlo", "s",
              "t", "ut", "x"]
    scalars = [0, -1, 2**64, 1.5, 1e308, "", "/3/0/", "9", "/3/0/9", "AAE", "3:0", True, None]
    for _ in range(4000):
        records = [{rng.choice(labels): rng.choice(scalars) for _ in range(rng.randint(0, 5))}
                   for _ in range(rng.randint(0, 4))]
        _only_codec_errors(DECODERS["senml-json"], json.dumps(records).encode())
