"""The clients of one load-generator process: sockets, registration, the Send loop, a report."""

from __future__ import annotations

import asyncio
import resource
import socket
import time
from typing import TYPE_CHECKING

from bench.coap.endpoint import CANCELLED, TIMEOUT, ClientEndpoint, Exchange, ExchangeStats, Retransmitter
from bench.coap.results import WorkerReport
from protocols.coap import message

if TYPE_CHECKING:
    from bench.coap.loadgen import LoadConfig

LINK_FORMAT_OBJECTS = b"</3/0>,</3303/0>,</3435/0>"


class LoadWorker:
    """The clients of one process: open sockets, register, run the Send loop, report."""

    def __init__(self, config: LoadConfig, client_indices: range, budget: int):
        self.config = config
        self.client_indices = client_indices
        self.budget = budget
        self.registration_stats = ExchangeStats()
        self.retransmitter = Retransmitter(config.timing, self.registration_stats)
        self.endpoints: list[ClientEndpoint] = []
        self.report = WorkerReport(
            clients=len(client_indices), load=ExchangeStats(), registration=self.registration_stats,
            acked_requests=[] if config.record_acks else None,
        )
        send_options = message.path_options(message.URI_PATH, config.path)
        send_options.append((message.CONTENT_FORMAT, message.uint(config.content_format)))
        self._send_options = message.encode_options(send_options)
        self._remaining = 0
        self._outstanding = 0
        self._stopping = False
        self._idle: asyncio.Future | None = None
        self._stopped: asyncio.Event | None = None

    async def run(self, barrier=None) -> WorkerReport:
        config = self.config
        family = socket.AF_INET6 if ":" in config.target[0] else socket.AF_INET
        opened = time.monotonic()
        for index in self.client_indices:
            self.endpoints.append(await ClientEndpoint.open(
                index, self.retransmitter, config.target, family, config.socket_buffer,
                config.credentials(index) if config.credentials is not None else None,
            ))
        if config.credentials is not None:
            await self._handshakes(opened)
        sweeper = asyncio.create_task(self.retransmitter.run())
        try:
            active = self.endpoints
            if config.register:
                active = await self._register_all()
            if barrier is not None:
                await asyncio.get_running_loop().run_in_executor(
                    None, barrier.wait, config.register_timeout + 30
                )
            await self._load(active)
            if config.deregister:
                await self._deregister_all(active)
        finally:
            sweeper.cancel()
            for endpoint in self.endpoints:
                endpoint.close()
        return self.report

    async def _handshakes(self, opened: float) -> None:
        """Wait until every DTLS handshake has ended, one way or the other; count them."""
        deadline = opened + self.config.handshake_timeout
        transports = [endpoint.transport for endpoint in self.endpoints]
        while time.monotonic() < deadline:
            waiting = [t for t in transports if not t.get_extra_info("dtls_connected") and not t.is_closing()]
            if not waiting:
                break
            await asyncio.sleep(0.005)
        report = self.report
        report.handshakes = sum(1 for t in transports if t.get_extra_info("dtls_connected"))
        report.handshake_failures = len(transports) - report.handshakes
        report.handshake_s = time.monotonic() - opened

    # -- registration (LwM2M 1.1 §6.2.1, Register) --------------------------------------

    async def _exchange(self, endpoint, code, options, payload) -> tuple[int, bytes, float]:
        future = asyncio.get_running_loop().create_future()

        def on_done(exchange: Exchange, outcome: int, datagram: bytes, now: float) -> None:
            if not future.done():
                future.set_result((outcome, datagram, now - exchange.first_sent))

        endpoint.request(code, message.encode_options(options), payload, 0, on_done)
        return await future

    async def _register(self, endpoint: ClientEndpoint, slots: asyncio.Semaphore) -> bool:
        config = self.config
        name = config.endpoint_name(endpoint.index)
        queries = (f"ep={name}", f"lt={config.lifetime}", "lwm2m=1.1", "b=U")
        options = [(message.URI_PATH, b"rd"),
                   (message.CONTENT_FORMAT, message.uint(message.LINK_FORMAT))]
        options += [(message.URI_QUERY, query.encode()) for query in queries]
        async with slots:
            outcome, datagram, _ = await self._exchange(
                endpoint, message.POST, options, LINK_FORMAT_OBJECTS
            )
        if outcome == message.CREATED:
            reply = message.decode(datagram)
            location = tuple(v.decode() for v in reply.option_values(message.LOCATION_PATH))
            if location:
                self.report.locations[name] = location
                endpoint.location = location
                return True
            self.report.registration_failures["2.01 without Location-Path"] += 1
            return False
        label = {TIMEOUT: "timeout", CANCELLED: "unanswered"}.get(outcome)
        self.report.registration_failures[label or message.code_text(outcome)] += 1
        return False

    async def _register_all(self) -> list[ClientEndpoint]:
        slots = asyncio.Semaphore(self.config.register_concurrency)
        tasks = [asyncio.create_task(self._register(e, slots)) for e in self.endpoints]
        _, pending = await asyncio.wait(tasks, timeout=self.config.register_timeout)
        if pending:
            for endpoint in self.endpoints:
                endpoint.cancel_all()
        await asyncio.gather(*tasks)
        return [e for e, task in zip(self.endpoints, tasks) if task.result()]

    async def _deregister_all(self, active: list[ClientEndpoint]) -> None:
        async def deregister(endpoint):
            options = [(message.URI_PATH, segment.encode()) for segment in endpoint.location]
            outcome, _, _ = await self._exchange(endpoint, message.DELETE, options, b"")
            return outcome == message.DELETED

        self.retransmitter.stats = ExchangeStats()  # keep the load figures untouched
        for endpoint in active:
            endpoint.stats = self.retransmitter.stats
        tasks = [asyncio.create_task(deregister(e)) for e in active if e.location]
        _, pending = await asyncio.wait(tasks, timeout=self.config.register_timeout) if tasks else ((), ())
        if pending:
            for endpoint in active:
                endpoint.cancel_all()
        self.report.deregistered = sum(await asyncio.gather(*tasks))

    # -- the Send loop (LwM2M 1.1 §6.4.7, Send) -----------------------------------------

    async def _load(self, active: list[ClientEndpoint]) -> None:
        config, report = self.config, self.report
        self.retransmitter.stats = report.load
        for endpoint in self.endpoints:
            endpoint.stats = report.load
            endpoint.next_seq = 0
        self._remaining = self.budget
        self._idle = asyncio.get_running_loop().create_future()
        self._stopped = asyncio.Event()
        cpu_start, machine_start = _cpu_seconds(), _machine_jiffies()
        report.load_start = start = time.monotonic()
        deadline = start + config.duration
        self.retransmitter.on_tick = lambda now: self._stop() if now >= deadline else None
        for _ in range(config.window):
            for endpoint in active:
                self._start(endpoint)
        if not active:
            self._stop()
        await self._stopped.wait()
        try:
            await asyncio.wait_for(asyncio.shield(self._idle), config.drain)
        except asyncio.TimeoutError:
            for endpoint in active:
                endpoint.cancel_all()
        self.retransmitter.on_tick = None
        report.load_end = time.monotonic()
        report.cpu_s = _cpu_seconds() - cpu_start
        machine_end = _machine_jiffies()
        report.machine_busy = (machine_end[0] - machine_start[0], machine_end[1] - machine_start[1])

    def _stop(self) -> None:
        if not self._stopping:
            self._stopping = True
            self._stopped.set()
            if self._outstanding == 0 and not self._idle.done():
                self._idle.set_result(None)

    def _start(self, endpoint: ClientEndpoint) -> None:
        if self._stopping:
            return
        if self._remaining <= 0:
            self._stop()
            return
        self._remaining -= 1
        self._outstanding += 1
        seq = endpoint.next_seq
        endpoint.next_seq = seq + 1
        endpoint.request(
            message.POST, self._send_options, self.config.payload(endpoint.index, seq), seq,
            self._on_send_done,
        )

    def _on_send_done(self, exchange: Exchange, outcome: int, datagram: bytes, now: float) -> None:
        self._outstanding -= 1
        if 64 <= outcome < 96:
            report = self.report
            report.ok += 1
            report.last_ok = now
            index = exchange.endpoint.index
            report.acked_per_client[index] = report.acked_per_client.get(index, 0) + 1
            if report.acked_requests is not None:
                report.acked_requests.append((index, exchange.seq))
        if self._stopping:
            if self._outstanding == 0 and not self._idle.done():
                self._idle.set_result(None)
        elif outcome != CANCELLED:
            self._start(exchange.endpoint)


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _machine_jiffies() -> tuple[int, int]:
    """(busy, total) CPU time of the whole machine so far, from /proc/stat."""
    try:
        with open("/proc/stat") as stat:
            values = [int(v) for v in stat.readline().split()[1:9]]
    except OSError:
        return 0, 0
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)
