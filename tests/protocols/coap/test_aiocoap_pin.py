"""aiocoap is pinned to the version whose internals protocols/coap/transport.py and
notifications.py patch and fastpath.py / outbound.py reach into: this fails the moment an upgrade changes any of them.

When it fails after an upgrade, read the new aiocoap's versions of the functions below, port
the patches in transport.py, then update the pin in pyproject.toml and the fingerprints here.
"""

from __future__ import annotations

import ast
import hashlib
import inspect
import tomllib
from importlib import metadata
from pathlib import Path

import aiocoap
import aiocoap.meta
import pytest
from aiocoap import messagemanager, resource, tokenmanager
from aiocoap.message import Message
from aiocoap.numbers.constants import TransportTuning
from aiocoap.transports import udp6
from aiocoap.util import socknumbers
from aiocoap.util.asyncio import recvmsg

from protocols.coap import transport

PINNED = "0.4.17"

# The functions transport.py replaces with modified copies or wraps, by the fingerprint of their
# syntax tree (comments and line numbers do not count, code and docstrings do).
PATCHED = {
    (udp6, "MessageInterfaceUDP6", "datagram_msg_received"): "c8c1984f9aa72f86",
    (udp6, "MessageInterfaceUDP6", "datagram_errqueue_received"): "c84d953f05893c56",
    (recvmsg, "RecvmsgSelectorDatagramTransport", "_read_ready"): "7a68f58a2cbc806b",
    (messagemanager, "MessageManager", "__init__"): "d500e1f1c61a761e",
    (messagemanager, "MessageManager", "_continue_backlog"): "6df55939139faf0e",
    (messagemanager, "MessageManager", "send_message"): "4f22352b2a60b27f",
    (messagemanager, "MessageManager", "_next_message_id"): "d1519586f173b265",
    (messagemanager, "MessageManager", "_send_initially"): "1d8e9da8b88893b4",
    # notifications.py wraps dispatch_message and reads the token manager's pending requests.
    (messagemanager, "MessageManager", "dispatch_message"): "b45fbee72ae3a2d1",
    (tokenmanager, "TokenManager", "process_response"): "ee8e03893bee41fd",
}


def _fingerprint(module, class_name: str, function_name: str) -> str | None:
    for node in ast.walk(ast.parse(inspect.getsource(module))):
        if isinstance(node, ast.ClassDef) and node.name == class_name:
            for function in node.body:
                if isinstance(function, ast.FunctionDef) and function.name == function_name:
                    return hashlib.sha256(ast.dump(function).encode()).hexdigest()[:16]
    return None


def test_installed_aiocoap_is_the_pinned_one():
    assert metadata.version("aiocoap") == PINNED
    assert aiocoap.meta.version == PINNED


def test_pyproject_pins_exactly_that_version():
    pyproject = tomllib.loads((Path(__file__).resolve().parents[3] / "pyproject.toml").read_text())
    assert f"aiocoap=={PINNED}" in pyproject["project"]["dependencies"]


@pytest.mark.parametrize(("module", "class_name", "function_name"), PATCHED,
                         ids=[f"{c}.{f}" for _, c, f in PATCHED])
def test_patched_functions_are_unchanged(module, class_name, function_name):
    expected = PATCHED[(module, class_name, function_name)]
    assert _fingerprint(module, class_name, function_name) == expected, (
        f"aiocoap changed {class_name}.{function_name}: port the patch in protocols/coap/transport.py")


def test_signatures_the_patches_and_fast_paths_rely_on():
    def parameters(function) -> list[str]:
        return list(inspect.signature(function).parameters)

    assert parameters(transport._original_manager_init) == ["self", "token_manager"]
    assert parameters(transport._original_continue_backlog) == ["self", "remote"]
    assert parameters(transport._original_send_message) == ["self", "message", "messageerror_monitor"]
    assert parameters(transport._original_next_message_id) == ["self"]
    assert parameters(messagemanager.MessageManager._send_initially) == ["self", "message", "messageerror_monitor"]
    assert parameters(transport._original_errqueue_received) == ["self", "data", "ancdata", "flags", "address"]
    assert parameters(udp6.UDP6EndpointAddress.__init__) == ["self", "sockaddr", "interface", "pktinfo"]
    assert parameters(udp6.SockExtendedErr.load) == ["data"]
    assert "transport_tuning" in inspect.signature(Message.__init__).parameters
    for name in ("ACK_TIMEOUT", "ACK_RANDOM_FACTOR", "MAX_RETRANSMIT", "MAX_TRANSMIT_WAIT",
                 "EXCHANGE_LIFETIME", "EMPTY_ACK_DELAY", "MAX_LATENCY"):
        assert isinstance(getattr(TransportTuning(), name), int | float), name
    assert {"HAS_RECVERR", "MSG_ERRQUEUE", "IPV6_RECVERR"} <= set(vars(socknumbers))


async def test_private_attributes_of_a_running_context():
    transport.install()
    context = await aiocoap.Context.create_server_context(resource.Site(), bind=("::1", 0),
                                                         transports=["udp6"])
    try:
        interface = transport.udp_interface(context)
        assert isinstance(interface, udp6.MessageInterfaceUDP6)
        assert interface._shutting_down is None
        assert interface.transport.sendmsg
        manager = interface._ctx
        assert isinstance(manager, messagemanager.MessageManager)
        assert isinstance(manager._active_exchanges, transport._ExchangesByRemote)
        assert manager._backlogs == {}
        assert manager.message_interface is interface
        assert len(manager.token_manager.next_token()) <= 8
        assert manager.token_manager.context is context
        # notifications.py: responses are matched by (token, remote) keys in this dict.
        assert manager.token_manager.outgoing_requests == {}
        assert list(inspect.signature(manager.dispatch_message).parameters) == ["message"]
        assert context.serversite is not None
        reader = interface.transport
        assert isinstance(reader, recvmsg.RecvmsgSelectorDatagramTransport)
        assert reader._RecvmsgSelectorDatagramTransport__sock is not None
        assert reader.max_size > 0 and reader._protocol is interface
        assert transport.udp_sockets(context)
    finally:
        await context.shutdown()
