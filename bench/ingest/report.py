"""What one `python -m bench.ingest` run found: both sides of every round, medians, the text."""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field

from bench.coap.results import LoadResult
from bench.ingest.cpu import CpuShare
from bench.ingest.database import Verification


@dataclass
class Side:
    """One server under the same load: Fleet or the bare aiocoap baseline."""

    name: str
    load: LoadResult
    cpu: CpuShare | None
    servers: list[dict]
    quiet: tuple[float, float] | None = None  # (s waited for a quiet machine, cores busy then)

    def cpu_per_request_us(self) -> dict[str, float]:
        """CPU microseconds per acknowledged request, per group: steadier than rates when
        strangers share the machine."""
        if self.cpu is None or not self.load.requests_per_s:
            return {}
        return {name: round(cores / self.load.requests_per_s * 1e6)
                for name, cores in self.cpu.cores.items() if name in ("servers", "postgres", "generator")}

    @property
    def max_rss_mib(self) -> float:
        return round(max((s.get("max_rss_kib", 0) for s in self.servers), default=0) / 1024, 1)


@dataclass
class Round:
    number: int
    fleet: Side
    verification: Verification
    baseline: Side | None = None
    # --security psk: Fleet over DTLS (other devices, a key each), and bare aiocoap over DTLS.
    secure: Side | None = None
    secure_verification: Verification | None = None
    secure_baseline: Side | None = None
    # --serve: the same load against one plain `fleet serve` (default workers).
    serve: Side | None = None
    serve_verification: Verification | None = None

    @property
    def ratio(self) -> float | None:
        return _ratio(self.fleet, self.baseline)

    @property
    def secure_ratio(self) -> float | None:
        """Committed points/s over DTLS against NoSec, in the same round: the issue's >= 50 %."""
        return _ratio(self.secure, self.fleet)

    @property
    def serve_ratio(self) -> float | None:
        """One plain `fleet serve` against the hand-started listeners, in the same round."""
        return _ratio(self.serve, self.fleet)

    @property
    def sides(self) -> tuple[Side, ...]:
        return tuple(s for s in (self.fleet, self.serve, self.baseline, self.secure, self.secure_baseline)
                     if s is not None)

    @property
    def ok(self) -> bool:
        return self.verification.ok and all(
            side is None or (verification is not None and verification.ok)
            for side, verification in ((self.secure, self.secure_verification),
                                       (self.serve, self.serve_verification)))


def _ratio(side: Side | None, reference: Side | None) -> float | None:
    if side is None or reference is None or not reference.load.requests_per_s:
        return None
    return side.load.requests_per_s / reference.load.requests_per_s


