"""The device side of what the server asks: Read, Write, Execute, Discover and Observe.

Requests arrive on the device's own socket (see client.py) and are answered piggybacked for
CON, or with a NON for NON. Observations notify on change with confirmable notifications, at
most one outstanding (RFC 7641 §4.5), so a server that forgot an observation answers RST and
ends it, and one that stopped answering altogether is dropped after the retransmissions.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import structlog

from fleet.objectmodel import ResourcePath
from protocols.coap import message as coap
from simulators import firmware_transfer
from simulators.objects import (BadRequest, MethodNotAllowed, NotFound, RequestError, decode_write,
                                encode)

if TYPE_CHECKING:
    from simulators.client import LwM2MClient

log = structlog.get_logger("simulators.serving")

# What a device understands; an unknown critical (odd-numbered) option gets 4.02 (§5.4.1).
UNDERSTOOD_OPTIONS = frozenset({coap.URI_HOST, coap.OBSERVE, coap.URI_PORT, coap.LOCATION_PATH,
                                coap.URI_PATH, coap.CONTENT_FORMAT, coap.MAX_AGE, coap.URI_QUERY,
                                coap.ACCEPT, coap.LOCATION_QUERY, coap.BLOCK2, coap.BLOCK1, coap.SIZE2,
                                coap.SIZE1, coap.NO_RESPONSE})

MAX_BLOCK_SIZE = 1024
LINK_FORMAT = 40
FIRST_SEQUENCE = 2  # Observe value of the registration's response; notifications count on


class BadOption(RequestError):
    code = coap.BAD_OPTION


class Observation:
    __slots__ = ("client", "token", "path", "accept", "sequence", "payload", "mid", "datagram",
                 "unacknowledged", "retransmits", "timeout", "due")

    def __init__(self, client: LwM2MClient, token: bytes, path: ResourcePath, accept: int | None,
                 payload: bytes) -> None:
        self.client = client
        self.token = token
        self.path = path
        self.accept = accept
        self.sequence = FIRST_SEQUENCE
        self.payload = payload
        self.mid = -1
        self.datagram = b""
        self.unacknowledged = False
        self.retransmits = 0
        self.timeout = 0.0
        self.due = 0.0


def serve(client: LwM2MClient, request: coap.Message) -> None:
    """Answer one request from the server (a retransmitted CON gets the same answer again)."""
    if request.mtype == coap.CON and client.recent is not None and request.mid in client.recent:
        client.transport.sendto(client.recent[request.mid])
        return
    stats = client.network.stats
    stats.server_requests += 1
    options: list[tuple[int, bytes]] = []
    try:
        code, payload = _handle(client, request, options)
    except RequestError as exc:
        stats.server_errors_answered += 1
        code, payload, options = exc.code, exc.diagnostic.encode()[:120], []
    except Exception:  # noqa: BLE001 - a bug in a simulated device answers 5.00, like a device would
        log.exception("simulated device failed a request", endpoint=client.device.endpoint)
        code, payload, options = coap.INTERNAL_SERVER_ERROR, b"", []
    if request.mtype == coap.CON:
        reply = coap.encode(coap.ACK, code, request.mid, request.token, options, payload)
        client.remember(request.mid, reply)
    else:
        reply = coap.encode(coap.NON, code, client.next_mid(), request.token, options, payload)
    client.transport.sendto(reply)


def _handle(client: LwM2MClient, request: coap.Message, options: list) -> tuple[int, bytes]:
    for number, _value in request.options:
        if number & 1 and number not in UNDERSTOOD_OPTIONS:
            raise BadOption(f"critical option {number} is not supported")
    if client.on_bootstrap_server:
        return _bootstrap(client, request, options)
    path = _request_path(request)
    device, tree = client.device, client.device.tree
    device.advance()
    code = request.code
    if code == coap.GET:
        accept = request.uint_option(coap.ACCEPT)
        if accept == LINK_FORMAT:
            options.append((coap.CONTENT_FORMAT, coap.uint(LINK_FORMAT)))
            return coap.CONTENT, tree.discover(path)
        observe = request.uint_option(coap.OBSERVE)
        fmt, payload = encode(tree.readings(device, path), path, accept)
        if observe == 0 and (client.observes_firmware or path.object != firmware_transfer.PACKAGE.object):
            if client.observations is None:
                client.observations = {}
            client.observations[request.token] = Observation(client, request.token, path, accept, payload)
            options.append((coap.OBSERVE, coap.uint(FIRST_SEQUENCE)))
        elif observe == 1 and client.observations:
            client.observations.pop(request.token, None)
        options.append((coap.CONTENT_FORMAT, coap.uint(fmt)))
        return coap.CONTENT, _block(request, payload, options)
    if code in (coap.PUT, coap.POST) and request.option(coap.BLOCK1) is not None:
        answered = firmware_transfer.receive_block(client, path, request, options)
        if answered is not None:
            return answered
    if code in (coap.PUT, coap.POST) and path.depth >= 2:
        if code == coap.PUT and not request.payload and request.option(coap.URI_QUERY) is not None:
            return coap.CHANGED, b""  # Write-Attributes: accepted; notifications follow changes
        if code == coap.POST and path.depth == 3:
            tree.execute(device, path, request.payload)
            return coap.CHANGED, b""
        values = decode_write(request.uint_option(coap.CONTENT_FORMAT), request.payload, path,
                              datetime.now(UTC))
        device.on_written(tree.write(device, path, values))
        return coap.CHANGED, b""
    raise MethodNotAllowed(f"{coap.code_text(code)} is not supported on {path}")


def _bootstrap(client: LwM2MClient, request: coap.Message, options: list) -> tuple[int, bytes]:
    """What a bootstrap server may ask (LwM2M 1.1 §5.2.7): Discover, Delete and Write of the
    accounts (objects 0 and 1), and Finish; nothing else."""
    segments = [value for number, value in request.options if number == coap.URI_PATH]
    accounts, code = client.accounts, request.code
    if code == coap.POST and segments == [b"bs"]:
        accounts.finish()  # 4.06 when what was written is unusable
        # After the answer has gone: the client then leaves this link for its new server.
        client.network.scheduler.after(0.0, _finished, client)
        return coap.CHANGED, b""
    path = _request_path(request) if segments else None
    if code == coap.DELETE:
        accounts.delete(path)
        return coap.DELETED, b""
    if code == coap.PUT and path is not None:
        accounts.write(path, decode_write(request.uint_option(coap.CONTENT_FORMAT), request.payload, path,
                                          datetime.now(UTC)))
        return coap.CHANGED, b""
    if code == coap.GET and request.uint_option(coap.ACCEPT) == LINK_FORMAT:
        options.append((coap.CONTENT_FORMAT, coap.uint(LINK_FORMAT)))
        return coap.CONTENT, accounts.discover(path)
    raise MethodNotAllowed(f"{coap.code_text(code)} is not a bootstrap operation")


def _finished(client: LwM2MClient) -> None:
    client.bootstrapped()


def _request_path(request: coap.Message) -> ResourcePath:
    segments = [value for number, value in request.options if number == coap.URI_PATH]
    if not segments:
        raise NotFound("the root holds no resource")
    try:
        return ResourcePath.parse("/" + "/".join(s.decode("ascii") for s in segments))
    except (ValueError, UnicodeDecodeError):
        raise NotFound("not an LwM2M path") from None


def _block(request: coap.Message, payload: bytes, options: list) -> bytes:
    """Block2 (RFC 7959): the block asked for, or the first when the whole would not fit."""
    block = coap.block_option(request.option(coap.BLOCK2))
    if block is None and len(payload) <= MAX_BLOCK_SIZE:
        return payload
    number, _more, size = block if block is not None else (0, False, MAX_BLOCK_SIZE)
    size = min(size, MAX_BLOCK_SIZE)
    start = number * size
    if start >= len(payload) and payload:
        raise BadRequest("block beyond the end of the representation")
    options.append((coap.BLOCK2, coap.block_value(number, start + size < len(payload), size)))
    if number == 0:
        options.append((coap.SIZE2, coap.uint(len(payload))))
    return payload[start:start + size]


def notify_observers(client: LwM2MClient) -> None:
    """Send a notification to each observation whose value changed since the last one."""
    if not client.observations or client.silent or client.transport is None:
        return
    device = client.device
    for token, observation in list(client.observations.items()):
        try:
            fmt, payload = encode(device.tree.readings(device, observation.path),
                                  observation.path, observation.accept)
        except RequestError:
            del client.observations[token]
            continue
        if payload == observation.payload:
            continue
        observation.payload = payload
        observation.sequence = (observation.sequence + 1) & 0xFFFFFF
        observation.mid = client.next_mid()
        observation.datagram = coap.encode(
            coap.CON, coap.CONTENT, observation.mid, token,
            [(coap.OBSERVE, coap.uint(observation.sequence)), (coap.CONTENT_FORMAT, coap.uint(fmt))],
            payload)
        client.transport.sendto(observation.datagram)
        client.network.stats.notifications += 1
        if not observation.unacknowledged:
            # A notification still unacknowledged keeps its retransmission clock; this newer
            # one simply replaces it (RFC 7641 §4.5.2).
            observation.unacknowledged = True
            observation.retransmits = 0
            timing = client.network.timing
            observation.timeout = timing.ack_timeout_s * device.noise.uniform(1.0, timing.ack_random_factor)
            observation.due = time.monotonic() + observation.timeout
            client.network.scheduler.at(observation.due, _notification_timer, observation)


def acknowledged(client: LwM2MClient, mid: int) -> None:
    for observation in (client.observations or {}).values():
        if observation.mid == mid:
            observation.unacknowledged = False


def reset(client: LwM2MClient, mid: int) -> None:
    """An RST to a notification: the server no longer wants it."""
    for token, observation in list((client.observations or {}).items()):
        if observation.mid == mid:
            del client.observations[token]


def _notification_timer(observation: Observation) -> None:
    client = observation.client
    observations = client.observations
    if (not observation.unacknowledged or observations is None or client.silent
            or observations.get(observation.token) is not observation):
        return
    if observation.retransmits >= client.network.timing.max_retransmit:
        del observations[observation.token]  # the observer is gone (RFC 7641 §4.5)
        return
    observation.retransmits += 1
    observation.timeout *= 2
    client.network.stats.retransmissions += 1
    if client.transport is not None:
        client.transport.sendto(observation.datagram)
    observation.due = time.monotonic() + observation.timeout
    client.network.scheduler.at(observation.due, _notification_timer, observation)
