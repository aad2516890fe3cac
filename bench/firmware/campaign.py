"""A firmware campaign to N simulated streetlights, start to every device on the new version,
beside the same devices pulling the same bytes from a bare aiocoap Block2 server.

    python -m bench.firmware campaign [--devices 10000] [--size 131072] [--concurrency 1000]
                                      [--health-period 0] [--baseline-devices 2000] [--limit 900]

Fleet runs as `fleet serve` does (`python -m api.cli serve`: REST API, CoAP listener with its
dispatcher and /fw fast path, scheduler with the rollout engine) in its own process, so its RSS
is its own, on an embedded PostgreSQL as `fleet serve` sets it up (fsync on). The city's
streetlights are imported as CSV over REST; the simulated devices (bench/firmware/devices.py)
run in a second process from the city's own export. Over REST: a release key, the signed image
`simulators.firmware.build_image("2.0.0", size)`, a campaign (canary 1 %, waves growing x4, no
maintenance window, `--concurrency` downloading at once, `--health-period` s), started and
polled each second until every device succeeded or `--limit` s passed. Blocks are counted by
the devices. Then, same run: `--baseline-devices` of the same devices pull the same image from
bench.firmware.baseline, `--concurrency` at a time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import asyncpg
import httpx

from bench.coap.servers import ServerGroup
from bench.dimming.city import embedded_server
from bench.firmware.blocks import rss_kib
from bench.firmware.campaign_report import (POLL_S, Report, Sample, cpu_s, machine_busy_s, postgres_cpu_s,
                                            summary)
from bench.ingest.database import migrate_and_analyze
from bench.ingest.run import free_udp_port
from bench.processes import stop

VERSION = "2.0.0"
READY_S = 120.0


def free_tcp_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def _city(dsn: str) -> str:
    """A city and its admin key (as `fleet tenant create` and `fleet apikey create` do)."""
    from fleet.access.models import Role
    from fleet.access.service import ApiKeyService, TenantService, system_principal
    from fleet.db import Database

    db = await Database.connect(dsn, min_size=1, max_size=2)
    try:
        tenant = await TenantService(db).create("bench-firmware", "Firmware Bench City", "Asia/Seoul",
                                                   allow_nosec_devices=True)
        issued = await ApiKeyService(db).issue(system_principal(tenant), Role.ADMIN, "bench")
    finally:
        await db.close()
    return issued.secret


def devices_csv(count: int) -> str:
    rows = ["kind,endpoint,lat,lon,serial,manufacturer,model,district"]
    rows += [f"streetlight,fw-sl-{n:05d},{37.55 + n % 100 * 1e-4:.5f},{126.97 + n // 100 * 1e-4:.5f},"
             f"FW{n:08d},Lumen Korea,LK-120,Jung-gu" for n in range(count)]
    return "\n".join(rows) + "\n"


@contextlib.contextmanager
def fleet_serve(dsn: str, http_port: int, coap_port: int, log: Path):
    env = {**os.environ, "FLEET_DATABASE_URL": dsn, "FLEET_LOG_LEVEL": "WARNING", "FLEET_LOG_FORMAT": "json",
           "FLEET_METRICS_PORT": "0"}  # not measured here; 9464 may be taken by a demo
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "api.cli", "serve", "--host", "127.0.0.1", "--coap-host", "::",
             "--http-port", str(http_port), "--coap-port", str(coap_port)], stdout=out, stderr=subprocess.STDOUT,
            env=env)
        try:
            yield process
        finally:
            stop(process)


async def _ready(api: httpx.AsyncClient, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + READY_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"fleet serve exited with {process.returncode}")
        with contextlib.suppress(httpx.HTTPError):
            if (await api.get("/readyz")).status_code == 200:
                return
        await asyncio.sleep(0.5)
    raise TimeoutError("fleet serve did not get ready")


class Devices:
    """The simulator process: its latest STATS line and its answers to pulls."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.stats: dict = {"fw_blocks": 0, "cpu_s": 0.0, "registered": 0}
        self.pulled: asyncio.Queue = asyncio.Queue()
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        while line := await self.process.stdout.readline():
            text = line.decode()
            if text.startswith("STATS "):
                self.stats = json.loads(text[6:])
            elif text.startswith("PULLED "):
                await self.pulled.put(json.loads(text[7:]))

    async def pull(self, uri: str, count: int, concurrency: int) -> dict:
        self.process.stdin.write((json.dumps({"pull": uri, "count": count, "concurrency": concurrency}) + "\n").encode())
        await self.process.stdin.drain()
        return await self.pulled.get()

    async def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.process.stdin.close()
            try:
                await asyncio.wait_for(self.process.wait(), 30)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        self.reader.cancel()


