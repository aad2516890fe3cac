"""Responses nobody waits for any more (a cancelled observation's notifications): a Reset, one DEBUG line.

aiocoap answers a confirmable one with a Reset but logs two INFO lines for it (the token
manager's "could not be matched", the message manager's "sending RST"), and ignores a
non-confirmable one, so a device that keeps notifying after a cancel fills the log and is never
told. RFC 7641 §3.6 lets the client reject either kind with a Reset, which ends the observation
on the device.
"""

from __future__ import annotations

import structlog
from aiocoap import Message
from aiocoap.numbers.codes import Code
from aiocoap.numbers.types import Type

log = structlog.get_logger("fleet.coap")


def reset_unclaimed_responses(manager) -> None:
    """Wrap an aiocoap MessageManager's dispatch so unclaimed responses are reset before it logs."""
    dispatch = manager.dispatch_message

    def dispatch_message(message: Message) -> None:
        if message.code.is_response() and message.mtype in (Type.CON, Type.NON):
            waiting = manager.token_manager.outgoing_requests
            if waiting is not None and (message.token, message.remote) not in waiting \
                    and (message.token, None) not in waiting:
                log.debug("response for no request: reset", token=message.token.hex(),
                          peer=str(message.remote.hostinfo))
                reset = Message(mtype=Type.RST, mid=message.mid, code=Code.EMPTY)
                reset.remote = message.remote.as_response_address()
                manager.message_interface.send(reset)
                return
        dispatch(message)

    manager.dispatch_message = dispatch_message


def forget_request(manager, token: bytes, remote) -> None:
    """Stop waiting for responses on a token (an observation given up on): the next one is reset
    at once, where aiocoap would acknowledge one more before it lets go."""
    waiting = manager.token_manager.outgoing_requests
    if waiting is not None:
        waiting.pop((token, remote), None)
