"""SenML JSON (110) and CBOR (112) packs, RFC 8428 as LwM2M 1.1 uses them, to and from readings.

Decoding resolves base name, base time and base value (RFC 8428 §4.5) into one Reading per
record. It is on the ingest hot path: one msgspec/cbor2 call, then a single loop over plain
dicts; the only object built per record is the Reading.
"""

from __future__ import annotations

import binascii
import math
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import NamedTuple

import cbor2
import msgspec

from fleet.objectmodel import Reading, ResourcePath, parse_objlnk
from fleet.objectmodel.coerce import timestamp_to_datetime
from protocols.lwm2m.errors import CodecError
from protocols.lwm2m.lwm2m_cbor import MAX_PAYLOAD_BYTES, loads_strict
from protocols.lwm2m.values import check_integer, check_number, check_text, objlnk_text, seconds

JSON_CONTENT_FORMAT = 110
CBOR_CONTENT_FORMAT = 112
MAX_RECORDS = 10_000
# RFC 8428 §4.5.3: times below 2**28 are relative to now, the rest are Unix times.
RELATIVE_TIME_LIMIT = 2**28
SUPPORTED_VERSION = 10


class _Labels(NamedTuple):
    bver: object
    bn: object
    bt: object
    bu: object
    bv: object
    n: object
    u: object
    v: object
    vs: object
    vb: object
    vd: object
    vlo: object
    t: object
    ut: object


# Sums (s, bs) are left out on purpose: LwM2M never sends them, so a record holding one is refused.
_JSON = _Labels(*_Labels._fields)
_CBOR = _Labels(bver=-1, bn=-2, bt=-3, bu=-4, bv=-5, n=0, u=1, v=2, vs=3, vb=4, vd=8, vlo="vlo",
                t=6, ut=7)
_JSON_PACK = list[dict[str, int | float | str | bool]]
_KNOWN_LABELS = {_JSON: frozenset(_JSON), _CBOR: frozenset(_CBOR)}


