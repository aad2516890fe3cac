"""Wire schemas of the REST API (msgspec), in families: Device, DeviceCreate, DeviceUpdate, ..."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal, get_args
from uuid import UUID

import msgspec
from litestar.params import Parameter
from msgspec import UNSET, Meta, Struct, UnsetType

from fleet.access.models import ApiKey as ApiKeyModel
from fleet.groups.models import DeviceGroup as GroupModel
from fleet.registry.filters import filter_to_json
from fleet.registry.models import ALL_KIND_ATTRIBUTES
from fleet.registry.models import Device as DeviceModel
from fleet.security.validation import fingerprint_of

Latitude = Annotated[float, Meta(ge=-90, le=90, description="WGS84 latitude in degrees")]
Longitude = Annotated[float, Meta(ge=-180, le=180, description="WGS84 longitude in degrees")]
DeviceKindName = Literal["streetlight", "waste_bin", "wifi_ap"]
DeviceStatusName = Literal["provisioned", "online", "offline", "maintenance", "decommissioned"]
LampTypeName = Literal["led", "high_pressure_sodium", "low_pressure_sodium", "metal_halide",
                       "mercury_vapour", "fluorescent", "induction", "other"]
WasteKindName = Literal["organic", "inorganic", "glass", "oil", "plastic", "metal", "paper",
                        "batteries", "electronics", "hazardous", "other"]
BandName = Literal["2.4GHz", "5GHz", "6GHz", "dual"]
RoleName = Literal["admin", "operator", "crew", "viewer", "reporter"]


def query_enum(name: type) -> Any:
    """An optional query filter over a Literal's values (empty: no filter); the domain still
    validates it (422), the document lists what it accepts."""
    return Annotated[str | None, Parameter(required=False, schema_extra={"enum": ["", *get_args(name)]})]


KindFilter = query_enum(DeviceKindName)
StatusFilter = query_enum(DeviceStatusName)


class Location(Struct):
    lat: Latitude
    lon: Longitude


class Device(Struct, omit_defaults=True):
    id: UUID
    kind: DeviceKindName
    endpoint: str
    location: Location
    status: DeviceStatusName
    tags: list[str]
    created_at: datetime
    updated_at: datetime
    serial: str | None = None
    manufacturer: str | None = None
    model: str | None = None
    firmware_version: str | None = None
    district: str | None = None
    address: str | None = None
    installed_at: datetime | None = None
    decommissioned_at: datetime | None = None
    # Streetlight
    nominal_wattage: float | None = None
    pole_number: str | None = None
    lamp_type: LampTypeName | None = None
    # Waste bin
    capacity_litres: int | None = None
    waste_kind: WasteKindName | None = None
    # Access point
    ssid: str | None = None
    band: BandName | None = None
    distance_m: Annotated[int, Meta(description="whole metres from `near` (nearest first)")] | None = None


class DeviceCreate(Struct, forbid_unknown_fields=True):
    kind: DeviceKindName
    endpoint: Annotated[str, Meta(min_length=1, max_length=128, description="LwM2M endpoint name, unique")]
    location: Location
    serial: str | None = None
    manufacturer: str | None = None
    model: str | None = None
    firmware_version: str | None = None
    district: str | None = None
    address: str | None = None
    installed_at: datetime | None = None
    status: Literal["provisioned", "maintenance"] | None = None
    tags: list[str] | None = None
    nominal_wattage: float | None = None
    pole_number: str | None = None
    lamp_type: LampTypeName | None = None
    capacity_litres: int | None = None
    waste_kind: WasteKindName | None = None
    ssid: str | None = None
    band: BandName | None = None


class DeviceUpdate(Struct, forbid_unknown_fields=True):
    """Fields to change; absent fields stay as they are, null clears an optional field."""

    serial: str | None | UnsetType = UNSET
    manufacturer: str | None | UnsetType = UNSET
    model: str | None | UnsetType = UNSET
    firmware_version: str | None | UnsetType = UNSET
    location: Location | UnsetType = UNSET
    district: str | None | UnsetType = UNSET
    address: str | None | UnsetType = UNSET
    installed_at: datetime | None | UnsetType = UNSET
    status: Literal["provisioned", "maintenance"] | UnsetType = UNSET
    tags: list[str] | UnsetType = UNSET
    nominal_wattage: float | None | UnsetType = UNSET
    pole_number: str | None | UnsetType = UNSET
    lamp_type: LampTypeName | None | UnsetType = UNSET
    capacity_litres: int | None | UnsetType = UNSET
    waste_kind: WasteKindName | None | UnsetType = UNSET
    ssid: str | None | UnsetType = UNSET
    band: BandName | None | UnsetType = UNSET


class DevicePage(Struct):
    items: list[Device]
    next_cursor: str | None


class ImportResult(Struct):
    created: int
    ids: list[UUID]


class ApiKey(Struct, omit_defaults=True):
    id: UUID
    name: str
    role: RoleName
    prefix: str
    created_at: datetime
    revoked_at: datetime | None
    last_used_at: datetime | None
    crew_id: Annotated[UUID | None, Meta(description="crew-role keys of a crew only")] = None


class ApiKeyCreate(Struct, forbid_unknown_fields=True):
    role: RoleName
    name: Annotated[str, Meta(max_length=200)] = ""
    crew_id: Annotated[UUID | None, Meta(description="crew-role keys only: the crew the key belongs to")] = None


class ApiKeyCreated(Struct):
    key: str
    api_key: ApiKey


class Tenant(Struct):
    id: UUID
    slug: str
    name: str
    timezone: str
    created_at: datetime
    firmware_approval_required: bool = False
    # false: devices must use DTLS; a plain-CoAP Register is refused with 4.03.
    allow_nosec_devices: bool = False
    security_modes: list[str] = msgspec.field(default_factory=lambda: ["psk", "rpk"])


class AuditEntry(Struct):
    id: int
    at: datetime
    api_key_id: UUID | None
    actor: str
    action: str
    entity_type: str
    entity_id: str | None
    before: Any
    after: Any
    request_id: str | None


class AuditPage(Struct):
    items: list[AuditEntry]
    next_cursor: str | None


def device_out(device: DeviceModel) -> Device:
    attributes = {k: v for k, v in device.attributes.items() if k in ALL_KIND_ATTRIBUTES}
    return Device(
        id=device.id, kind=device.kind.value, endpoint=device.endpoint,
        location=Location(device.location.lat, device.location.lon), status=device.status.value,
        tags=device.tags, created_at=device.created_at, updated_at=device.updated_at,
        serial=device.serial, manufacturer=device.manufacturer, model=device.model,
        firmware_version=device.firmware_version, district=device.district,
        address=device.address, installed_at=device.installed_at,
        decommissioned_at=device.decommissioned_at, distance_m=device.distance_m, **attributes)


def device_fields(data: DeviceCreate | DeviceUpdate) -> dict[str, Any]:
    """The fields a client actually sent, flattened the way the domain validates them."""
    fields = {k: v for k, v in msgspec.structs.asdict(data).items() if v is not UNSET}
    location = fields.pop("location", None)
    if location is not None:
        fields["lat"], fields["lon"] = location.lat, location.lon
    if isinstance(data, DeviceCreate):
        fields = {k: v for k, v in fields.items() if v is not None}
    return fields


def api_key_out(key: ApiKeyModel) -> ApiKey:
    return ApiKey(key.id, key.name, key.role.value, key.prefix, key.created_at, key.revoked_at,
                  key.last_used_at, key.crew_id)


# Device groups

class GroupNear(Struct, forbid_unknown_fields=True, omit_defaults=True):
    lat: Annotated[float, Meta(description="WGS84 latitude in degrees")]
    lon: Annotated[float, Meta(description="WGS84 longitude in degrees")]
    radius_m: Annotated[float | None, Meta(description="metres around the point (default 500, at most 50000)")] = None


class GroupFilter(Struct, forbid_unknown_fields=True, omit_defaults=True):
    """A saved device filter: every condition given must hold. It may not name another group."""

    kind: DeviceKindName | None = None
    status: DeviceStatusName | None = None
    district: str | None = None
    tag: str | None = None
    firmware: str | None = None
    bbox: Annotated[list[float] | None, Meta(description="[min_lon, min_lat, max_lon, max_lat]")] = None
    near: GroupNear | None = None


class Group(Struct):
    id: UUID
    name: str
    description: str
    # True when membership comes from `filter`; false for a group of static members.
    dynamic: bool
    filter: GroupFilter | None
    member_count: int
    created_at: datetime
    updated_at: datetime


class GroupCreate(Struct, forbid_unknown_fields=True):
    """A group is either static (`device_ids`, possibly none) or dynamic (`filter`), never both."""

    name: Annotated[str, Meta(min_length=1, max_length=200, description="unique in the city")]
    description: Annotated[str, Meta(max_length=2000)] = ""
    filter: GroupFilter | None = None
    device_ids: list[UUID] | None = None


class GroupUpdate(Struct, forbid_unknown_fields=True):
    """Fields to change. A filter replaces the saved filter whole; giving one to a static group
    drops its members. `filter: null` makes the group static (and empty)."""

    name: Annotated[str, Meta(min_length=1, max_length=200)] | UnsetType = UNSET
    description: Annotated[str, Meta(max_length=2000)] | UnsetType = UNSET
    filter: GroupFilter | None | UnsetType = UNSET


class GroupMembers(Struct, forbid_unknown_fields=True):
    device_ids: Annotated[list[UUID], Meta(min_length=1, max_length=10_000)]


class GroupPage(Struct):
    items: list[Group]
    next_cursor: str | None


def group_out(group: GroupModel) -> Group:
    saved = None if group.filter is None else msgspec.convert(filter_to_json(group.filter), GroupFilter)
    return Group(id=group.id, name=group.name, description=group.description, dynamic=group.is_dynamic,
                 filter=saved, member_count=group.member_count, created_at=group.created_at,
                 updated_at=group.updated_at)


def group_fields(data: GroupCreate | GroupUpdate) -> dict[str, Any]:
    """The fields a client actually sent, with the filter as the plain mapping the domain validates."""
    fields = {k: v for k, v in msgspec.structs.asdict(data).items() if v is not UNSET}
    if isinstance(fields.get("filter"), GroupFilter):
        fields["filter"] = msgspec.to_builtins(fields["filter"])
    if isinstance(data, GroupCreate):
        fields = {k: v for k, v in fields.items() if v is not None}
    return fields


class DeviceCredential(Struct):
    """A device's DTLS credential, without its key."""

    id: UUID
    device_id: UUID
    purpose: Annotated[str, Meta(description="operational (to register) or bootstrap (to ask /bs)")]
    mode: Annotated[str, Meta(description="psk or rpk")]
    identity: Annotated[str | None, Meta(description="psk: the PSK identity")]
    public_key: Annotated[str | None, Meta(description="rpk: the device's public key (PEM)")]
    state: Annotated[str, Meta(description="active, or pending (issued by the bootstrap server, active "
                                           "once the device registers with it)")]
    version: int
    created_at: datetime
    fingerprint: Annotated[str | None, Meta(description=(
        "rpk: SHA-256 of the public key's SubjectPublicKeyInfo DER, hex (sha256sum of the DER)"))] = None
    key_hex: Annotated[str | UnsetType, Meta(description=(
        "PUT only, when Fleet made the key up (no key_hex sent): the key, shown this once and never again"))] = UNSET
    server_uri: Annotated[str | UnsetType, Meta(description=(
        "PUT only: the coaps:// URI the device talks to (FLEET_COAPS_PUBLIC_URI, else this server's "
        "coaps host and port); absent when this server has no coaps listener"))] = UNSET
    server_public_key: Annotated[str | UnsetType, Meta(description=(
        "PUT of an rpk credential only: Fleet's own DTLS public key (PEM) the device should check "
        "(also GET /api/v1/security/server-key)"))] = UNSET


