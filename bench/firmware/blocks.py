"""Blocks served per second: Fleet's listener against a bare aiocoap Block2 server, same bytes,
same clients; and Fleet's RSS with 100 and then 1,000 devices downloading at once.

    python -m bench.firmware [--downloaders 100,1000] [--size 131072] [--block 1024] [--repeats 1] [--json]

An embedded PostgreSQL (default durability) gets one city, a stored image of `--size` bytes and
a running campaign with every device downloading on its own token. Each downloader is a raw
asyncio UDP client with its own socket (a device's own port) fetching every block of the
package in order with confirmable GETs of /fw/<token> and Block2 at `--block` bytes, one
block in flight, retransmitting after 2 s; it checks the bytes it assembled. The same
downloaders then fetch the same package from bench.firmware.baseline. Blocks/s is all blocks
of a round over the time from the first request to the last answer.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import resource
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bench.coap.servers import ServerGroup
from bench.firmware.baseline import package_bytes
from bench.firmware.dataset import downloading_devices
from bench.ingest.database import embedded_server
from bench.ingest.run import free_udp_port
from protocols.coap import message

RETRANSMIT_S = 2.0
MAX_RETRANSMIT = 4
SEPARATE_RESPONSE_S = 60.0


class Downloader(asyncio.DatagramProtocol):
    """Fetches every block of one package, one confirmable GET at a time."""

    def __init__(self, token: str, size: int, block_size: int, mid: int) -> None:
        self.prefix = [(message.URI_PATH, b"fw"), (message.URI_PATH, token.encode())]
        self.blocks = -(-size // block_size)
        self.block_size = block_size
        self.mid = mid
        self.number = 0
        self.parts: list[bytes] = []
        self.retransmissions = 0
        self.errors = 0
        self.done = asyncio.get_running_loop().create_future()
        self.transport = None
        self.timer = None
        self.token = b""
        self.attempt = 0

    def connection_made(self, transport) -> None:
        self.transport = transport

    def start(self) -> None:
        self._send()

    def _send(self) -> None:
        options = [*self.prefix, (message.BLOCK2, message.block_value(self.number, False, self.block_size))]
        self.token = self.number.to_bytes(2, "big")
        self.transport.sendto(message.encode(message.CON, message.GET, self.mid, self.token, options))
        self._wait(RETRANSMIT_S * 2 ** self.attempt, self._timeout)

    def _wait(self, seconds: float, then) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.timer = asyncio.get_running_loop().call_later(seconds, then)

    def _timeout(self) -> None:
        if self.attempt >= MAX_RETRANSMIT:
            self._finish(RuntimeError(f"block {self.number} never answered"))
            return
        self.attempt += 1
        self.retransmissions += 1
        self._send()

    def _no_separate_response(self) -> None:
        self._finish(RuntimeError(f"block {self.number}: empty ACK, then no response"))

    def datagram_received(self, data: bytes, addr) -> None:
        try:
            mtype, code, mid, token, options, payload = message.parse(data)
        except message.MessageFormatError:
            return
        if self.done.done():
            return
        if mtype == message.CON:  # a separate response (RFC 7252 §5.2.2): acknowledge it
            self.transport.sendto(message.empty(message.ACK, mid))
        elif mid != self.mid:
            return  # a late answer to a retransmitted request
        if code == message.EMPTY:
            if mtype == message.ACK:  # the response follows separately
                self._wait(SEPARATE_RESPONSE_S, self._no_separate_response)
            return
        if token != self.token:
            return
        self.timer.cancel()
        if code != message.CONTENT:
            self.errors += 1
            self._finish(RuntimeError(f"answered {message.code_text(code)}: {payload[:80]!r}"))
            return
        self.parts.append(payload)
        self.number += 1
        self.mid = (self.mid + 1) & 0xFFFF
        self.attempt = 0
        if self.number == self.blocks:
            self._finish(None)
        else:
            self._send()

    def _finish(self, error: Exception | None) -> None:
        if not self.done.done():
            if error is None:
                self.done.set_result(b"".join(self.parts))
            else:
                self.done.set_exception(error)
        self.transport.close()


@dataclass
class Round:
    side: str
    downloaders: int
    blocks: int
    seconds: float
    blocks_per_s: float
    failed: int
    corrupt: int
    retransmissions: int
    rss_before_kib: int
    rss_peak_kib: int
    rss_after_kib: int
    errors: dict[str, int] = field(default_factory=dict)  # why downloads failed, by reason


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/statm") as statm:
        return int(statm.read().split()[1]) * (os.sysconf("SC_PAGE_SIZE") // 1024)


async def download_round(side: str, target: tuple[str, int], tokens: list[str], content: bytes,
                         block_size: int, server_pid: int) -> Round:
    loop = asyncio.get_running_loop()
    expected = hashlib.sha256(content).digest()
    downloaders = []
    for n, token in enumerate(tokens):
        downloader = Downloader(token, len(content), block_size, (n * 7919) & 0xFFFF)
        await loop.create_datagram_endpoint(lambda d=downloader: d, remote_addr=target)
        downloaders.append(downloader)
    before = rss_kib(server_pid)
    peak = [before]

    async def sample() -> None:
        while True:
            peak[0] = max(peak[0], rss_kib(server_pid))
            await asyncio.sleep(0.2)

    sampler = asyncio.create_task(sample())
    started = time.perf_counter()
    for downloader in downloaders:
        downloader.start()
    results = await asyncio.gather(*(d.done for d in downloaders), return_exceptions=True)
    seconds = time.perf_counter() - started
    sampler.cancel()
    failed = sum(isinstance(r, BaseException) for r in results)
    corrupt = sum(not isinstance(r, BaseException) and hashlib.sha256(r).digest() != expected for r in results)
    blocks = sum(d.number for d in downloaders)
    errors: dict[str, int] = {}
    for result in results:
        if isinstance(result, BaseException):
            reason = str(result)[:60]
            errors[reason] = errors.get(reason, 0) + 1
    return Round(side, len(tokens), blocks, round(seconds, 3), round(blocks / seconds, 1), failed, corrupt,
                 sum(d.retransmissions for d in downloaders), before, max(peak[0], rss_kib(server_pid)),
                 rss_kib(server_pid), errors)


@dataclass
class Report:
    started: str
    loadavg_before: str
    size: int
    block: int
    rounds: list[Round] = field(default_factory=list)
    servers: dict[str, dict] = field(default_factory=dict)

    def best(self, side: str, downloaders: int) -> Round:
        return max((r for r in self.rounds if r.side == side and r.downloaders == downloaders),
                   key=lambda r: r.blocks_per_s)


def run(args: argparse.Namespace) -> Report:
    counts = [int(n) for n in args.downloaders.split(",")]
    load1, load5, _ = os.getloadavg()
    report = Report(time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), f"{load1:.2f}/{load5:.2f}",
                    args.size, args.block)
    content = package_bytes(args.size, args.seed)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, max(counts) + 256)), hard))
    with tempfile.TemporaryDirectory(prefix="fleet-bench-firmware-") as work:
        with embedded_server(Path(work)) as dsn:
            tokens = asyncio.run(downloading_devices(dsn, max(counts), content))
            port = free_udp_port()
            target = ("127.0.0.1", port)
            sides = {"fleet": ["-m", "bench.firmware.listener", "--port", str(port)],
                     "baseline": ["-m", "bench.firmware.baseline", "--port", str(port), "--size",
                                  str(args.size), "--seed", str(args.seed)]}
            env = {**os.environ, "FLEET_DATABASE_URL": dsn}
            for side, argv in sides.items():
                if side not in args.sides.split(","):
                    continue
                with ServerGroup(argv, 1, target, ready_timeout=60.0, env=env) as group:
                    pid = group.children[0].pid
                    for _ in range(args.repeats):
                        for count in counts:
                            report.rounds.append(asyncio.run(download_round(
                                side, target, tokens[:count], content, args.block, pid)))
                            print(json.dumps(asdict(report.rounds[-1])), file=sys.stderr, flush=True)
                report.servers[side] = group.stats[0]
    return report


def print_report(report: Report, counts: list[int]) -> None:
    print(f"firmware blocks: {report.size} bytes at {report.block}-byte blocks; started {report.started}, "
          f"load average before {report.loadavg_before}")
    if len(report.servers) < 2:
        for r in report.rounds:
            print(f"  {r.side} {r.downloaders} downloaders: {r.blocks_per_s:.0f} blocks/s {r.errors}")
        return
    for count in counts:
        fleet, base = report.best("fleet", count), report.best("baseline", count)
        print(f"  {count:>5} downloaders: Fleet {fleet.blocks_per_s:>8.0f} blocks/s, baseline "
              f"{base.blocks_per_s:>8.0f} blocks/s, ratio {fleet.blocks_per_s / base.blocks_per_s:.2f}; "
              f"failed {fleet.failed}/{base.failed}, corrupt {fleet.corrupt}/{base.corrupt}")
    for side in ("fleet", "baseline"):
        rounds = [r for r in report.rounds if r.side == side]
        # The first round of each count, in the order run: later ones start from its high-water mark.
        peaks = ", ".join(f"{next(r.rss_peak_kib for r in rounds if r.downloaders == count)} KiB with {count}"
                          for count in counts)
        print(f"  {side} RSS: {rounds[0].rss_before_kib} KiB before the first round; peak in the first "
              f"round of each: {peaks}; "
              f"{rounds[-1].rss_after_kib} KiB after the last")
    print(f"  Fleet listener: {json.dumps(report.servers.get('fleet', {}))}")
    print(f"  baseline: {json.dumps(report.servers.get('baseline', {}))}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.firmware", description=__doc__.split("\n")[0])
    parser.add_argument("--downloaders", default="100,1000", help="concurrent downloaders per round, comma-separated")
    parser.add_argument("--size", type=int, default=128 * 1024, help="package bytes")
    parser.add_argument("--block", type=int, default=1024, choices=[16, 32, 64, 128, 256, 512, 1024])
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--repeats", type=int, default=1, help="rounds per downloader count and side")
    parser.add_argument("--sides", default="fleet,baseline", help="which servers to measure")
    parser.add_argument("--json", action="store_true", help="the whole report as JSON")
    args = parser.parse_args(argv)
    report = run(args)
    if args.json:
        print(json.dumps(asdict(report), indent=2))
    else:
        print_report(report, [int(n) for n in args.downloaders.split(",")])
    # The baseline's failures are its own (reported); Fleet's fail the run.
    fine = all(r.failed == 0 and r.corrupt == 0 for r in report.rounds if r.side == "fleet")
    return 0 if fine else 1
