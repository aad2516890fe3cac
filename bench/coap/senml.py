"""Default LwM2M Send payloads: a SenML pack of K readings from a smart-city device.

Every reading of one (client, seq) pack has a distinct (path, time), and packs of one client
never share a time, so a benchmark can count stored rows and expect exactly
``points × acknowledged requests`` of them.
"""

from __future__ import annotations

import struct
import time
from dataclasses import dataclass, field

import cbor2
import msgspec

from protocols.coap import message

# (path, baseline value, spread): what a street-side sensor node reports.
READINGS: tuple[tuple[str, float, float], ...] = (
    ("/3303/0/5700", 12.0, 20.0),  # temperature, °C
    ("/3435/0/2", 0.0, 100.0),  # fill percentage of a waste bin, %
    ("/3304/0/5700", 30.0, 60.0),  # humidity, %RH
    ("/3/0/9", 5.0, 95.0),  # battery level, %
    ("/3435/0/3", 0.0, 120.0),  # actual fill level, cm
    ("/3325/0/5700", 5.0, 80.0),  # NO2 concentration, µg/m³
    ("/3301/0/5700", 0.0, 20000.0),  # illuminance, lx
    ("/3316/0/5700", 3.3, 0.9),  # supply voltage, V
    ("/3328/0/5700", 0.0, 150.0),  # lamp power, W
    ("/3330/0/5700", 0.2, 4.0),  # distance (parking occupancy), m
)

# RFC 8428 integer labels for SenML CBOR.
_BT, _N, _V, _T = -3, 0, 2, 6
_FLOAT64 = struct.Struct(">d")

SENML_FORMATS = {"cbor": message.SENML_CBOR, "json": message.SENML_JSON}


@dataclass
class SenmlPack:
    """Callable ``(client_index, seq) -> bytes`` building one Send payload.

    The pack's base time is ``base_time + seq`` seconds; readings past the tenth repeat the
    paths with a millisecond offset so (path, time) stays unique for up to 10 000 points.
    """

    points: int = 10
    format: str = "cbor"
    base_time: int = field(default_factory=lambda: int(time.time()))

    def __post_init__(self) -> None:
        if self.format not in SENML_FORMATS:
            raise ValueError(f"format must be one of {sorted(SENML_FORMATS)}")
        if not 1 <= self.points <= 10_000:
            raise ValueError("points must be between 1 and 10000")
        # Every record but the first is pre-encoded for each of 100 phases, so a pack costs
        # a join rather than an encoder run: the generator must stay cheap per request.
        self._points = []
        for i in range(self.points):
            path, low, spread = READINGS[i % len(READINGS)]
            values = tuple(round(low + spread * phase / 100, 3) for phase in range(100))
            offset = (i // len(READINGS)) / 1000
            encoded = tuple(self._encode_record(path, value, offset) for value in values)
            self._points.append((i * 7, path, values, offset, encoded))
        if self.format == "cbor":
            self._array_header = cbor2.dumps([0] * self.points)[: -self.points]

    def _encode_record(self, path: str, value: float, offset: float) -> bytes:
        if self.format == "cbor":
            return cbor2.dumps({_N: path, _V: value, _T: offset} if offset else {_N: path, _V: value})
        return msgspec.json.encode({"n": path, "v": value, "t": offset} if offset else {"n": path, "v": value})

    @property
    def content_format(self) -> int:
        return SENML_FORMATS[self.format]

    def readings(self, client_index: int, seq: int) -> list[tuple[str, float, float]]:
        """(path, value, time offset in s) of each point of one pack: what a store should hold."""
        phase = client_index * 37 + seq * 11
        return [(path, values[(phase + shift) % 100], offset)
                for shift, path, values, offset, _ in self._points]

    def __call__(self, client_index: int, seq: int) -> bytes:
        phase = client_index * 37 + seq * 11
        records = [encoded[(phase + shift) % 100] for shift, _, _, _, encoded in self._points]
        base_time = float(self.base_time + seq)
        first = records[0]
        if self.format == "cbor":
            # The first record is a map of fewer than 24 entries: one header byte to bump.
            records[0] = b"".join((bytes((first[0] + 1,)), first[1:], b"\x22\xfb",
                                   _FLOAT64.pack(base_time)))
            return self._array_header + b"".join(records)
        records[0] = b"".join((first[:-1], b',"bt":', repr(base_time).encode(), b"}"))
        return b"[" + b",".join(records) + b"]"
