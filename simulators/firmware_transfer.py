"""A simulated device's object 5 (Firmware Update): its resources, the pushed Package (Block1
on /5/0/0), Execute Update, the install and the reboot onto the new version, and where the
firmware fault kinds strike. The pull is simulators.firmware_download's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fleet.objectmodel import ResourcePath
from protocols.coap import message as coap
from simulators.firmware import (COAP, COAPS, CONNECTION_LOST, DOWNLOADING, INSTALL_FAILED, INSTALLED,
                                 NO_STORAGE, PULL, PUSH, ROLLED_BACK, FirmwareUpdate)
from simulators.firmware_download import Download, changed, fault, finish, machine, receive
from simulators.objects import (InstanceTable, MethodNotAllowed, RequestError, Resource, UnsupportedContentFormat,
                                executable)

if TYPE_CHECKING:
    from simulators.devices.base import SimulatedDevice

CONTINUE = 2 << 5 | 31  # 2.31 (RFC 7959 §2.9.1)
INSTALL_S = 2.0  # Updating, before the device reboots
BOOT_S = 3.0  # off, before it registers again
PACKAGE = ResourcePath(5, 0, 0)
PUSHED = "pushed"  # FirmwareUpdate.transfer while a Block1 push is under way


class EntityIncomplete(RequestError):
    code = coap.REQUEST_ENTITY_INCOMPLETE


class EntityTooLarge(RequestError):
    code = 4 << 5 | 13


# -- object 5 ---------------------------------------------------------------------------------

def _uri_written(device: SimulatedDevice, value: object) -> None:
    uri = str(value)
    if uri and device.firmware_profile().delivery == PUSH:
        raise MethodNotAllowed("this model takes firmware by Package only (/5/0/9 = 1)")
    fw = machine(device)
    target = fw.pull(uri)
    changed(device)
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
        receive(device, fw, data)
        finish(device, fw)
    changed(device)


def _update(device: SimulatedDevice, _arguments: bytes) -> None:
    fw = machine(device)
    fw.update()
    changed(device)
    device.world.scheduler.after(INSTALL_S, _reboot, (device, fw.generation))


TABLE: InstanceTable = {
    0: Resource(write=_package_written),
    1: Resource(read=lambda d: machine(d).uri, write=_uri_written),
    2: executable(_update),
    3: Resource(read=lambda d: machine(d).state),
    5: Resource(read=lambda d: machine(d).result),
    6: Resource(read=lambda d: machine(d).pkg_name),
    7: Resource(read=lambda d: machine(d).pkg_version),
    8: Resource(read=lambda d: {0: COAP, 1: COAPS} if d.link is not None and d.link.secure else {0: COAP}),
    9: Resource(read=lambda d: d.firmware_profile().delivery),
}


# -- push: Block1 on the Package ---------------------------------------------------------------

def _begin_push(device: SimulatedDevice, fw: FirmwareUpdate, size: int | None) -> None:
    if device.firmware_profile().delivery == PULL:
        raise MethodNotAllowed("this model downloads its firmware from a Package URI (/5/0/9 = 0)")
    fw.begin()
    fw.transfer = PUSHED
    if size and size > device.firmware_profile().storage_bytes:
        fw.fail(NO_STORAGE)
        device.world.stats.fw_failed += 1
        changed(device)
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
            changed(device)
            options.append((coap.BLOCK1, coap.block_value(0, False, size)))
            return coap.CHANGED, b""
        _begin_push(device, fw, request.uint_option(coap.SIZE1))
        changed(device)
    elif fw.state != DOWNLOADING or fw.transfer != PUSHED or number * size != fw.received:
        raise EntityIncomplete(f"block {number} of {size} bytes is not the next one")
    receive(device, fw, request.payload)
    if fw.state != DOWNLOADING:
        device.world.stats.fw_failed += 1
        changed(device)
        raise EntityTooLarge("the package does not fit the device's flash")
    if more:
        options.append((coap.BLOCK1, coap.block_value(number, True,
                                                      min(size, device.firmware_block_size()))))
        return CONTINUE, b""
    options.append((coap.BLOCK1, coap.block_value(number, False, size)))
    finish(device, fw)
    changed(device)
    return coap.CHANGED, b""


# -- install and reboot -----------------------------------------------------------------------

def _reboot(argument: tuple[SimulatedDevice, int]) -> None:
    device, generation = argument
    fw, link = device.fw, device.link
    if fw is None or fw.generation != generation or link.silent or link.network.stopping:
        return
    if fault(device, "fw_brick"):
        link.go_silent()  # it never boots again
        return
    if fault(device, "fw_install_fail"):
        outcome = INSTALL_FAILED
    elif fault(device, "fw_rollback"):
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
            transfer.fail(CONNECTION_LOST)
        else:
            fw.fail(CONNECTION_LOST)
