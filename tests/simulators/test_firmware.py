"""Simulated firmware images and object 5's state machine, without a network."""

from __future__ import annotations

import hashlib

import pytest

from simulators import firmware
from simulators.firmware import FirmwareUpdate, ImageReader, PackageRejected, build_image, image_version
from simulators.objects import MethodNotAllowed


def test_an_image_has_its_size_says_its_version_and_is_reproducible():
    image = build_image("3.3.0", 128 * 1024)
    assert len(image) == 128 * 1024
    assert image == build_image("3.3.0", 128 * 1024)
    assert image != build_image("3.3.1", 128 * 1024)
    assert image_version(image) == "3.3.0"
    body = image[:-(len("3.3.0") + 41)]
    assert hashlib.sha256(body).digest() in image[-41:]


def test_an_image_too_small_for_its_trailer_or_without_a_version_is_refused():
    with pytest.raises(ValueError):
        build_image("3.3.0", 10)
    with pytest.raises(ValueError):
        build_image("", 1000)
    assert image_version(build_image("1.0", len("1.0") + 41)) == "1.0"  # an empty body


def test_the_reader_checks_an_image_fed_in_blocks_of_any_size():
    image = build_image("4.0.0-rc1", 10_000)
    for size in (16, 256, 1000, 1024, 10_000):
        reader = ImageReader()
        for start in range(0, len(image), size):
            reader.feed(image[start:start + size])
        assert reader.finish() == "4.0.0-rc1" and reader.size == len(image)
        assert len(reader.tail) <= firmware.MAX_TRAILER


def test_a_flipped_byte_fails_integrity_and_no_trailer_is_an_unsupported_package():
    image = bytearray(build_image("3.3.0", 4096))
    image[100] ^= 0xFF
    with pytest.raises(PackageRejected) as corrupt:
        image_version(bytes(image))
    assert corrupt.value.result == firmware.INTEGRITY
    for package in (b"", b"\x00" * 4096, build_image("3.3.0", 4096)[:-1], b"x" * 30):
        with pytest.raises(PackageRejected) as unsupported:
            image_version(package)
        assert unsupported.value.result == firmware.UNSUPPORTED_PACKAGE


@pytest.mark.parametrize(("uri", "result"), [
    ("http://fleet.example/fw/abc", firmware.UNSUPPORTED_PROTOCOL),
    ("coap+tcp://fleet.example/fw/abc", firmware.UNSUPPORTED_PROTOCOL),  # coaps: over its own DTLS link
    ("not a uri", firmware.INVALID_URI),
    ("coap://[::1/fw", firmware.INVALID_URI),
    ("coap://host:99999/fw", firmware.INVALID_URI),
    ("coap:///fw", firmware.INVALID_URI),
])
def test_a_uri_the_device_cannot_use_leaves_it_idle_with_the_reason(uri, result):
    machine = FirmwareUpdate()
    assert machine.pull(uri) is None
    assert (machine.state, machine.result, machine.uri) == (firmware.IDLE, result, uri)


def test_pull_download_update_and_reboot_on_the_new_version():
    machine = FirmwareUpdate()
    target = machine.pull("coap://127.0.0.1:5683/fw/t%20k?x=1")
    assert (target.host, target.port, target.path, target.query) == ("127.0.0.1", 5683, ("fw", "t k"), ("x=1",))
    assert (machine.state, machine.result) == (firmware.DOWNLOADING, firmware.INITIAL)
    with pytest.raises(MethodNotAllowed):
        machine.update()  # not downloaded yet
    machine.feed(build_image("3.3.0", 2048))
    assert machine.complete()
    assert (machine.state, machine.pkg_version, machine.staged) == (firmware.DOWNLOADED, "3.3.0", "3.3.0")
    machine.update()
    assert (machine.state, machine.result) == (firmware.UPDATING, firmware.INITIAL)
    with pytest.raises(MethodNotAllowed):
        machine.pull("coap://127.0.0.1/fw/again")  # installing: nothing else now
    machine.installed(firmware.INSTALLED)
    assert (machine.state, machine.result, machine.running) == (firmware.IDLE, firmware.UPDATED, "3.3.0")


@pytest.mark.parametrize(("outcome", "result"), [(firmware.INSTALL_FAILED, firmware.UPDATE_FAILED),
                                                  (firmware.ROLLED_BACK, firmware.UPDATED)])
def test_a_failed_or_rolled_back_install_keeps_the_old_version(outcome, result):
    machine = FirmwareUpdate()
    machine.begin()
    machine.feed(build_image("3.3.0", 512))
    machine.complete()
    machine.update()
    machine.installed(outcome)
    assert (machine.state, machine.result, machine.running) == (firmware.IDLE, result, None)


def test_a_bad_package_leaves_idle_and_a_reset_clears_the_result():
    machine = FirmwareUpdate()
    machine.begin()
    machine.feed(b"\x00" * 1000)
    assert not machine.complete()
    assert (machine.state, machine.result) == (firmware.IDLE, firmware.UNSUPPORTED_PACKAGE)
    generation = machine.generation
    machine.pull("")
    assert (machine.state, machine.result, machine.uri) == (firmware.IDLE, firmware.INITIAL, "")
    assert machine.generation > generation  # whatever was scheduled for the old one is stale
    machine.begin()
    machine.fail(firmware.CONNECTION_LOST)
    assert (machine.state, machine.result, machine.reader) == (firmware.IDLE, firmware.CONNECTION_LOST, None)
