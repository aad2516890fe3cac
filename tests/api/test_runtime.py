"""The composition root: a component that ends stops the process with a non-zero status."""

from __future__ import annotations

import asyncio

from structlog.testing import capture_logs

from api.runtime import until_stopped


async def test_a_component_that_ends_stops_the_others_and_the_process_with_status_1():
    cancelled = asyncio.Event()

    async def http_server() -> None:
        raise OSError("address already in use")

    async def coap_listener() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            cancelled.set()

    with capture_logs() as logs:
        assert await until_stopped(http_server, coap_listener) == 1
    assert cancelled.is_set()
    stopped = [e for e in logs if e["event"] == "component stopped; stopping the process"]
    assert len(stopped) == 1 and isinstance(stopped[0]["exc_info"], OSError)


def test_devices_download_firmware_from_the_configured_uri_or_the_coap_listener():
    from pathlib import Path

    from api.runtime import firmware_download_uri
    from fleet.settings import CoapSettings, DatabaseSettings, FirmwareSettings, Settings

    database = DatabaseSettings(url=None, data_dir=Path("/tmp/unused"))
    assert firmware_download_uri(Settings(database)) == "coap://127.0.0.1:5683"
    assert firmware_download_uri(Settings(database, coap=CoapSettings(host="10.0.0.5", port=5700))) == \
        "coap://10.0.0.5:5700"
    assert firmware_download_uri(Settings(database, coap=CoapSettings(host="fd00::1"))) == "coap://[fd00::1]:5683"
    assert firmware_download_uri(Settings(database, firmware=FirmwareSettings(
        download_base_uri="coaps://fw.city.example"))) == "coaps://fw.city.example"


def test_the_coaps_uri_is_the_configured_one_or_the_coaps_listener_or_none():
    from pathlib import Path

    from api.runtime import coaps_public_uri
    from fleet.settings import CoapSettings, DatabaseSettings, Settings

    database = DatabaseSettings(url=None, data_dir=Path("/tmp/unused"))
    assert coaps_public_uri(Settings(database)) == "coaps://127.0.0.1:5684"
    assert coaps_public_uri(Settings(database, coap=CoapSettings(host="fd00::1", coaps_port=5700))) == \
        "coaps://[fd00::1]:5700"
    assert coaps_public_uri(Settings(database, coap=CoapSettings(coaps_public_uri="coaps://lwm2m.city.example"))) \
        == "coaps://lwm2m.city.example"
    assert coaps_public_uri(Settings(database, coap=CoapSettings(coaps_port=0))) is None  # no coaps listener


def test_the_start_line_says_coaps_is_off_without_the_credentials_key():
    from pathlib import Path

    from api.commands import coaps_listening
    from fleet.settings import CoapSettings, DatabaseSettings, SecuritySettings, Settings

    database = DatabaseSettings(url=None, data_dir=Path("/tmp/unused"))
    keyed = SecuritySettings(credentials_key=bytes(32))
    assert coaps_listening(Settings(database, security=keyed)) == "udp/5684"
    assert coaps_listening(Settings(database)) == "off (FLEET_CREDENTIALS_KEY is not set)"
    assert coaps_listening(Settings(database, coap=CoapSettings(coaps_port=0), security=keyed)) == "off"