def decode_json(payload: bytes, *, now: datetime | None = None) -> list[Reading]:
    """Readings of a SenML JSON pack; now (default: the clock) anchors relative times."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise CodecError("payload is too large")
    try:
        # The typed decode keeps nesting out: a record's fields must be scalars.
        records = msgspec.json.decode(payload, type=_JSON_PACK)
    except msgspec.DecodeError as exc:
        raise CodecError(f"invalid SenML JSON: {exc}") from None
    except UnicodeDecodeError:  # msgspec lets this one through for bad bytes inside strings
        raise CodecError("invalid SenML JSON: not UTF-8") from None
    return _resolve(records, _JSON, now)


def decode_cbor(payload: bytes, *, now: datetime | None = None) -> list[Reading]:
    """Readings of a SenML CBOR pack; now (default: the clock) anchors relative times."""
    records = loads_strict(bytes(payload), max_depth=3)
    if type(records) is not list:
        raise CodecError("a SenML pack is an array")
    return _resolve(records, _CBOR, now)


def _resolve(records: list, labels: _Labels, now: datetime | None) -> list[Reading]:
    if len(records) > MAX_RECORDS:
        raise CodecError("too many SenML records")
    key_n, key_t, key_v, key_vs, key_vb, key_vd, key_vlo = (
        labels.n, labels.t, labels.v, labels.vs, labels.vb, labels.vd, labels.vlo)
    parse_path, new_reading, isfinite = ResourcePath.parse, tuple.__new__, math.isfinite
    data_as_text = labels is _JSON
    context = _Context()
    times: dict[float, datetime] = {}
    readings = []
    for index, record in enumerate(records):
        if type(record) is not dict:
            raise CodecError(f"record {index} is not a map")
        name = record.get(key_n, "")
        time = record.get(key_t)
        value_label = (
            key_v if key_v in record
            else key_vs if key_vs in record
            else key_vb if key_vb in record
            else key_vd if key_vd in record
            else key_vlo if key_vlo in record
            else None
        )
        # A record holding only n, t and one value takes this path; anything more (base
        # fields, units, extra values, unknown labels) is checked by the context.
        if len(record) != (key_n in record) + (time is not None) + (value_label is not None):
            context.update(record, index, labels)
        if value_label is None:
            raise CodecError(f"record {index} has no value")
        if type(name) is not str:
            raise CodecError(f"record {index}: n is not a string")
        try:
            path = parse_path(context.base_name + name)
        except ValueError:
            raise CodecError(f"record {index}: name is not an LwM2M path") from None
        if path.resource is None:
            raise CodecError(f"record {index}: {path} is not a resource path")

        value = record[value_label]
        kind = type(value)
        if value_label == key_v:
            if not ((kind is float and isfinite(value))
                    or (kind is int and _INT_MIN <= value <= _INT_MAX)):
                raise CodecError(f"record {index}: v is not a finite 64-bit number")
            if context.base_value is not None:
                value = check_number(context.base_value + value, f"record {index} v")
            if type(value) is int and value > _INT64_MAX:
                check_integer(value, path)  # only Unsigned Integer resources go that high
        elif value_label == key_vs:
            if kind is not str:
                raise CodecError(f"record {index}: vs is not a string")
            check_text(value, f"record {index} vs")
        elif value_label == key_vb:
            if kind is not bool:
                raise CodecError(f"record {index}: vb is not a boolean")
        elif value_label == key_vd:
            value = _data_value(value, index, data_as_text)
        else:
            value = _objlnk_value(value, index)

        base_time = context.base_time
        if time is None and base_time is None:
            moment = None
        else:
            if time is not None and not (type(time) is int
                                         or (type(time) is float and isfinite(time))):
                raise CodecError(f"record {index}: t is not a finite number")
            resolved = (base_time or 0) + (time or 0)
            moment = times.get(resolved)
            if moment is None:
                moment = times[resolved] = _moment(resolved, now, index)
        # tuple.__new__ skips NamedTuple's Python-level __new__: a third off per data point.
        readings.append(new_reading(Reading, (path, moment, value)))
    return readings


_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1
_INT64_MAX = 2**63 - 1


class _Context:
    """The base fields in force while a pack is read (RFC 8428 §4.5)."""

    __slots__ = ("base_name", "base_time", "base_value")

    def __init__(self) -> None:
        self.base_name = ""
        self.base_time: int | float | None = None
        self.base_value: int | float | None = None

    def update(self, record: dict, index: int, labels: _Labels) -> None:
        """Take in a record's base fields, after checking all its labels and their types."""
        unknown = record.keys() - _KNOWN_LABELS[labels]
        if unknown:
            raise CodecError(f"record {index} has unsupported label {next(iter(unknown))!r}")
        values = ((labels.v in record) + (labels.vs in record) + (labels.vb in record)
                  + (labels.vd in record) + (labels.vlo in record))
        if values > 1:
            raise CodecError(f"record {index} must have exactly one value")
        for label in (labels.bn, labels.n, labels.bu, labels.u):
            if label in record and type(record[label]) is not str:
                raise CodecError(f"record {index}: a name or unit is not a string")
        for label in (labels.t, labels.ut):
            if label in record:
                check_number(record[label], f"record {index} time")
        if labels.bver in record:
            version = record[labels.bver]
            if type(version) is not int or version > SUPPORTED_VERSION:
                raise CodecError(f"record {index}: unsupported SenML version")
        if labels.bn in record:
            self.base_name = record[labels.bn]
        if labels.bt in record:
            self.base_time = check_number(record[labels.bt], f"record {index} bt")
        if labels.bv in record:
            self.base_value = check_number(record[labels.bv], f"record {index} bv")


