"""Citizens' reports: the services a city offers (Open311 GeoReport v2), a filed report, and its status."""

from __future__ import annotations

import enum
import re
import secrets
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

from msgspec import Meta, Struct

from fleet.alarms.models import AlarmType
from fleet.registry.models import DeviceKind

# Open311 clients show these verbatim; the city's own words, short.
DEFAULT_MATCH_RADIUS_M = 50.0
# GeoReport v2: a search spans at most 90 days and answers at most 1000 requests.
MAX_SPAN_DAYS = 90
MAX_REQUESTS = 1000
# Lowercase letters and digits without the look-alikes (0/o, 1/l/i): read out over the phone.
_ID_ALPHABET = "23456789abcdefghjkmnpqrstuvwxyz"
_ID_LENGTH = 10  # 31**10 ≈ 8e14: not enumerable through a rate-limited API


# What a service_request_id and a city's slug can look like (migrations 0015 and 0001): anything
# else names nothing, and is answered as such without asking the database.
SERVICE_REQUEST_ID = re.compile(r"[a-z0-9]{8,32}")
JURISDICTION_ID = re.compile(r"[a-z0-9][a-z0-9-]{1,62}")


def new_service_request_id() -> str:
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(_ID_LENGTH))


class Datatype(enum.StrEnum):
    STRING = "string"
    NUMBER = "number"
    DATETIME = "datetime"
    TEXT = "text"
    SINGLEVALUELIST = "singlevaluelist"
    MULTIVALUELIST = "multivaluelist"


@dataclass(frozen=True, slots=True)
class Attribute:
    """A question a service asks beyond the description (GeoReport v2 service definition)."""

    code: str
    description: str
    datatype: Datatype
    order: int
    required: bool = False
    values: tuple[tuple[str, str], ...] = ()  # (key, name) for the list datatypes
    datatype_description: str | None = None

    def accepts(self, value: str) -> bool:
        if self.datatype in (Datatype.SINGLEVALUELIST, Datatype.MULTIVALUELIST):
            return value in {key for key, _ in self.values}
        if self.datatype == Datatype.NUMBER:
            try:
                float(value)
            except ValueError:
                return False
        if self.datatype == Datatype.DATETIME:
            try:
                datetime.fromisoformat(value)
            except ValueError:
                return False
        return len(value) <= 1000


@dataclass(frozen=True, slots=True)
class Service:
    """A kind of report, and what Fleet does with one: which devices it concerns, the fault the
    device itself would raise for it, and the work order a crew gets."""

    code: str
    name: str
    description: str
    group: str
    keywords: str
    device_kind: DeviceKind
    alarm_type: AlarmType
    work_order_type: str
    service_notice: str
    attributes: tuple[Attribute, ...] = field(default=())

    def alarm_detail(self, service_request_id: str) -> str:
        return f"citizen report {service_request_id}: {self.name.lower()} (as {self.alarm_type})"


_POLE = Attribute("pole_number", "The number on the pole's plate, if you can read it", Datatype.STRING, 1)
_BIN = Attribute("bin_number", "The number on the bin, if you can read it", Datatype.STRING, 1)

SERVICES: tuple[Service, ...] = (
    Service("streetlight_out", "Streetlight out", "A streetlight that stays dark at night.",
            "streetlights", "dark, lamp, light out, broken light", DeviceKind.STREETLIGHT,
            AlarmType.LAMP_FAILURE, "repair_lamp",
            "A crew will check the lamp and repair it.",
            (_POLE, Attribute("since", "Since when has it been dark?", Datatype.SINGLEVALUELIST, 2,
                              values=(("tonight", "Tonight"), ("few_nights", "A few nights"),
                                      ("longer", "Longer"))))),
    Service("streetlight_day_burning", "Streetlight lit by day", "A streetlight that is on in daylight.",
            "streetlights", "day burner, lit by day, light on, wasting energy", DeviceKind.STREETLIGHT,
            AlarmType.DAY_BURNER, "repair_lamp",
            "A crew will check the lamp's controller.", (_POLE,)),
    Service("bin_overflowing", "Bin overflowing", "A waste bin that is full or overflowing.",
            "waste", "full, overflowing, litter, rubbish, trash", DeviceKind.WASTE_BIN,
            AlarmType.BIN_OVERFLOW, "empty_bin",
            "A crew will empty the bin.",
            (_BIN, Attribute("litter_around", "Is there litter around the bin?", Datatype.SINGLEVALUELIST, 2,
                             values=(("yes", "Yes"), ("no", "No"))))),
    Service("bin_damaged", "Bin damaged", "A waste bin that is broken, burnt or knocked over.",
            "waste", "broken, burnt, knocked over, damaged bin, lid", DeviceKind.WASTE_BIN,
            AlarmType.BIN_KNOCKED_OVER, "clean_or_repair_bin",
            "A crew will clean or repair the bin.",
            (_BIN, Attribute("damage", "What is wrong with it?", Datatype.SINGLEVALUELIST, 2, required=True,
                             values=(("knocked_over", "Knocked over"), ("lid", "Lid broken"),
                                     ("burnt", "Burnt"), ("other", "Something else"))))),
    Service("wifi_not_working", "Public Wi-Fi not working", "The city's public Wi-Fi is absent or unusable here.",
            "wifi", "wifi, wi-fi, internet, hotspot, no connection", DeviceKind.WIFI_AP,
            AlarmType.AP_DOWN, "inspect_access_point",
            "A crew will inspect the access point.",
            (Attribute("symptom", "What happens?", Datatype.SINGLEVALUELIST, 1,
                       values=(("no_network", "The network is not listed"),
                               ("cannot_connect", "It is listed but will not connect"),
                               ("slow", "It connects but is very slow"))),)),
)
SERVICES_BY_CODE: dict[str, Service] = {s.code: s for s in SERVICES}


