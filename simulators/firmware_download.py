"""The bytes of a firmware package arriving at a simulated device, either way, and the pull:
a Block2 download (RFC 7959) from the Package URI (/5/0/1).

A download from the LwM2M server's own address (Fleet serves /fw/<token> on its CoAP listener)
goes over the device's socket, one block per exchange between its other requests; any other
address gets a socket of its own for the transfer. Either way a lost block is asked again (by
CoAP retransmission, then MAX_BLOCK_RETRIES more times) before the device gives up with Update
Result 4. States and results change in simulators.firmware; observers hear of each change.
"""

from __future__ import annotations

import asyncio
import ipaddress
from typing import TYPE_CHECKING

import structlog

from protocols.coap import message as coap
from simulators.exchanges import RESET, TIMEOUT, Endpoint, Exchange
from simulators.firmware import (CONNECTION_LOST, DOWNLOADING, INVALID_URI, NO_STORAGE,
                                 UNSUPPORTED_PROTOCOL, FirmwareUpdate, PackageUri)

if TYPE_CHECKING:
    from simulators.devices.base import SimulatedDevice

log = structlog.get_logger("simulators.firmware")

FETCH = 32  # a client's want and exchange purpose: the next block of a download
MAX_BLOCK_RETRIES = 3
SLOW_BLOCK_S = 0.2  # fw_slow: one block per this many seconds


def machine(device: SimulatedDevice) -> FirmwareUpdate:
    if device.fw is None:
        device.fw = FirmwareUpdate()
    return device.fw


def changed(device: SimulatedDevice) -> None:
    """Observers hear the new State or Update Result after the answer to the request."""
    device.world.scheduler.after(0.0, _notify, device.link)


def _notify(link) -> None:
    link.notify_observers()


def fault(device: SimulatedDevice, kind: str) -> bool:
    if kind in device.faults.forced:
        device.world.stats.fault(kind)
        return True
    return False


# -- bytes arriving, either way ---------------------------------------------------------------

def receive(device: SimulatedDevice, fw: FirmwareUpdate, data: bytes) -> None:
    if fw.received == 0 and data and fault(device, "fw_corrupt"):
        data = bytes([data[0] ^ 0xFF]) + data[1:]  # a bit error the link did not catch
    fw.feed(data)
    device.world.stats.fw_blocks += 1
    if fw.received > device.firmware_profile().storage_bytes:
        fw.fail(NO_STORAGE)


def finish(device: SimulatedDevice, fw: FirmwareUpdate) -> None:
    stats = device.world.stats
    if fw.state == DOWNLOADING and fw.complete():
        stats.fw_downloaded += 1
        fw.pkg_name = f"{device.spec.model or device.defaults[1]} firmware"
    else:
        stats.fw_failed += 1
        log.info("firmware package refused", endpoint=device.endpoint, result=fw.result)


# -- pull: Block2 from the Package URI --------------------------------------------------------