def _moment(resolved: float, now: datetime | None, index: int) -> datetime:
    # RFC 8428 §4.5.3: below 2**28 a time counts from now; from 2**28 on it is a Unix time.
    if resolved < RELATIVE_TIME_LIMIT:
        resolved += (now or datetime.now(UTC)).timestamp()
    try:
        return timestamp_to_datetime(resolved)
    except ValueError:
        raise CodecError(f"record {index}: time is out of range") from None


def _objlnk_value(value: object, index: int) -> tuple[int, int]:
    if type(value) is not str:
        raise CodecError(f"record {index}: vlo is not a string")
    try:
        return parse_objlnk(value)
    except ValueError:
        raise CodecError(f"record {index}: vlo is not an object link") from None


def _data_value(value: object, index: int, as_text: bool) -> bytes:
    if not as_text:
        if type(value) is not bytes:
            raise CodecError(f"record {index}: vd is not a byte string")
        return value
    if type(value) is not str:
        raise CodecError(f"record {index}: vd is not a string")
    # RFC 8428 §4.3: base64url with padding omitted; padding is tolerated, other alphabets not.
    text = value.rstrip("=")
    if not text.isascii() or "+" in text or "/" in text or len(text) % 4 == 1:
        raise CodecError(f"record {index}: vd is not base64url")
    standard = text.replace("-", "+").replace("_", "/") + "=" * (-len(text) % 4)
    try:
        return binascii.a2b_base64(standard, strict_mode=True)
    except binascii.Error:
        raise CodecError(f"record {index}: vd is not base64url") from None


def encode_json(readings: Iterable[Reading]) -> bytes:
    """A SenML JSON pack: bn per object instance, bt shared when every reading has a time."""
    return msgspec.json.encode(_pack(readings, _JSON, _base64url))


def encode_cbor(readings: Iterable[Reading]) -> bytes:
    """The SenML CBOR form of encode_json's pack."""
    return cbor2.dumps(_pack(readings, _CBOR, bytes))


def _base64url(data: bytes) -> str:
    text = binascii.b2a_base64(data, newline=False).decode()
    return text.rstrip("=").replace("+", "-").replace("/", "_")


def _pack(readings: Iterable[Reading], labels: _Labels, data_form) -> list[dict]:
    readings = list(readings)
    times = [None if reading.time is None else seconds(reading.time) for reading in readings]
    if any(time is not None and time < RELATIVE_TIME_LIMIT for time in times):
        raise CodecError("times before mid-1978 would read as relative times")
    # One base time serves when all readings are timed; a mix keeps absolute times per record,
    # since a base time would wrongly date the untimed ones.
    shared_base = times[0] if times and None not in times else None
    records = []
    base_name = None
    for reading, time in zip(readings, times, strict=True):
        path = reading.path
        if not path.is_resource_level:
            raise CodecError(f"{path} is not a resource path")
        record: dict = {}
        prefix = f"/{path.object}/{path.instance}/"
        if prefix != base_name:
            record[labels.bn] = base_name = prefix
        if shared_base is not None and not records:
            record[labels.bt] = shared_base
        tail = str(path.resource)
        if path.resource_instance is not None:
            tail += f"/{path.resource_instance}"
        record[labels.n] = tail
        if time is not None and time != shared_base:
            record[labels.t] = time - shared_base if shared_base is not None else time
        label, value = _wire_value(reading.value, labels, data_form)
        record[label] = value
        records.append(record)
    return records


def _wire_value(value: object, labels: _Labels, data_form) -> tuple[object, object]:
    if isinstance(value, bool):
        return labels.vb, value
    if isinstance(value, int | float):
        if isinstance(value, float) and not math.isfinite(value):
            raise CodecError("values must be finite")
        return labels.v, value
    if isinstance(value, str):
        return labels.vs, value
    if isinstance(value, bytes | bytearray):
        return labels.vd, data_form(bytes(value))
    if isinstance(value, datetime):
        return labels.v, seconds(value)
    if isinstance(value, tuple):
        return labels.vlo, objlnk_text(value)
    raise CodecError(f"cannot encode a {type(value).__name__} value")
