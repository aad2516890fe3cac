"""Which content format each device is asked to answer reads and observations in.

SenML CBOR is optional in LwM2M 1.1, so a conformant device may answer 4.06 to it. A device is
asked first in the format its reads last succeeded in (remembered here and in the database, so
every node and restart knows it), then in the formats it announced at registration (`ct=` on
its root link, TS §6.2.1), then in Fleet's own order of preference.
"""

from __future__ import annotations

from collections import OrderedDict
from uuid import UUID

import structlog

from fleet.objectmodel import ResourcePath
from fleet.registrations.models import ReadFormatHints, Registration
from fleet.registrations.service import RegistrationService
from protocols.lwm2m import content, linkformat
from protocols.lwm2m.errors import CodecError

log = structlog.get_logger("fleet.lwm2m.negotiation")

# Fleet's order when nothing better is known: compact first, plain text last (one resource only).
PREFERENCE = (content.SENML_CBOR, content.SENML_JSON, content.LWM2M_TLV, content.TEXT_PLAIN)
# Formats Fleet decodes, and so may ask for.
READABLE = frozenset((*PREFERENCE, content.LWM2M_CBOR, content.OPAQUE))
MAX_DEVICES = 200_000  # devices remembered in memory, a few dozen bytes each


def announced_formats(object_links: str | None) -> tuple[int, ...]:
    """The readable formats a registration's root link announces with ct=, in its order."""
    if not object_links:
        return ()
    try:
        formats = linkformat.content_formats(linkformat.parse(object_links))
    except CodecError:
        return ()
    return tuple(f for f in dict.fromkeys(formats) if f in READABLE)


def candidates(hints: ReadFormatHints, path: ResourcePath) -> list[int]:
    """The formats to ask in, best first; plain text and opaque only for a single resource."""
    order = [f for f in (hints.learned, *announced_formats(hints.object_links), *PREFERENCE)
             if f is not None and f in READABLE]
    if not path.is_resource_level:
        order = [f for f in order if f not in (content.TEXT_PLAIN, content.OPAQUE)]
    return list(dict.fromkeys(order))


class ContentFormats:
    """Per-device hints in memory, loaded from and written through to the database."""

    def __init__(self, registrations: RegistrationService, capacity: int = MAX_DEVICES) -> None:
        self.registrations = registrations
        self.capacity = capacity
        self._hints: OrderedDict[UUID, ReadFormatHints] = OrderedDict()
        registrations.on_read_format_hints = self._remember  # a Register's own, committed

    def registered(self, registration: Registration) -> None:
        """A Register or Update: its links may announce other formats than before."""
        previous = self._hints.get(registration.device_id)
        if previous is not None:  # otherwise loaded, links and all, on first use
            self._remember(registration.device_id, ReadFormatHints(previous.learned, registration.object_links))

    async def to_try(self, device_id: UUID, path: ResourcePath) -> list[int]:
        hints = self._hints.get(device_id)
        if hints is None:
            hints = await self.registrations.read_format_hints(device_id)
            self._remember(device_id, hints)
        else:
            self._hints.move_to_end(device_id)
        return candidates(hints, path)

    async def worked(self, device_id: UUID, content_format: int) -> None:
        hints = self._hints.get(device_id, ReadFormatHints())
        if hints.learned == content_format or content_format in (content.TEXT_PLAIN, content.OPAQUE):
            return  # text and opaque say nothing about how the device answers for many resources
        self._remember(device_id, ReadFormatHints(content_format, hints.object_links))
        try:
            await self.registrations.record_read_content_format(device_id, content_format)
        except Exception:  # noqa: BLE001 - the read succeeded; other nodes learn it again themselves
            log.debug("remembering a read content format failed", device=str(device_id), exc_info=True)
            return
        log.debug("read content format learned", device=str(device_id), content_format=content_format)

    def _remember(self, device_id: UUID, hints: ReadFormatHints) -> None:
        self._hints[device_id] = hints
        self._hints.move_to_end(device_id)
        while len(self._hints) > self.capacity:
            self._hints.popitem(last=False)
