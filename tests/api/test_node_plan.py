"""How many workers a node runs and what each is told (api.node), without starting any."""

from __future__ import annotations

import asyncio
import errno
import json
import os
import signal
import socket
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from api.cli import _parser
from api.node import Node, NodeSockets, Worker, default_workers, plan_workers, worker_counts
from fleet.errors import SettingsError
from fleet.settings import load_settings


def test_flags_win_over_the_environment_which_wins_over_the_defaults():
    assert worker_counts(None, None, {}, defaults=(4, 2)) == (4, 2)
    assert worker_counts(None, None, {"FLEET_COAP_WORKERS": "3", "FLEET_HTTP_WORKERS": "0"}, defaults=(4, 2)) == (3, 0)
    assert worker_counts(1, None, {"FLEET_COAP_WORKERS": "3"}, defaults=(4, 2)) == (1, 2)
    assert _parser().parse_args(["serve", "--coap-workers", "2", "--http-workers", "0"]).http_workers == 0


def test_the_default_follows_a_containers_cpu_quota(tmp_path: Path):
    cores = default_workers(tmp_path / "none")[0]  # no cgroup files: the affinity mask alone
    (tmp_path / "cpu.max").write_text("max 100000\n")  # cgroup v2 without a quota
    assert default_workers(tmp_path)[0] == cores
    (tmp_path / "cpu.max").write_text("50000 100000\n")  # docker run --cpus 0.5
    assert default_workers(tmp_path) == (1, 1)
    v1 = tmp_path / "v1"
    (v1 / "cpu").mkdir(parents=True)
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("150000\n")
    (v1 / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert default_workers(v1)[0] == min(cores, 2)
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")  # v1 without a quota
    assert default_workers(v1)[0] == cores


@pytest.mark.parametrize(("environ", "problem"), [
    ({"FLEET_COAP_WORKERS": "two"}, "FLEET_COAP_WORKERS must be a number of worker processes"),
    ({"FLEET_HTTP_WORKERS": "-1"}, "FLEET_HTTP_WORKERS must be a number of worker processes"),
    ({"FLEET_COAP_WORKERS": "0", "FLEET_HTTP_WORKERS": "0"}, "at least one worker"),
])
def test_a_bad_count_is_a_settings_error(environ, problem):
    with pytest.raises(SettingsError, match=problem):
        worker_counts(None, None, environ)


def test_each_worker_gets_its_slot_its_name_and_the_scheduler_once(monkeypatch, tmp_path: Path):
    monkeypatch.setenv("FLEET_CREDENTIALS_KEY", "ab" * 32)
    settings = load_settings()
    settings = replace(settings, http=replace(settings.http, port=0),
                       coap=replace(settings.coap, host="::1", port=0, coaps_port=0))
    sockets = NodeSockets.bind(settings, 2, 1)
    try:
        settings = sockets.ports(settings)
        plain = {slot.coap.getsockname()[1] for slot in sockets.coap}
        assert plain == {settings.coap.port} and settings.http.port != 0  # one port, bound once
        workers = plan_workers(settings, sockets, node="host:1", dsn="postgresql://db", metrics_dir=tmp_path,
                               coap_workers=2, http_workers=1, environ={})
        assert [w.name for w in workers] == ["coap-1", "coap-2", "http-1"]
        assert [w.command()[-2:] for w in workers] == [["api.worker", "coap-1"], ["api.worker", "coap-2"],
                                                       ["api.worker", "http-1"]]  # `ps` tells them apart
        fds = [json.loads(w.environment["FLEET_WORKER_FDS"]) for w in workers]
        assert fds[0]["coap"] == sockets.coap[0].coap.fileno() and fds[1]["coap"] == sockets.coap[1].coap.fileno()
        assert fds[2] == {"http": sockets.http.fileno()}
        assert [w.environment["FLEET_WORKER_SCHEDULER"] for w in workers] == ["0", "0", "1"]
        assert {w.environment["FLEET_METRICS_PORT"] for w in workers} == {"0"}  # the supervisor serves the node's
        assert workers[0].environment["FLEET_COAP_PORT"] == str(settings.coap.port)
        assert workers[0].environment["FLEET_DATABASE_URL"] == "postgresql://db"
        assert workers[0].environment["FLEET_WORKER_METRICS_SOCKET"] == str(tmp_path / "coap-1.sock")
    finally:
        sockets.close()


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
        sock.bind(("::1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("kind", ["port", "coaps_port"])
def test_a_second_node_on_the_same_udp_port_is_refused(monkeypatch, kind):
    """Its sockets would join the first node's reuseport group, and its steering program
    replace the first's: every device of both would reach some other node's slot."""
    monkeypatch.setenv("FLEET_CREDENTIALS_KEY", "ab" * 32)
    settings = load_settings()
    first = replace(settings, coap=replace(settings.coap, host="::1", port=0, coaps_port=_free_udp_port()))
    bound = NodeSockets.bind(first, 2, 0)
    try:
        taken = getattr(bound.ports(first).coap, kind)
        second = replace(settings, coap=replace(settings.coap, host="::1", port=0, coaps_port=_free_udp_port()))
        with pytest.raises(OSError, match="another process"):
            NodeSockets.bind(replace(second, coap=replace(second.coap, **{kind: taken})), 2, 0).close()
    finally:
        bound.close()


@pytest.mark.parametrize(("parent", "survives"), [("mine", True), ("another", False)])
def test_a_worker_ends_when_its_parent_is_not_the_supervisor_that_started_it(parent, survives):
    # In a container the supervisor is process 1: a parent of 1 alone must not read as "orphaned".
    code = ("import os, sys; from api.worker import die_with_supervisor;"
            f"die_with_supervisor({'os.getppid()' if parent == 'mine' else 'os.getppid() + 1'});"
            "import time; time.sleep(0.5); print('alive')")
    ran = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert (ran.returncode, ran.stdout.strip()) == ((0, "alive") if survives else (-signal.SIGTERM, ""))


def test_each_worker_is_told_its_supervisors_pid(tmp_path: Path):
    settings = load_settings()
    settings = replace(settings, http=replace(settings.http, port=0), coap=replace(settings.coap, port=0))
    sockets = NodeSockets.bind(settings, 1, 1)
    try:
        workers = plan_workers(settings, sockets, node="host:1", dsn="postgresql://db", metrics_dir=tmp_path,
                               coap_workers=1, http_workers=1, environ={})
    finally:
        sockets.close()
    assert {w.environment["FLEET_SUPERVISOR_PID"] for w in workers} == {str(os.getpid())}


def test_the_embedded_server_has_room_for_every_worker_of_the_node():
    from api.runtime import EMBEDDED_MAX_CONNECTIONS, connections_needed

    settings = load_settings()
    settings = replace(settings, database=replace(settings.database, pool_max=10, system_pool_max=20))
    assert connections_needed(settings, 3) == 3 * 33 + 20 <= EMBEDDED_MAX_CONNECTIONS
    assert connections_needed(settings, 16 + 8) == 812  # a 16-core machine's defaults


async def test_a_worker_that_could_not_be_started_is_tried_again(monkeypatch):
    import api.node

    monkeypatch.setattr(api.node, "FIRST_BACKOFF_S", 0.01)
    second = asyncio.Event()

    class Unforkable(Worker):
        attempts = 0

        async def start(self) -> asyncio.subprocess.Process:
            Unforkable.attempts += 1
            if Unforkable.attempts == 1:
                raise OSError(errno.EAGAIN, "Resource temporarily unavailable")  # fork failed
            second.set()
            self.process = await asyncio.create_subprocess_exec(sys.executable, "-c", "import time; time.sleep(60)")
            return self.process

    node = Node([Unforkable("coap-1", {}, {})])
    keeper = asyncio.create_task(node.keep(node.workers[0]))
    try:
        async with asyncio.timeout(10):
            await second.wait()
    finally:
        node.stopping = True
        node.signal_all(signal.SIGKILL)
        keeper.cancel()
        await asyncio.gather(keeper, return_exceptions=True)
        if node.workers[0].process is not None:
            await node.workers[0].process.wait()
    assert Unforkable.attempts == 2


class Stubborn(Worker):
    """A worker that ignores SIGTERM (one stuck draining), and says when it does."""

    def __init__(self, ready: Path) -> None:
        super().__init__("coap-1", {}, {})
        self.ready = ready

    def command(self) -> list[str]:
        return [sys.executable, "-c", "import pathlib, signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN);"
                f" pathlib.Path({str(self.ready)!r}).touch(); time.sleep(60)"]


async def test_a_second_ctrl_c_kills_the_workers_and_says_so(tmp_path: Path):
    worker = Stubborn(tmp_path / "ready")
    node = Node([worker])
    keeper = asyncio.create_task(node.keep(worker))
    async with asyncio.timeout(10):
        while not worker.ready.exists():
            await asyncio.sleep(0.01)
    killed = asyncio.Event()
    killed.set()  # the second Ctrl-C came while the workers were draining
    with capture_logs() as logs:
        async with asyncio.timeout(10):  # not the 20 s a stuck worker gets otherwise
            await node.stop([keeper], killed)
    assert worker.process.returncode == -9
    assert [(line["event"], line["workers"]) for line in logs] == [("workers killed: a second Ctrl-C", ["coap-1"])]


def test_the_device_edge_runs_below_the_api_unless_told_otherwise():
    from api.node import COAP_NICE, coap_nice

    assert coap_nice({}) == COAP_NICE == 5
    assert coap_nice({"FLEET_COAP_WORKER_NICE": "0"}) == 0
    for wrong in ("-1", "20", "low"):
        with pytest.raises(SettingsError, match="FLEET_COAP_WORKER_NICE"):
            coap_nice({"FLEET_COAP_WORKER_NICE": wrong})
