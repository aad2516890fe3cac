"""A simulated device's firmware update over the wire: object 5's resources, the download from
the Package URI (Block2), the pushed Package (Block1), the install, the reboot onto the new
version, and the firmware fault kinds.

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

from fleet.objectmodel import ResourcePath
from protocols.coap import message as coap
from simulators import serving
from simulators.exchanges import RESET, TIMEOUT, Endpoint, Exchange
from simulators.firmware import (COAP, CONNECTION_LOST, DOWNLOADING, INSTALL_FAILED, INSTALLED,
                                 INVALID_URI, NO_STORAGE, PULL, PUSH, ROLLED_BACK, FirmwareUpdate,
                                 PackageUri)
from simulators.objects import InstanceTable, MethodNotAllowed, RequestError, Resource, executable
from simulators.objects import UnsupportedContentFormat

if TYPE_CHECKING:
    from simulators.devices.base import SimulatedDevice

log = structlog.get_logger("simulators.firmware")

FETCH = 32  # a client's want and exchange purpose: the next block of a download
CONTINUE = 2 << 5 | 31  # 2.31 (RFC 7959 §2.9.1)
MAX_BLOCK_RETRIES = 3
SLOW_BLOCK_S = 0.2  # fw_slow: one block per this many seconds
INSTALL_S = 2.0  # Updating, before the device reboots
BOOT_S = 3.0  # off, before it registers again
PACKAGE = ResourcePath(5, 0, 0)
PUSHED = "pushed"  # FirmwareUpdate.transfer while a Block1 push is under way
FIRMWARE_FAULTS = ("fw_download_fail", "fw_corrupt", "fw_install_fail", "fw_rollback", "fw_brick",
                   "fw_slow")


class EntityIncomplete(RequestError):
    code = coap.REQUEST_ENTITY_INCOMPLETE


class EntityTooLarge(RequestError):
    code = 4 << 5 | 13


def machine(device: SimulatedDevice) -> FirmwareUpdate:
    if device.fw is None:
        device.fw = FirmwareUpdate()
    return device.fw


def _changed(device: SimulatedDevice) -> None:
    """Observers hear the new State or Update Result after the answer to the request."""
    device.world.scheduler.after(0.0, serving.notify_observers, device.link)


def _fault(device: SimulatedDevice, kind: str) -> bool:
    if kind in device.faults.forced:
        device.world.stats.fault(kind)
        return True
    return False


# -- object 5 ---------------------------------------------------------------------------------

def _uri_written(device: SimulatedDevice, value: object) -> None:
    uri = str(value)
    if uri and device.firmware_profile().delivery == PUSH:
        raise MethodNotAllowed("this model takes firmware by Package only (/5/0/9 = 1)")
    fw = machine(device)
    target = fw.pull(uri)
    _changed(device)
    if target is not None:
        Download(device, fw, target).start()


def _package_written(device: SimulatedDevice, value: object) -> None:
    """A whole package in one Write (no Block1), or an empty one: reset."""
    data = bytes(value) if isinstance(value, bytes | bytearray) else str(value).encode()
    fw = machine(device)
    if data in (b"", b"\0"):
        fw.reset()
    else:
        _begin_push(device, fw, len(data))
        _receive(device, fw, data)
        _finish(device, fw)
    _changed(device)


def _update(device: SimulatedDevice, _arguments: bytes) -> None:
    fw = machine(device)
    fw.update()
    _changed(device)
    device.world.scheduler.after(INSTALL_S, _reboot, (device, fw.generation))


TABLE: InstanceTable = {
    0: Resource(write=_package_written),
    1: Resource(read=lambda d: machine(d).uri, write=_uri_written),
    2: executable(_update),
    3: Resource(read=lambda d: machine(d).state),
    5: Resource(read=lambda d: machine(d).result),
    6: Resource(read=lambda d: machine(d).pkg_name),
    7: Resource(read=lambda d: machine(d).pkg_version),
    8: Resource(read=lambda _d: {0: COAP}),
    9: Resource(read=lambda d: d.firmware_profile().delivery),
}


# -- bytes arriving, either way ---------------------------------------------------------------

def _receive(device: SimulatedDevice, fw: FirmwareUpdate, data: bytes) -> None:
    if fw.received == 0 and data and _fault(device, "fw_corrupt"):
        data = bytes([data[0] ^ 0xFF]) + data[1:]  # a bit error the link did not catch
    fw.feed(data)
    device.world.stats.fw_blocks += 1
    if fw.received > device.firmware_profile().storage_bytes:
        fw.fail(NO_STORAGE)


def _finish(device: SimulatedDevice, fw: FirmwareUpdate) -> None:
    stats = device.world.stats
    if fw.state == DOWNLOADING and fw.complete():
        stats.fw_downloaded += 1
        fw.pkg_name = f"{device.spec.model or device.defaults[1]} firmware"
    else:
        stats.fw_failed += 1
        log.info("firmware package refused", endpoint=device.endpoint, result=fw.result)


def _begin_push(device: SimulatedDevice, fw: FirmwareUpdate, size: int | None) -> None:
    if device.firmware_profile().delivery == PULL:
        raise MethodNotAllowed("this model downloads its firmware from a Package URI (/5/0/9 = 0)")
    fw.begin()
    fw.transfer = PUSHED
    if size and size > device.firmware_profile().storage_bytes:
        fw.fail(NO_STORAGE)
        device.world.stats.fw_failed += 1
        _changed(device)
        raise EntityTooLarge("the package does not fit the device's flash")


def receive_block(client, path: ResourcePath, request: coap.Message,
                  options: list) -> tuple[int, bytes] | None:
    """One Block1 of a Write (RFC 7959 §2.3). Only the Package is written block-wise; the
    device takes blocks at most its own size, and says so in its 2.31 Continue. None: a
    single block of another resource, written as usual."""
    try:
        number, more, size = coap.block_option(request.option(coap.BLOCK1))
    except coap.MessageFormatError as exc:
        raise EntityIncomplete(str(exc)) from None
    if path != PACKAGE:
        if number == 0 and not more:
            return None
        raise EntityTooLarge(f"{path} takes a single block")
    if request.uint_option(coap.CONTENT_FORMAT) not in (None, coap.OPAQUE):
        raise UnsupportedContentFormat("a package is written as application/octet-stream")
    device = client.device
    fw = machine(device)
    if number == 0:
        if not more and request.payload in (b"", b"\0"):
            fw.reset()
            _changed(device)
            options.append((coap.BLOCK1, coap.block_value(0, False, size)))
            return coap.CHANGED, b""
        _begin_push(device, fw, request.uint_option(coap.SIZE1))
        _changed(device)
    elif fw.state != DOWNLOADING or fw.transfer != PUSHED or number * size != fw.received:
        raise EntityIncomplete(f"block {number} of {size} bytes is not the next one")
    _receive(device, fw, request.payload)
    if fw.state != DOWNLOADING:
        device.world.stats.fw_failed += 1
        _changed(device)
        raise EntityTooLarge("the package does not fit the device's flash")
    if more:
        options.append((coap.BLOCK1, coap.block_value(number, True,
                                                      min(size, device.firmware_block_size()))))
        return CONTINUE, b""
    options.append((coap.BLOCK1, coap.block_value(number, False, size)))
    _finish(device, fw)
    _changed(device)
    return coap.CHANGED, b""


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
        self.breaks_at = 1 if _fault(device, "fw_download_fail") else -1
        self.pace_s = SLOW_BLOCK_S if _fault(device, "fw_slow") else 0.0
        fw.transfer = self
        self.target = target

    @property
    def current(self) -> bool:
        fw = self.fw
        return fw.transfer is self and fw.generation == self.generation and fw.state == DOWNLOADING

    def start(self) -> None:
        link = self.device.link
        if _same_address(self.target, link.network.server):
            self.carrier = link
            link.want(FETCH)
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
            self._fail(CONNECTION_LOST)
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
                self._fail(CONNECTION_LOST)
            else:
                self._next()  # the same block again: the download resumes where it stopped
            return
        if code != coap.CONTENT:
            # Nothing to download there (unknown or expired token): the URI is no good.
            log.info("firmware download refused", endpoint=self.device.endpoint,
                     code=coap.code_text(code))
            self._fail(INVALID_URI)
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
                self._fail(CONNECTION_LOST)
            else:
                self._next()
            return
        total = response.uint_option(coap.SIZE2)
        if number == 0 and total and total > device.firmware_profile().storage_bytes:
            self._fail(NO_STORAGE)
            return
        self.retries = 0
        _receive(device, fw, response.payload)
        self.blocks += 1
        if fw.state != DOWNLOADING:  # out of flash
            device.world.stats.fw_failed += 1
            self._close()
            _changed(device)
            return
        if not more:
            self._close()
            _finish(device, fw)
            _changed(device)
            return
        if self.blocks == self.breaks_at:
            self._fail(CONNECTION_LOST)
            return
        # A server that answers with smaller blocks than asked sets the pace (RFC 7959 §2.4).
        self.size = min(size, self.size) if size else self.size
        self.number = fw.received // self.size
        self._next()

    def _fail(self, result: int) -> None:
        if self.current:
            self.fw.fail(result)
            self.device.world.stats.fw_failed += 1
            _changed(self.device)
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


# -- install and reboot -----------------------------------------------------------------------

def _reboot(argument: tuple[SimulatedDevice, int]) -> None:
    device, generation = argument
    fw, link = device.fw, device.link
    if fw is None or fw.generation != generation or link.silent or link.network.stopping:
        return
    if _fault(device, "fw_brick"):
        link.go_silent()  # it never boots again
        return
    if _fault(device, "fw_install_fail"):
        outcome = INSTALL_FAILED
    elif _fault(device, "fw_rollback"):
        outcome = ROLLED_BACK
    else:
        outcome = INSTALLED
    link.power_off()
    device.world.scheduler.after(BOOT_S, _booted, (device, generation, outcome))


def _booted(argument: tuple[SimulatedDevice, int, str]) -> None:
    device, generation, outcome = argument
    fw = device.fw
    if fw.generation != generation:
        return
    fw.installed(outcome)
    if outcome == INSTALLED:
        device.world.stats.fw_updated += 1
    else:
        device.world.stats.fw_failed += 1
    device.link.power_on()


def interrupted(device: SimulatedDevice) -> None:
    """The device restarts in the middle of a transfer: what it had received is gone."""
    fw = device.fw
    if fw is not None and fw.state == DOWNLOADING:
        transfer = fw.transfer
        if isinstance(transfer, Download):
            transfer._fail(CONNECTION_LOST)
        else:
            fw.fail(CONNECTION_LOST)