class ServerKey(Struct):
    """Fleet's DTLS public key for raw-public-key devices, the same on every node."""

    public_key: Annotated[str, Meta(description="SubjectPublicKeyInfo, PEM")]
    public_key_der_hex: Annotated[str, Meta(description=(
        "the same, DER, in hex: what a device's Security object resource 4 (/0/x/4) holds"))]
    fingerprint: Annotated[str, Meta(description=(
        "SHA-256 of the DER, in hex (as a device credential's fingerprint; sha256sum of the DER)"))]


class DeviceSecurity(Struct):
    device_id: UUID
    mode: Annotated[str, Meta(description=(
        "how the device registers: psk or rpk (its operational credential), nosec when it has none"))]
    credentials: list[DeviceCredential]


def credential_out(c, key_hex: str | None = None, *, server_uri: str | None = None,
                   server_public_key: str | None = None) -> DeviceCredential:
    return DeviceCredential(c.id, c.device_id, c.purpose, c.mode, c.identity, c.public_key_pem, c.state,
                            c.version, c.created_at,
                            fingerprint=fingerprint_of(c.public_key_pem) if c.public_key_pem else None,
                            key_hex=UNSET if key_hex is None else key_hex,
                            server_uri=UNSET if server_uri is None else server_uri,
                            server_public_key=UNSET if server_public_key is None else server_public_key)


def device_security_out(device_id: UUID, credentials: list) -> DeviceSecurity:
    operational = [c for c in credentials if c.purpose == "operational"]
    # The active credential says how the device registers today; a pending one only until then.
    current = next((c for c in operational if c.state == "active"), operational[0] if operational else None)
    return DeviceSecurity(device_id, current.mode if current else "nosec", [credential_out(c) for c in credentials])