@dataclass
class IngestReport:
    started: str
    command: str
    options: dict
    machine: dict
    postgres: dict
    rounds: list[Round]
    notes: list[str] = field(default_factory=list)
    rpk: Side | None = None  # raw-public-key devices' handshakes only

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.rounds)

    @property
    def ratio(self) -> float | None:
        """The median of the rounds' ratios: each round's two sides ran a minute apart."""
        return self._median_ratio(lambda r: r.ratio)

    @property
    def secure_ratio(self) -> float | None:
        return self._median_ratio(lambda r: r.secure_ratio)

    @property
    def serve_ratio(self) -> float | None:
        return self._median_ratio(lambda r: r.serve_ratio)

    def _median_ratio(self, ratio) -> float | None:
        ratios = [ratio(r) for r in self.rounds if ratio(r) is not None]
        return round(statistics.median(ratios), 3) if ratios else None

    def median(self, side: str, metric) -> float | None:
        values = [metric(getattr(r, side)) for r in self.rounds if getattr(r, side) is not None]
        return statistics.median(values) if values else None

    def lines(self) -> list[str]:
        o = self.options
        out = [f"bench/ingest {self.started}: {o['devices']} devices, {o['points']} points per "
               f"{o['format']} pack, {o['processes']} server process(es), "
               f"{o['load_processes']} generator process(es), window {o['window']}, "
               f"{len(self.rounds)} round(s) of {o['duration']:g} s per side", ""]
        header = (f"{'round':<6}{'side':<14}{'req/s':>8}{'points/s':>10}{'p50 ms':>9}{'p99 ms':>9}"
                  f"{'acked':>8}{'t/o':>5}{'retx':>6}   {'CPU µs per request':<42}cores busy")
        out.append(header)
        for r in self.rounds:
            for side in r.sides:
                out.append(_side_line(r.number, side))
        if self.rpk is not None:
            out.append(_side_line("-", self.rpk))
        out.append("")
        for side, label in (("fleet", "fleet"), ("serve", "fleet serve"), ("baseline", "bare aiocoap"),
                            ("secure", "fleet psk"),
                            ("secure_baseline", "aiocoap psk")):
            rps = self.median(side, lambda s: s.load.requests_per_s)
            if rps is None:
                continue
            points = self.median(side, lambda s: s.load.points_per_s)
            p50 = self.median(side, lambda s: s.load.latency_p50_ms)
            p99 = self.median(side, lambda s: s.load.latency_p99_ms)
            stored = " committed" if side in ("fleet", "serve", "secure") else " answered (nothing stored)"
            out.append(f"median {label:<13} {rps:>8,.0f} requests/s, {points:>8,.0f} data points/s{stored}, "
                       f"ack p50 {p50:.0f} ms, p99 {p99:.0f} ms")
        for name, what, judged in (
                ("ratio", "fleet / bare aiocoap requests/s", lambda r: ""),
                ("serve_ratio", f"fleet serve / {o['processes']} fleet listener processes requests/s",
                 lambda r: ("reaches them" if r >= 1 else "does NOT reach them") + "; "),
                ("secure_ratio", "fleet psk / fleet nosec committed points/s",
                 lambda r: ("meets" if r >= 0.5 else "MISSES") + " the 50 % target; ")):
            ratio = getattr(self, name)
            if ratio is not None:
                each = ", ".join(f"{getattr(r, name):.0%}" for r in self.rounds if getattr(r, name) is not None)
                out.append(f"ratio {what}: {ratio:.1%} ({judged(ratio)}median of rounds: {each})")
        for label, side in (("psk", "secure"), ("aiocoap psk", "secure_baseline")):
            rate = self.median(side, lambda s: s.load.handshakes_per_s)
            if rate:
                failed = sum(getattr(r, side).load.handshake_failures for r in self.rounds if getattr(r, side))
                out.append(f"handshakes {label:<12} {rate:>8,.1f}/s (median; {o['devices']} devices at once, "
                           f"{failed} failed)")
        if self.rpk is not None:
            load = self.rpk.load
            out.append(f"handshakes {'rpk':<12} {load.handshakes_per_s:>8,.1f}/s ({load.handshakes} of "
                       f"{load.clients} devices at once, {load.handshake_failures} failed)")
        for r in self.rounds:
            out.append(f"verification round {r.number}: {r.verification.line()}")
            if r.serve_verification is not None:
                out.append(f"verification round {r.number} fleet serve: {r.serve_verification.line()}")
            if r.secure_verification is not None:
                out.append(f"verification round {r.number} psk: {r.secure_verification.line()}")
        for r in self.rounds[-1:]:
            for server in r.fleet.servers + (r.secure.servers if r.secure is not None else []):
                if server.get("batches"):
                    out.append(_listener_line(server))
        out.append("postgres: " + ", ".join(f"{k}={v}" for k, v in self.postgres.items()))
        out.append("machine: " + ", ".join(f"{k}={v}" for k, v in self.machine.items()))
        out += self.notes
        return out

    def to_dict(self) -> dict:
        rounds = []
        for r in self.rounds:
            entry = {"number": r.number, "ratio": r.ratio, "secure_ratio": r.secure_ratio,
                     "serve_ratio": r.serve_ratio,
                     "verification": {**asdict(r.verification), "ok": r.verification.ok}}
            for name in ("secure_verification", "serve_verification"):
                found = getattr(r, name)
                if found is not None:
                    entry[name] = {**asdict(found), "ok": found.ok}
            for side in ("fleet", "serve", "baseline", "secure", "secure_baseline"):
                found = getattr(r, side)
                if found is not None:
                    entry[side] = _side_dict(found)
            rounds.append(entry)
        return {"started": self.started, "command": self.command, "options": self.options,
                "machine": self.machine, "postgres": self.postgres, "ratio": self.ratio,
                "secure_ratio": self.secure_ratio, "serve_ratio": self.serve_ratio, "ok": self.ok, "rounds": rounds,
                "rpk": _side_dict(self.rpk) if self.rpk is not None else None, "notes": self.notes}


def _side_dict(side: Side) -> dict:
    return {"load": side.load.to_dict(), "cpu": asdict(side.cpu) if side.cpu else None,
            "cpu_per_request_us": side.cpu_per_request_us(), "servers": side.servers, "quiet": side.quiet}


def _side_line(number: int | str, side: Side) -> str:
    load = side.load
    if not load.requests_sent and load.handshakes + load.handshake_failures:
        return (f"{number:<6}{side.name:<14}handshakes only: {load.handshakes} done, "
                f"{load.handshake_failures} failed, {load.handshakes_per_s:,.1f}/s")
    cores = side.cpu.line() if side.cpu else "-"
    return (f"{number:<6}{side.name:<14}{load.requests_per_s:>8,.0f}{load.points_per_s:>10,.0f}"
            f"{load.latency_p50_ms:>9.0f}{load.latency_p99_ms:>9.0f}{load.acked:>8}{load.timeouts:>5}"
            f"{load.retransmissions:>6}   {_per_request(side):<42}{cores}")


def _listener_line(server: dict) -> str:
    return (f"fleet listener {server['pid']}: {server['committed_points']} points in "
            f"{server['batches']} commits ({server['committed_points'] / server['batches']:.0f} per "
            f"commit), {server['sessions']} sessions, fast path {server.get('fast_path', '-')}, "
            f"dedup cache {server.get('fast_path_cache', 0)} fast + {server['duplicate_cache']} aiocoap, cpu {server['cpu_s']} s, "
            f"max RSS {server['max_rss_kib'] // 1024} MiB")


def _per_request(side: Side) -> str:
    return ", ".join(f"{name} {us}" for name, us in side.cpu_per_request_us().items()) or "-"
