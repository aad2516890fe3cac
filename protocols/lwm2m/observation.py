"""One observation a device holds for us (RFC 7641): its notifications followed, and its end."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import aiocoap
import structlog

from fleet.objectmodel import ResourcePath
from protocols.lwm2m import content
from protocols.lwm2m.errors import CodecError

if TYPE_CHECKING:
    from protocols.lwm2m.downlink import DeviceAddress, DeviceClient

log = structlog.get_logger("fleet.lwm2m.downlink")

# How long a cancel waits for the device to answer its deregistration: a few retransmissions.
DEREGISTER_WAIT_S = 20.0


class Observation:
    def __init__(self, client: DeviceClient, address: DeviceAddress, path: ResourcePath, accept: int,
                 pending, response: aiocoap.Message, on_readings) -> None:
        self.client = client
        self.address = address
        self.path = path
        self.accept = accept  # the content format the notifications were asked in
        self.pending = pending  # aiocoap's request, whose .observation yields the notifications
        self.response = response  # the first answer; its token is the observation's
        self.on_readings = on_readings
        self.ending = False

    @property
    def token(self) -> bytes:
        return self.response.token

    async def follow(self) -> None:
        """Hand each notification's readings to `on_readings` until the observation ends."""
        uri = self.address.uri(self.path)
        try:
            async for notification in self.pending.observation:
                if self.ending:
                    continue  # the deregistration's answer, or a notification crossing it
                try:
                    readings = content.decode(notification.opt.content_format, bytes(notification.payload),
                                              self.path, datetime.now(UTC))
                except CodecError as exc:
                    log.warning("undecodable notification", uri=uri, error=str(exc))
                    continue
                await self.on_readings(readings)
        except aiocoap.error.Error as exc:
            # DEBUG, not INFO, either way: a device that goes away ends each of its observations
            # at once (a line per device as a simulator or a district's network stops), and
            # what matters of it, the device going offline, is reported once by the registry.
            log.debug("observation ended", uri=uri, reason=type(exc).__name__, on_the_device=self.ending)

    def abandon(self, follower: asyncio.Task | None) -> None:
        """End it here only: the registration it belonged to is gone, so there is no one to ask.
        The token is let go, so the device's next notification is answered with a Reset."""
        self.ending = True
        if follower is not None:
            follower.cancel()
        if not self.pending.observation.cancelled:
            self.pending.observation.cancel()
        self.client.forget(self.response)

    async def cancel(self, follower: asyncio.Task | None) -> bool:
        """End the observation here and on the device (RFC 7641 §3.6): a GET with Observe=1 and
        the observation's token. True if the device answered it; if not, its next notification
        finds no observation here and is answered with a Reset."""
        self.ending = True
        failed = asyncio.get_running_loop().create_future()

        def on_failure() -> None:
            if not failed.done():
                failed.set_result(None)

        answered = False
        if follower is not None and not follower.done() and self.client.deregister(
                self.address, self.path, self.accept, self.token, on_failure):
            # The device's answer is final (no Observe option): it ends aiocoap's observation
            # and with it the follower.
            done, _ = await asyncio.wait({follower, failed}, timeout=DEREGISTER_WAIT_S,
                                         return_when=asyncio.FIRST_COMPLETED)
            answered = follower in done
        if follower is not None:
            follower.cancel()
        if not self.pending.observation.cancelled:
            self.pending.observation.cancel()
        if not answered:
            self.client.forget(self.response)
        return answered