async def start_devices(work: Path, coap_port: int, count: int, devices_file: Path) -> Devices:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.firmware.devices", "--server", f"coap://127.0.0.1:{coap_port}",
        "--devices-file", str(devices_file), "--lights", str(count),
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=(work / "devices.log").open("w"),
        env={**os.environ, "FLEET_LOG_LEVEL": "WARNING"}, limit=1 << 20)
    return Devices(process)


async def _settle(dsn: str, count: int, devices: Devices, timeout_s: float = 600) -> float:
    """Until every device registered and Fleet read its /3/0 (firmware version known)."""
    t0 = time.monotonic()
    conn = await asyncpg.connect(dsn)
    try:
        while True:
            identified = await conn.fetchval("select count(*) from devices where firmware_version is not null")
            if identified >= count:
                return time.monotonic() - t0
            if time.monotonic() - t0 > timeout_s:
                raise TimeoutError(f"{identified} of {count} devices identified; simulator {devices.stats}")
            await asyncio.sleep(0.5)
    finally:
        await conn.close()


async def _release(api: httpx.AsyncClient, size: int) -> str:
    """Register a release key, upload the signed image; its id."""
    from fleet.firmware.signatures import new_signing_key, sign, signing_key
    from simulators.firmware import build_image

    private, public = new_signing_key()
    (await api.post("/api/v1/firmware/keys", json={"name": "bench release", "public_key": public})).raise_for_status()
    image = build_image(VERSION, size)
    answer = await api.post("/api/v1/firmware/images", files={"file": (f"lamp-{VERSION}.bin", image)},
                            data={"version": VERSION, "signature": sign(signing_key(private), image)})
    answer.raise_for_status()
    return answer.json()["id"]


