"""The service catalogue's mapping to devices, alarms and work orders; a report's checks; a
request's status from its work order; the search span."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import msgspec
import pytest

from fleet.alarms.models import KINDS
from fleet.errors import NotFound, ValidationFailed
from fleet.reports.models import (CLOSING_WORK_ORDER_STATUSES, SERVICES, SERVICES_BY_CODE, WORK_ORDER_NOTES,
                                  ReportForm, RequestQuery, RequestStatus, new_service_request_id,
                                  request_status, status_notes)
from fleet.reports.service import check_report, reporter_actor, search_span

# migration 0012's work_orders.type and work_orders.status checks
WORK_ORDER_TYPES = {"repair_lamp", "replace_controller", "empty_bin", "clean_or_repair_bin",
                    "inspect_access_point", "other"}
WORK_ORDER_STATUSES = {"new", "assigned", "en_route", "in_progress", "done", "cannot_fix", "cancelled",
                       "verified", "reopened"}


def form(**fields) -> ReportForm:
    return msgspec.convert({"service_code": "streetlight_out", "lat": "37.5", "long": "127.0", **fields},
                           ReportForm, strict=False)


def test_every_service_names_a_device_kind_a_fault_of_that_kind_and_a_work_order_type():
    assert [s.code for s in SERVICES][:5] == ["streetlight_out", "streetlight_day_burning", "bin_overflowing",
                                              "bin_damaged", "wifi_not_working"]
    expected = {"streetlight_out": "repair_lamp", "streetlight_day_burning": "repair_lamp",
                "bin_overflowing": "empty_bin", "bin_damaged": "clean_or_repair_bin",
                "wifi_not_working": "inspect_access_point"}
    for code, work_order_type in expected.items():
        assert SERVICES_BY_CODE[code].work_order_type == work_order_type
    for service in SERVICES:
        assert service.work_order_type in WORK_ORDER_TYPES
        assert service.device_kind.value in KINDS[service.alarm_type], service.code
        assert sorted(a.order for a in service.attributes) == list(range(1, len(service.attributes) + 1))
        assert "abc" in service.alarm_detail("abc") and service.alarm_type in service.alarm_detail("abc")


def test_every_work_order_status_reads_as_open_or_closed_with_plain_words():
    assert set(WORK_ORDER_NOTES) == WORK_ORDER_STATUSES
    for status in WORK_ORDER_STATUSES:
        closed = status in ("done", "verified", "cannot_fix", "cancelled")
        assert request_status(status) == (RequestStatus.CLOSED if closed else RequestStatus.OPEN), status
        assert status_notes(status) == WORK_ORDER_NOTES[status]
    assert set(CLOSING_WORK_ORDER_STATUSES) == {"done", "verified", "cannot_fix", "cancelled"}
    # No work order (no device near enough): open, for the control room.
    assert request_status(None) == RequestStatus.OPEN and "control room" in status_notes(None)


def test_a_report_needs_a_known_service_and_a_location():
    with pytest.raises(NotFound):
        check_report(form(service_code="pothole"))
    with pytest.raises(ValidationFailed) as missing:
        check_report(form(lat=None, long=None))
    assert missing.value.errors[0].field == "lat"
    with pytest.raises(ValidationFailed) as half:
        check_report(form(long=None))
    assert half.value.errors[0].field == "long"
    assert check_report(form(lat=None, long=None, address_string="Sejong-daero 110")).service.code == "streetlight_out"
    assert check_report(form(lat=None, long=None, address_id="A-77")).form.address_id == "A-77"


def test_attributes_are_checked_against_the_service_definition():
    with pytest.raises(ValidationFailed) as required:
        check_report(form(service_code="bin_damaged"))
    assert required.value.errors[0].field == "attribute[damage]"
    with pytest.raises(ValidationFailed):
        check_report(form(service_code="bin_damaged", attributes={"damage": ["exploded"]}))
    with pytest.raises(ValidationFailed):
        check_report(form(service_code="bin_damaged", attributes={"damage": ["lid", "burnt"]}))
    report = check_report(form(service_code="bin_damaged", attributes={
        "damage": ["lid"], "bin_number": ["B-12"], "WHISPAWN": ["123456"]}))
    # Another system's attributes are dropped, not refused.
    assert report.attributes == {"damage": "lid", "bin_number": "B-12"}


def test_the_form_refuses_what_the_specification_does_not_allow():
    for fields in ({"lat": "91"}, {"long": "-181"}, {"description": "x" * 4001},
                   {"media_url": "javascript:alert(1)"}, {"lat": "north"}):
        with pytest.raises(msgspec.ValidationError):
            form(**fields)


def test_the_search_span_defaults_to_90_days_and_never_exceeds_them():
    now = datetime(2026, 12, 6, tzinfo=UTC)
    assert search_span(RequestQuery(), now) == (now - timedelta(days=90), now)
    start = now - timedelta(days=10)
    assert search_span(RequestQuery(start=start), now) == (start, start + timedelta(days=90))
    assert search_span(RequestQuery(end=now), now) == (now - timedelta(days=90), now)
    with pytest.raises(ValidationFailed):
        search_span(RequestQuery(start=now - timedelta(days=91), end=now), now)
    with pytest.raises(ValidationFailed):
        search_span(RequestQuery(start=now, end=now - timedelta(seconds=1)), now)


def test_service_request_ids_are_short_and_not_sequential():
    ids = {new_service_request_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(len(i) == 10 and i.isalnum() and i == i.lower() and not set(i) & set("01lio") for i in ids)


def test_the_audit_names_a_reporting_app_by_its_keys_prefix():
    assert reporter_actor("fleet_ab12cd34_secretpart_with_underscores") == "reporter:ab12cd34"
    assert reporter_actor("garbage") == "reporter:?"