class Download:
    """One pull: which block comes next, at what size, over which socket."""

    __slots__ = ("device", "fw", "generation", "options", "number", "size", "retries", "token",
                 "carrier", "blocks", "breaks_at", "pace_s", "target")

    def __init__(self, device: SimulatedDevice, fw: FirmwareUpdate, target: PackageUri) -> None:
        self.device = device
        self.fw = fw
        self.generation = fw.generation
        self.options = ([(coap.URI_PATH, s.encode()) for s in target.path]
                        + [(coap.URI_QUERY, q.encode()) for q in target.query])
        self.number = 0
        self.size = device.firmware_block_size()
        self.retries = 0
        self.token = b""
        self.carrier: Endpoint | None = None
        self.blocks = 0
        # fw_download_fail: the link drops after the first block, for good.
        self.breaks_at = 1 if fault(device, "fw_download_fail") else -1
        self.pace_s = SLOW_BLOCK_S if fault(device, "fw_slow") else 0.0
        fw.transfer = self
        self.target = target

    @property
    def current(self) -> bool:
        fw = self.fw
        return fw.transfer is self and fw.generation == self.generation and fw.state == DOWNLOADING

    def start(self) -> None:
        link = self.device.link
        if _same_address(self.target, link.server_address) and self.target.secure == link.secure:
            self.carrier = link
            link.want(FETCH)
        elif self.target.secure:
            # A DTLS session is the device's with its own server; no other coaps host has its key.
            log.info("coaps package URI of another server", endpoint=self.device.endpoint)
            self.fail(UNSUPPORTED_PROTOCOL)
        else:
            asyncio.get_running_loop().create_task(self._open(), name="firmware-download")

    async def _open(self) -> None:
        target, link = self.target, self.device.link
        endpoint = DownloadEndpoint(self)
        try:
            await asyncio.get_running_loop().create_datagram_endpoint(
                lambda: endpoint, remote_addr=(target.host, target.port))
        except OSError as exc:
            log.info("firmware server unreachable", endpoint=self.device.endpoint, error=str(exc))
            self.fail(CONNECTION_LOST)
            return
        if not self.current or link.silent:
            endpoint.transport.close()
            return
        self.carrier = endpoint
        self.ask(endpoint)

    def ask(self, carrier: Endpoint) -> None:
        """Send the request for the next block on carrier (which has nothing else in flight)."""
        options = [*self.options, (coap.BLOCK2, coap.block_value(self.number, False, self.size))]
        if self.number == 0:
            options.append((coap.SIZE2, b""))  # asks for the package's size (RFC 7959 §4)
        mid, self.token = carrier.next_ids()
        carrier.transmit(FETCH, mid, self.token,
                         coap.encode(coap.CON, coap.GET, mid, self.token, options))

    def _next(self) -> None:
        if self.pace_s:
            self.device.world.scheduler.after(self.pace_s, _ask_later, self)
        else:
            _ask_later(self)

    def answered(self, code: int, response: coap.Message | None) -> None:
        if not self.current:
            self._close()
            return
        if code in (TIMEOUT, RESET) or code >= coap.INTERNAL_SERVER_ERROR:
            self.retries += 1
            if self.retries > MAX_BLOCK_RETRIES:
                self.fail(CONNECTION_LOST)
            else:
                self._next()  # the same block again: the download resumes where it stopped
            return
        if code != coap.CONTENT:
            # Nothing to download there (unknown or expired token): the URI is no good.
            log.info("firmware download refused", endpoint=self.device.endpoint,
                     code=coap.code_text(code))
            self.fail(INVALID_URI)
            return
        fw, device = self.fw, self.device
        try:
            block = coap.block_option(response.option(coap.BLOCK2))
        except coap.MessageFormatError:
            block = (-1, False, 0)
        if block is None:
            block = (0, False, len(response.payload))  # small enough to come whole
        number, more, size = block
        if number < 0 or number * size != fw.received:
            self.retries += 1
            if self.retries > MAX_BLOCK_RETRIES:
                self.fail(CONNECTION_LOST)
            else:
                self._next()
            return
        total = response.uint_option(coap.SIZE2)
        if number == 0 and total and total > device.firmware_profile().storage_bytes:
            self.fail(NO_STORAGE)
            return
        self.retries = 0
        receive(device, fw, response.payload)
        self.blocks += 1
        if fw.state != DOWNLOADING:  # out of flash
            device.world.stats.fw_failed += 1
            self._close()
            changed(device)
            return
        if not more:
            self._close()
            finish(device, fw)
            changed(device)
            return
        if self.blocks == self.breaks_at:
            self.fail(CONNECTION_LOST)
            return
        # A server that answers with smaller blocks than asked sets the pace (RFC 7959 §2.4).
        self.size = min(size, self.size) if size else self.size
        self.number = fw.received // self.size
        self._next()

    def fail(self, result: int) -> None:
        if self.current:
            self.fw.fail(result)
            self.device.world.stats.fw_failed += 1
            changed(self.device)
        self._close()

    def _close(self) -> None:
        carrier = self.carrier
        if isinstance(carrier, DownloadEndpoint) and carrier.transport is not None:
            carrier.transport.close()
        self.carrier = None
        if self.fw.transfer is self:
            self.fw.transfer = None


def _ask_later(download: Download) -> None:
    carrier = download.carrier
    if not download.current or carrier is None:
        return
    if carrier is download.device.link:
        carrier.want(FETCH)  # after whatever else the device has to say
    elif carrier.pending is None and carrier.transport is not None:
        download.ask(carrier)


def send_block(client) -> bool:
    """The client's turn for a block (its FETCH want); False when there is none to ask."""
    fw = client.device.fw
    download = fw.transfer if fw is not None else None
    if not isinstance(download, Download) or download.carrier is not client or not download.current:
        return False
    download.ask(client)
    return True


def block_answered(client, exchange: Exchange, code: int, response: coap.Message | None) -> None:
    fw = client.device.fw
    download = fw.transfer if fw is not None else None
    if isinstance(download, Download) and download.token == exchange.token:
        download.answered(code, response)


class DownloadEndpoint(Endpoint):
    """A socket of a download's own, for a Package URI on another host than the server."""

    __slots__ = ("download",)

    def __init__(self, download: Download) -> None:
        device = download.device
        super().__init__(device.link.network, device.noise, device.endpoint)
        self.download = download

    def on_request(self, request: coap.Message) -> None:
        if request.mtype == coap.CON:
            self.transport.sendto(coap.empty(coap.RST, request.mid))

    def on_outcome(self, exchange: Exchange, code: int, response: coap.Message | None) -> None:
        if exchange.token == self.download.token:
            self.download.answered(code, response)


def _same_address(target: PackageUri, server: tuple) -> bool:
    try:
        host = ipaddress.ip_address(target.host)
        server_host = ipaddress.ip_address(server[0].split("%")[0])
    except ValueError:
        return False
    host = getattr(host, "ipv4_mapped", None) or host
    server_host = getattr(server_host, "ipv4_mapped", None) or server_host
    return host == server_host and target.port == server[1]