async def _wave_times(dsn: str, campaign_id: str) -> tuple[list[dict], dict[str, int], dict]:
    """Per wave, from the devices' timelines (PostgreSQL's clock), seconds since the start."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            """with started as (select started_at from firmware_campaigns where id = $1)
               select d.wave, count(distinct d.device_id) as devices,
                      extract(epoch from min(s.at) filter (where s.state = 'waiting') - started.started_at) as opened_s,
                      extract(epoch from min(s.at) filter (where s.state = 'downloading') - started.started_at)
                          as first_download_s,
                      extract(epoch from max(s.at) filter (where s.state = 'downloaded') - started.started_at)
                          as last_downloaded_s,
                      extract(epoch from max(s.at) filter (where s.state = 'succeeded') - started.started_at)
                          as last_succeeded_s,
                      count(*) filter (where s.state = 'failed') as failed
               from firmware_campaign_devices d join firmware_device_steps s
                    on s.campaign_id = d.campaign_id and s.device_id = d.device_id, started
               where d.campaign_id = $1 group by d.wave, started.started_at order by d.wave""", campaign_id)
        steps = await conn.fetch(
            """with t as (
                   select s.state, lead(s.at) over (partition by s.device_id order by s.at, s.id) - s.at as spent
                   from firmware_device_steps s where s.campaign_id = $1)
               select state, round(extract(epoch from percentile_cont(0.5) within group (order by spent))::numeric, 1)
                          as p50_s,
                      round(extract(epoch from percentile_cont(0.9) within group (order by spent))::numeric, 1)
                          as p90_s
               from t where spent is not null group by state order by min(spent)""", campaign_id)
        commands = await conn.fetch(
            """select c.operation, count(*) as n,
                      round(extract(epoch from percentile_cont(0.5) within group (order by c.sent_at - c.created_at))
                            ::numeric, 2) as queued_p50_s,
                      round(extract(epoch from percentile_cont(0.9) within group (order by c.sent_at - c.created_at))
                            ::numeric, 2) as queued_p90_s,
                      round(extract(epoch from percentile_cont(0.5) within group (order by c.completed_at - c.sent_at))
                            ::numeric, 2) as answered_p50_s,
                      round(extract(epoch from percentile_cont(0.9) within group (order by c.completed_at - c.sent_at))
                            ::numeric, 2) as answered_p90_s
               from commands c join command_batches b on b.id = c.batch_id
               where b.origin = 'firmware:' || $1::text group by 1 order by 1""", campaign_id)
        reasons = await conn.fetch(
            """select coalesce(reason, '?') as reason, count(*) as n from firmware_campaign_devices
               where campaign_id = $1 and state = 'failed' group by 1""", campaign_id)
    finally:
        await conn.close()
    waves = [{k: (round(float(v), 1) if v is not None and k.endswith("_s") else v)
              for k, v in dict(r).items()} for r in rows]
    timing = {"time in each state": {r["state"]: (float(r["p50_s"]), float(r["p90_s"])) for r in steps},
              "engine's commands": [{k: (float(v) if v is not None and k.endswith("_s") else v)
                                     for k, v in dict(r).items()} for r in commands]}
    return waves, {r["reason"]: r["n"] for r in reasons}, timing


async def campaign(api: httpx.AsyncClient, args: argparse.Namespace, image_id: str, fleet_pid: int,
                   postmaster: int, devices: Devices, report: Report) -> str:
    body = {"image_id": image_id, "target": {"filter": {"kind": "streetlight"}}, "name": "bench 2.0.0",
            "waves": {"canary_percent": 1, "growth": 4}, "concurrency": args.concurrency,
            "health_period_s": args.health_period}
    created = await api.post("/api/v1/firmware/campaigns", json=body)
    created.raise_for_status()
    campaign_id = created.json()["id"]
    report.options["waves"] = [w["devices"] for w in created.json()["waves"]]
    blocks0 = devices.stats["fw_blocks"]
    t0, wall0 = time.monotonic(), time.time()
    (await api.post(f"/api/v1/firmware/campaigns/{campaign_id}/start")).raise_for_status()
    while True:
        await asyncio.sleep(POLL_S)
        answer = await api.get(f"/api/v1/firmware/campaigns/{campaign_id}")
        answer.raise_for_status()
        state = answer.json()
        counts = state["counts"]
        elapsed = time.monotonic() - t0
        sim = devices.stats
        report.samples.append(Sample(round(elapsed, 1), rss_kib(fleet_pid), counts.get("downloading", 0),
                                     counts["succeeded"], counts["failed"], sim["fw_blocks"] - blocks0,
                                     round(sim.get("t", wall0) - wall0, 2), sim["cpu_s"], round(cpu_s(fleet_pid), 2),
                                     round(postgres_cpu_s(postmaster), 2), round(machine_busy_s(), 2)))
        sample = report.samples[-1]
        if int(elapsed) % 10 == 0:
            print(f"  [{elapsed:5.0f}s] {state['status']} wave {state.get('current_wave')} "
                  f"downloading {sample.downloading} succeeded {sample.succeeded} failed {sample.failed} "
                  f"blocks {sample.fw_blocks} Fleet RSS {sample.rss_kib // 1024} MiB", flush=True)
        report.status, report.counts = state["status"], counts
        if counts["succeeded"] + counts["failed"] >= state["device_count"] or state["status"] != "running":
            if counts["succeeded"] >= state["device_count"]:
                report.all_done_s = round(elapsed, 1)
            return campaign_id
        if elapsed > args.limit:
            return campaign_id


async def run(args: argparse.Namespace, report: Report) -> None:
    with tempfile.TemporaryDirectory(prefix="fleet-bench-fwcampaign-") as work_dir:
        work = Path(work_dir)
        with embedded_server(work) as dsn:
            await migrate_and_analyze(dsn)
            key = await _city(dsn)
            http_port, coap_port = free_tcp_port(), free_udp_port()
            with fleet_serve(dsn, http_port, coap_port, work / "fleet.log") as fleet:
                async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{http_port}", timeout=120,
                                             headers={"Authorization": f"Bearer {key}"}) as api:
                    await _ready(api, fleet)
                    imported = await api.post("/api/v1/devices/import", content=devices_csv(args.devices),
                                              headers={"Content-Type": "text/csv"})
                    imported.raise_for_status()
                    export = await api.get("/api/v1/devices/export", params={"format": "csv"})
                    export.raise_for_status()
                    devices_file = work / "lights.csv"
                    devices_file.write_text(export.text)
                    await migrate_and_analyze(dsn)  # ANALYZE after the bulk load, as in the other benches
                    devices = await start_devices(work, coap_port, args.devices, devices_file)
                    try:
                        report.settle_s = round(await _settle(dsn, args.devices, devices), 1)
                        print(f"{args.devices} devices registered and identified in {report.settle_s} s", flush=True)
                        image_id = await _release(api, args.size)
                        await asyncio.sleep(5)  # let the registration storm's writes drain
                        report.fleet_idle_rss_kib = rss_kib(fleet.pid)
                        postmaster = int((work / "pg" / "pgdata" / "postmaster.pid").read_text().split()[0])
                        campaign_id = await campaign(api, args, image_id, fleet.pid, postmaster, devices, report)
                        report.waves, report.failures, report.timing = await _wave_times(dsn, campaign_id)
                        await baseline(args, devices, report)
                    finally:
                        await devices.stop()
                        if fleet.poll() is not None:
                            print((work / "fleet.log").read_text()[-4000:], file=sys.stderr)


async def baseline(args: argparse.Namespace, devices: Devices, report: Report) -> None:
    port = free_udp_port()
    argv = ["-m", "bench.firmware.baseline", "--port", str(port), "--size", str(args.size), "--image-version", VERSION]
    group = ServerGroup(argv, 1, ("127.0.0.1", port), ready_timeout=60.0)
    await asyncio.to_thread(group.start)
    try:
        pid = group.children[0].pid
        before = rss_kib(pid)
        peak = [before]

        async def sample() -> None:
            while True:
                peak[0] = max(peak[0], rss_kib(pid))
                await asyncio.sleep(0.5)

        sampler = asyncio.create_task(sample())
        count = min(args.baseline_devices, args.devices)
        report.baseline = await devices.pull(f"coap://127.0.0.1:{port}/fw/baseline", count, args.concurrency)
        sampler.cancel()
        report.baseline_server = {"rss_before_kib": before, "rss_peak_kib": peak[0]}
    finally:
        await asyncio.to_thread(group.stop)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.firmware campaign", description=__doc__.split("\n")[0])
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--size", type=int, default=128 * 1024)
    parser.add_argument("--concurrency", type=int, default=1000)
    parser.add_argument("--health-period", type=int, default=0)
    parser.add_argument("--baseline-devices", type=int, default=1000)
    parser.add_argument("--limit", type=float, default=900.0, help="give up on the campaign after so many seconds")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    report = Report(dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                    {"devices": args.devices, "size": args.size, "concurrency": args.concurrency,
                     "health_period": args.health_period},
                    {"cpus": os.cpu_count(), "python": platform.python_version(),
                     "loadavg_before": "/".join(f"{x:.2f}" for x in os.getloadavg()[:2])})
    print(f"bench/firmware campaign {report.started}: {args.devices} streetlights", flush=True)
    from fleet.logging import configure_logging
    from fleet.settings import LogSettings
    configure_logging(LogSettings(level="WARNING", format="json"))
    try:
        asyncio.run(run(args, report))
    finally:
        report.machine["loadavg_after"] = "/".join(f"{x:.2f}" for x in os.getloadavg()[:2])
        for line in summary(report):
            print(line)
        if args.json:
            print(json.dumps(asdict(report), indent=2, default=str))
    return 0 if report.all_done_s else 1
