"""/api/v1/firmware/keys and /images: the city's release keys and the signed images they verify."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated
from urllib.parse import quote
from uuid import UUID

from litestar import Controller, Request, Response, Router, delete, get, post
from litestar.connection import ASGIConnection
from litestar.datastructures import ResponseHeader, UploadFile
from litestar.enums import RequestEncodingType
from litestar.exceptions.http_exceptions import RequestEntityTooLarge
from litestar.handlers import BaseRouteHandler
from litestar.params import Body, Parameter
from litestar.response import Stream
from msgspec import Meta, Struct

from api.openapi import FirmwareDownloadOperation
from api.problems import problem, problems
from fleet.access.models import Permission, Principal
from fleet.firmware.models import Image, ImageUpload, KeyCreate, ReleaseKey, comma_list, too_large
from fleet.firmware.service import FirmwareService
from fleet.firmware.signatures import signature_from_base64
from fleet.registry.service import require

# What a multipart form carries beside the image: boundaries, part headers, version, lists,
# signature and up to 20,000 characters of notes (4 bytes each at most in UTF-8).
FORM_ALLOWANCE = 128 * 1024
Q = Annotated[str | None, Parameter(required=False)]
Limit = Annotated[int, Parameter(ge=1, le=1000)]


class FirmwareKey(Struct):
    id: UUID
    name: str
    fingerprint: Annotated[str, Meta(description="SHA-256 (hex) of the raw 32-byte public key")]
    public_key: str
    created_at: datetime
    revoked_at: Annotated[datetime | None, Meta(description="since then it verifies nothing new")]


class FirmwareImage(Struct):
    id: UUID
    version: str
    models: Annotated[list[str], Meta(description="compatible models (/3/0/1); empty: any")]
    manufacturers: Annotated[list[str], Meta(description="compatible manufacturers (/3/0/0); empty: any")]
    notes: str
    filename: str | None
    size: Annotated[int, Meta(description="bytes")]
    sha256: Annotated[str, Meta(description="hex")]
    key_id: Annotated[UUID, Meta(description="the release key whose signature verified it")]
    created_at: datetime
    campaigns: Annotated[int, Meta(description="campaigns that use it: while any does, it cannot be deleted")]


class FirmwareImagePage(Struct):
    items: list[FirmwareImage]
    next_cursor: str | None


class ImageForm(Struct, forbid_unknown_fields=True, kw_only=True):
    """The multipart form of an upload."""

    file: Annotated[UploadFile, Meta(description="the image, as devices will receive it")]
    version: Annotated[str, Meta(min_length=1, max_length=100, description="what devices report in /3/0/3")]
    signature: Annotated[str, Meta(min_length=1, max_length=200, description=(
        "base64 Ed25519 signature of the file's bytes by a live release key (`fleet firmware sign`)"))]
    models: Annotated[str, Meta(max_length=10000, description="compatible models, comma-separated; empty: any")] = ""
    manufacturers: Annotated[str, Meta(max_length=10000,
                                       description="compatible manufacturers, comma-separated; empty: any")] = ""
    notes: Annotated[str, Meta(max_length=20000, description="release notes")] = ""


def key_out(key: ReleaseKey) -> FirmwareKey:
    return FirmwareKey(key.id, key.name, key.fingerprint, key.public_key, key.created_at, key.revoked_at)


def image_out(image: Image) -> FirmwareImage:
    return FirmwareImage(image.id, image.version, list(image.models), list(image.manufacturers), image.notes,
                         image.filename, image.size, image.sha256, image.key_id, image.created_at, image.campaigns)


def content_disposition(filename: str) -> str:
    """`attachment` with an ASCII name for every client and the exact one (RFC 6266) for those that read it."""
    plain = "".join(c if c.isascii() and c.isprintable() and c not in '"\\' else "_" for c in filename)
    return f"attachment; filename=\"{plain}\"; filename*=UTF-8''{quote(filename, safe='')}"


def may_upload(connection: ASGIConnection, _handler: BaseRouteHandler) -> None:
    """Guards run before the form is read: a caller who may not upload is refused without
    Fleet first reading up to 64 MiB. The service checks again."""
    require(connection.scope["state"]["principal"], Permission.MANAGE_FIRMWARE)


class FirmwareKeyController(Controller):
    path = "/api/v1/firmware/keys"
    tags = ["firmware"]

    @post("/", summary="Register a release key: an Ed25519 public key in PEM (admins)",
          description="Uploads must carry a signature one of the city's live keys verifies. "
                      "`fleet firmware keygen` makes a key pair and prints the public PEM.",
          responses=problems(403, 409, 422))
    async def register(self, data: KeyCreate, principal: Principal,
                       firmware_service: FirmwareService) -> FirmwareKey:
        return key_out(await firmware_service.register_key(principal, data))

    @get("/", summary="The city's release keys, newest first, revoked ones included", responses=problems(403))
    async def list_keys(self, principal: Principal, firmware_service: FirmwareService) -> list[FirmwareKey]:
        return [key_out(k) for k in await firmware_service.keys(principal)]

    @delete("/{key_id:uuid}", summary="Revoke a release key (admins): it verifies nothing from now on",
            description="Images it verified keep naming it, but cannot start a campaign any more.",
            responses=problems(403))
    async def revoke(self, key_id: UUID, principal: Principal, firmware_service: FirmwareService) -> None:
        await firmware_service.revoke_key(principal, key_id)


class FirmwareImageController(Controller):
    path = "/api/v1/firmware/images"
    tags = ["firmware"]

    @post("/", summary="Upload a signed firmware image (admins; multipart form)",
          description="422 when the signature does not verify with any live release key of the city; "
                      "413 above the size limit (FLEET_FIRMWARE_MAX_BYTES, 64 MiB by default).",
          responses=problems(403, 413, 422), guards=[may_upload])
    async def upload(self, data: Annotated[ImageForm, Body(media_type=RequestEncodingType.MULTI_PART)],
                     principal: Principal, firmware_service: FirmwareService) -> FirmwareImage:
        try:
            # The form spooled the file (to disk beyond 1 MiB); this is the one copy of it in memory.
            content = await data.file.read()
        finally:
            await data.file.close()
        upload = ImageUpload(content=content, version=data.version, models=comma_list(data.models),
                             manufacturers=comma_list(data.manufacturers),
                             signature=signature_from_base64(data.signature), notes=data.notes,
                             filename=data.file.filename)
        return image_out(await firmware_service.upload(principal, upload))

    @get("/", summary="The city's firmware images, newest first", responses=problems(403, 422))
    async def list_images(self, principal: Principal, firmware_service: FirmwareService,
                          cursor: Q = None, limit: Limit = 100) -> FirmwareImagePage:
        page = await firmware_service.images(principal, cursor=cursor, limit=limit)
        return FirmwareImagePage([image_out(i) for i in page.items], page.next_cursor)

    @get("/{image_id:uuid}", summary="One firmware image (without its bytes)", responses=problems(403))
    async def get_image(self, image_id: UUID, principal: Principal,
                        firmware_service: FirmwareService) -> FirmwareImage:
        return image_out(await firmware_service.image(principal, image_id))

    @get("/{image_id:uuid}/content", summary="The image's bytes as stored (admins); ETag is its SHA-256",
         media_type="application/octet-stream", responses=problems(403),
         operation_class=FirmwareDownloadOperation, response_description="the image's bytes",
         response_headers=[ResponseHeader(name="ETag", description="the SHA-256 (hex), quoted",
                                          documentation_only=True),
                           ResponseHeader(name="Content-Disposition", description="attachment, with the file name",
                                          documentation_only=True)])
    async def download(self, image_id: UUID, principal: Principal, firmware_service: FirmwareService) -> Stream:
        image, chunks = await firmware_service.download(principal, image_id)
        return Stream(chunks, media_type="application/octet-stream", headers={
            "Content-Length": str(image.size), "ETag": f'"{image.sha256}"',
            "Content-Disposition": content_disposition(image.filename or f"firmware-{image.version}.bin")})

    @delete("/{image_id:uuid}", summary="Delete an image no campaign uses (admins)", responses=problems(403, 409))
    async def delete_image(self, image_id: UUID, principal: Principal, firmware_service: FirmwareService) -> None:
        await firmware_service.delete(principal, image_id)


def firmware_routes(max_image_bytes: int) -> list[Controller | Router]:
    """The keys, and the images with a body limit of their own: an image of up to `max_image_bytes`
    and its form pass, where every other route takes FLEET_MAX_BODY_BYTES."""

    def refuse(request: Request, _exc: RequestEntityTooLarge) -> Response:
        return problem(request, 413, "Payload Too Large", too_large(max_image_bytes))

    def not_text(request: Request, _exc: UnicodeDecodeError) -> Response:
        # Litestar decodes the form's text fields itself and lets this escape.
        return problem(request, 400, "Bad Request", "a text field of the form is not UTF-8")

    images = Router(path="/", route_handlers=[FirmwareImageController],
                    request_max_body_size=max_image_bytes + FORM_ALLOWANCE,
                    exception_handlers={RequestEntityTooLarge: refuse, UnicodeDecodeError: not_text})
    return [FirmwareKeyController, images]