class RequestStatus(enum.StrEnum):
    OPEN = "open"
    CLOSED = "closed"


# The linked work order's status, as the citizen reads it; the statuses that close the request.
WORK_ORDER_NOTES: dict[str, str] = {
    "new": "A work order has been created.",
    "assigned": "A crew has been assigned.",
    "en_route": "A crew is on its way.",
    "in_progress": "A crew is working on it.",
    "done": "Repaired.",
    "verified": "Repaired, and the device confirms it works again.",
    "reopened": "The fault came back; the crew will return.",
    "cannot_fix": "The crew could not fix it on site; the city will follow up.",
    "cancelled": "Closed without work: the fault was already handled.",
}
CLOSING_WORK_ORDER_STATUSES = ("done", "verified", "cannot_fix", "cancelled")
NOT_MATCHED_NOTES = "Received; the control room will look into it."


def request_status(work_order_status: str | None) -> RequestStatus:
    if work_order_status in CLOSING_WORK_ORDER_STATUSES:
        return RequestStatus.CLOSED
    return RequestStatus.OPEN


def status_notes(work_order_status: str | None) -> str:
    if work_order_status is None:
        return NOT_MATCHED_NOTES
    return WORK_ORDER_NOTES.get(work_order_status, "In progress.")


Text = Annotated[str, Meta(max_length=200)]


class ReportForm(Struct, forbid_unknown_fields=False):
    """A POSTed report as GeoReport v2 names its fields, decoded once from the form.

    `lat`/`long` or `address_string` (or `address_id`) locate it; `attributes` holds the
    `attribute[code]=value` pairs."""

    service_code: Annotated[str, Meta(min_length=1, max_length=100)]
    lat: Annotated[float, Meta(ge=-90, le=90)] | None = None
    long: Annotated[float, Meta(ge=-180, le=180)] | None = None
    address_string: Annotated[str, Meta(max_length=1000)] | None = None
    address_id: Text | None = None
    description: Annotated[str, Meta(max_length=4000)] = ""
    media_url: Annotated[str, Meta(max_length=2000, pattern=r"^https?://")] | None = None
    email: Annotated[str, Meta(max_length=320)] | None = None
    first_name: Text | None = None
    last_name: Text | None = None
    phone: Annotated[str, Meta(max_length=50)] | None = None
    device_id: Text | None = None
    account_id: Text | None = None
    attributes: dict[str, list[str]] = {}


@dataclass(frozen=True, slots=True)
class NewReport:
    """A report ready to file: the form, checked against its service."""

    service: Service
    form: ReportForm
    attributes: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Links:
    """The device a report was matched to, and the alarm and work order it joined (all None: unmatched)."""

    device_id: UUID | None = None
    alarm_id: UUID | None = None
    work_order_id: UUID | None = None


@dataclass(frozen=True, slots=True)
class Filed:
    """What POST answers: the citizen's id for the request and what the city will do."""

    service_request_id: str
    service_notice: str
    device_id: UUID | None
    work_order_id: UUID | None


@dataclass(frozen=True, slots=True)
class ServiceRequest:
    """A report as anyone may read it: no contact field is ever loaded into one."""

    service_request_id: str
    service_code: str
    description: str
    lat: float | None
    lon: float | None
    address: str | None
    address_id: str | None
    media_url: str | None
    requested_at: datetime
    updated_at: datetime
    work_order_status: str | None
    expected_at: datetime | None

    @property
    def service(self) -> Service | None:
        return SERVICES_BY_CODE.get(self.service_code)

    @property
    def status(self) -> RequestStatus:
        return request_status(self.work_order_status)

    @property
    def status_notes(self) -> str:
        return status_notes(self.work_order_status)


@dataclass(frozen=True, slots=True)
class RequestQuery:
    """GET requests: either the ids asked for, or the filters within a span of at most 90 days."""

    service_request_ids: tuple[str, ...] = ()
    service_codes: tuple[str, ...] = ()
    statuses: tuple[RequestStatus, ...] = ()
    start: datetime | None = None
    end: datetime | None = None
    limit: int = MAX_REQUESTS


@dataclass(frozen=True, slots=True)
class Open311Settings:
    match_radius_m: float = DEFAULT_MATCH_RADIUS_M
    public_requests: bool = True
