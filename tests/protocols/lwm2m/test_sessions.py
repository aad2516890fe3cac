"""The session cache on its own: what a change, a rebinding, a lost feed and a full cache do to it."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from fleet.registrations.models import Registration, SessionChange
from protocols.lwm2m.sessions import SessionCache

NOW = datetime(2026, 12, 6, tzinfo=UTC)
TENANT = uuid.uuid4()


def registration(device_id: uuid.UUID, registration_id: str, address: str, port: int, *,
                 secure: bool = False) -> Registration:
    return Registration(registration_id, device_id, TENANT, f"ep-{device_id.hex[:6]}", address, port,
                        300, "U", False, "1.1", "", None, "node", NOW, NOW, NOW, secure)


@pytest.fixture
def cache() -> SessionCache:
    cache = SessionCache()
    cache.set_following(True)
    return cache


def test_registering_again_from_a_new_address_silences_the_old_one(cache):
    device = uuid.uuid4()
    cache.remember(registration(device, "r1", "10.0.0.1", 5000))
    cache.remember(registration(device, "r2", "10.0.0.1", 6000))
    assert cache.get(("10.0.0.1", 5000, False)) is None
    assert cache.get(("10.0.0.1", 6000, False)).registration_id == "r2"
    assert len(cache) == 1


def test_a_change_committed_elsewhere_drops_what_it_replaced_and_keeps_what_it_confirms(cache):
    moved, confirmed, ended = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    cache.remember(registration(moved, "m1", "10.0.0.1", 5000))
    cache.remember(registration(confirmed, "c1", "10.0.0.2", 5000))
    cache.remember(registration(ended, "e1", "10.0.0.3", 5000))
    ended_devices = []
    cache.on_ended = ended_devices.append

    cache.apply(SessionChange(moved, "m1", "10.0.0.9", 7000))  # an Update from a new address
    cache.apply(SessionChange(confirmed, "c1", "10.0.0.2", 5000))  # its own Register, heard back
    cache.apply(SessionChange(ended))  # de-registered, expired or decommissioned

    assert cache.get(("10.0.0.1", 5000, False)) is None
    assert cache.get(("10.0.0.2", 5000, False)).device_id == confirmed
    assert cache.get(("10.0.0.3", 5000, False)) is None
    assert ended_devices == [{ended}]


def test_an_address_handed_to_another_device_stops_speaking_for_the_first(cache):
    first, second = uuid.uuid4(), uuid.uuid4()
    cache.remember(registration(first, "f1", "10.0.0.1", 5000))
    cache.apply(SessionChange(second, "s1", "10.0.0.1", 5000))
    assert cache.get(("10.0.0.1", 5000, False)) is None


def test_a_read_overtaken_by_a_change_of_its_device_is_used_but_not_cached(cache):
    device = uuid.uuid4()
    with cache.reading() as since:
        cache.apply(SessionChange(device))  # committed while the read was under way
        session = cache.remember(registration(device, "r1", "10.0.0.1", 5000), since=since)
    assert session.device_id == device
    assert cache.get(("10.0.0.1", 5000, False)) is None

    with cache.reading() as since:
        cache.apply(SessionChange(device, "r2", "10.0.0.1", 5001))  # the very change read
        cache.remember(registration(device, "r2", "10.0.0.1", 5001), since=since)
    assert cache.get(("10.0.0.1", 5001, False)).registration_id == "r2"


def test_nothing_is_cached_while_changes_are_not_followed(cache):
    device = uuid.uuid4()
    cache.remember(registration(device, "r1", "10.0.0.1", 5000))
    cache.set_following(False)  # the LISTEN connection is gone: notifications may be missed
    assert cache.get(("10.0.0.1", 5000, False)) is None
    cache.remember(registration(device, "r1", "10.0.0.1", 5000))
    assert cache.get(("10.0.0.1", 5000, False)) is None
    cache.set_following(True)
    cache.remember(registration(device, "r1", "10.0.0.1", 5000))
    assert cache.get(("10.0.0.1", 5000, False)) is not None


def test_an_unreadable_announcement_forgets_everything(cache):
    cache.remember(registration(uuid.uuid4(), "r1", "10.0.0.1", 5000))
    cache.apply(None)
    assert len(cache) == 0


def test_the_cache_is_bounded_in_size_and_age():
    cache = SessionCache(max_sessions=3)
    cache.set_following(True)
    devices = [uuid.uuid4() for _ in range(5)]
    for number, device in enumerate(devices):
        cache.remember(registration(device, f"r{number}", "10.0.0.1", 5000 + number))
    assert len(cache) == 3
    assert cache.get(("10.0.0.1", 5000, False)) is None and cache.get(("10.0.0.1", 5004, False)) is not None

    expired = SessionCache(ttl_s=0.0)
    expired.set_following(True)
    expired.remember(registration(devices[0], "r0", "10.0.0.1", 5000))
    assert expired.get(("10.0.0.1", 5000)) is None


def test_announcements_parse_as_the_repository_writes_them():
    device = uuid.uuid4()
    assert SessionChange.from_payload(str(device)) == SessionChange(device)
    assert SessionChange.from_payload(f"{device} Ab-_9x 5683 2001:db8::1") == SessionChange(
        device, "Ab-_9x", "2001:db8::1", 5683)
    with pytest.raises(ValueError):
        SessionChange.from_payload("something else entirely")


def test_a_device_registered_over_coaps_is_not_its_address_in_plain(cache):
    device = uuid.uuid4()
    cache.remember(registration(device, "s1", "10.0.0.1", 5000, secure=True))
    assert cache.get(("10.0.0.1", 5000, True)).registration_id == "s1"
    assert cache.get(("10.0.0.1", 5000, False)) is None  # a spoofed plain datagram speaks for nobody
    cache.apply(SessionChange(device, "s1", "10.0.0.1", 5000, secure=False))  # it registered in plain now
    assert cache.get(("10.0.0.1", 5000, True)) is None


def test_a_change_says_whether_it_came_over_coaps():
    device = uuid.uuid4()
    assert SessionChange.from_payload(f"{device} r1 5000 10.0.0.1 s") == SessionChange(
        device, "r1", "10.0.0.1", 5000, True)
    assert SessionChange.from_payload(f"{device} r1 5000 10.0.0.1").secure is False
    assert SessionChange.from_payload(f"{device}").ended
