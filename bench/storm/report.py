"""What one storm found per configuration, and how it is printed: the sides, the table, the last line."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

REST_PATH = "/api/v1/devices?limit=50"
SEND_SETTLE_S = 10.0  # after the storm, Sends still in flight get this long to be answered
TARGET_P99_MS = 100.0
TARGET_ONLINE_S = 60.0


@dataclass
class Latency:
    requests: int
    failed: dict[str, int]  # by status: not 2xx, or "no answer"
    p50_ms: float
    p99_ms: float
    max_ms: float

    def text(self) -> str:
        failed = sum(self.failed.values())
        how = ", ".join(f"{status} {n}" for status, n in sorted(self.failed.items()))
        failed_text = f", {failed} failed: {how}" if failed else ""
        return (f"p50 {self.p50_ms:.0f} ms, p99 {self.p99_ms:.0f} ms, max {self.max_ms:.0f} ms "
                f"({self.requests} requests{failed_text})")


def latency(records: list[list[float]], start: float, end: float) -> Latency:
    """The requests due in [start, end), however late they were answered."""
    inside = [r for r in records if start <= r[0] < end]
    ordered = sorted(r[1] for r in inside)
    failed: dict[str, int] = {}
    for _, _, status in inside:
        if not 200 <= status < 300:
            key = str(status) if status else "no answer"
            failed[key] = failed.get(key, 0) + 1

    def quantile(fraction: float) -> float:
        if not ordered:
            return math.nan
        return ordered[max(1, math.ceil(fraction * len(ordered))) - 1] * 1000

    return Latency(len(inside), failed, round(quantile(0.5), 1), round(quantile(0.99), 1), round(quantile(1.0), 1))


@dataclass
class Side:
    """One configuration of `fleet serve` through the whole storm."""

    label: str
    flags: list[str]
    devices: int
    before: Latency
    during: Latency
    online: int
    read: int
    online_s: float | None  # until the last light registered (None: not all by the cap)
    read_s: float | None  # until the last light's /3/0 was recorded
    storm_s: float  # how long the storm phase ran: until all were online and read, or the cap
    counters: dict  # the lights' own counts, summed over the load processes, Sends settled
    cpu_before: dict | None = None
    cpu_storm: dict | None = None

    @property
    def done_s(self) -> float | None:
        """Until every light was online and read."""
        if self.online_s is None or self.read_s is None:
            return None
        return max(self.online_s, self.read_s)

    @property
    def sends(self) -> dict[str, int]:
        c = self.counters
        return {"sent": c["sends"], "acked": c["sends_acked"], "refused_busy": c["sends_busy"],
                "refused_other": c["sends_failed"] - c["sends_busy"] - c["sends_lost"],
                "lost": c["sends_lost"], "unanswered": c["sends"] - c["sends_acked"] - c["sends_failed"]}

    def to_dict(self) -> dict:
        return {**asdict(self), "done_s": self.done_s, "sends": self.sends}


def side_lines(side: Side) -> list[str]:
    s = side.sends
    c = side.counters
    other_failures = c.get("registration_failures", 0) - c.get("registrations_busy", 0) - c.get("registrations_lost", 0)
    done = (f"all online in {side.online_s:.1f} s, all read in {side.read_s:.1f} s" if side.done_s is not None else
            f"NOT all by the cap of {side.storm_s:.0f} s: {side.online} online, {side.read} read")
    lines = [f"{side.label}",
             f"  REST GET {REST_PATH}: before {side.before.text()}",
             f"  {'':<{len('REST GET ' + REST_PATH)}}  during {side.during.text()}",
             f"  {side.devices} lights: {done}",
             f"  Sends during the storm: {s['sent']} sent, {s['acked']} acknowledged, {s['refused_busy']} refused "
             f"5.03 with Max-Age, {s['refused_other']} refused otherwise, {s['lost']} lost, "
             f"{s['unanswered']} unanswered after {SEND_SETTLE_S:g} s",
             f"  Registers: {c.get('registrations', 0)} created, {c.get('registrations_busy', 0)} answered 5.03 with "
             f"Max-Age, {c.get('registrations_lost', 0)} timed out (no ACK, or no answer 30 s after the empty ACK), "
             f"{other_failures} failed otherwise (each tried again later); {c.get('retransmissions', 0)} "
             f"retransmissions by the lights"]
    for phase, cores in (("before", side.cpu_before), ("storm", side.cpu_storm)):
        if cores:
            lines.append(f"  CPU {phase:<6} (cores): " + ", ".join(f"{k} {v:.2f}" for k, v in cores.items()))
    return lines


def table(sides: list[Side]) -> list[str]:
    width = max(len(side.label) for side in sides) + 2
    header = (f"{'configuration':<{width}}{'REST p50/p99 before':>21}{'p50/p99 during':>18}{'online+read s':>15}"
              f"{'Sends acked':>13}{'5.03':>6}{'other':>7}{'lost':>6}{'fleet cores':>13}{'load cores':>12}")
    rows = [header]
    for side in sides:
        s = side.sends
        storm_cpu = side.cpu_storm or {}
        load = storm_cpu.get("devices", 0) + storm_cpu.get("rest load", 0)
        done = f"{side.done_s:.1f}" if side.done_s is not None else f">{side.storm_s:.0f}"
        before = f"{side.before.p50_ms:.0f}/{side.before.p99_ms:.0f} ms"
        during = f"{side.during.p50_ms:.0f}/{side.during.p99_ms:.0f} ms"
        acked = f"{s['acked']}/{s['sent']}"
        rows.append(f"{side.label:<{width}}{before:>21}{during:>18}{done:>15}{acked:>13}"
                    f"{s['refused_busy']:>6}{s['refused_other'] + s['unanswered']:>7}"
                    f"{s['lost']:>6}{storm_cpu.get('fleet', 0):>13.2f}{load:>12.2f}")
    return rows


def verdict(side: Side) -> str:
    p99 = "met" if side.during.p99_ms <= TARGET_P99_MS else "missed"
    online = "met" if side.done_s is not None and side.done_s <= TARGET_ONLINE_S else "missed"
    s = side.sends
    refused = "met" if s["refused_other"] == 0 and s["lost"] == 0 else "missed"
    return (f"targets ({side.label}): REST p99 during the storm <= {TARGET_P99_MS:g} ms {p99}; all online and "
            f"read within {TARGET_ONLINE_S:g} s {online}; no Send refused but with 5.03 and Max-Age, none lost {refused}")


def final_line(side: Side) -> str:
    """The contract: `p99 during storm X ms` and `online in Y s`, for the configuration asked."""
    if side.done_s is not None:
        online = f"online in {side.done_s:.1f} s (registered and read)"
    else:
        online = (f"online in {side.storm_s:.1f} s (NOT all registered and read by the cap: {side.online} online, "
                  f"{side.read} read)")
    s = side.sends
    return (f"storm of {side.devices} devices, {side.label}: p99 during storm {side.during.p99_ms:.0f} ms "
            f"(before {side.before.p99_ms:.0f} ms), {online}, "
            f"{s['acked']} of {s['sent']} Sends acknowledged")
