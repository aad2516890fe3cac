"""What protocols.coap.dtls and protocols.coap.secure rely on in DTLSSocket (tinydtls) and aiocoap:
a new release must be looked at, not picked up."""

from __future__ import annotations

import inspect
import tomllib
from importlib import metadata
from pathlib import Path

from aiocoap.messagemanager import MessageManager
from aiocoap.tokenmanager import TokenManager
from aiocoap.transports import udp6

from protocols.coap.dtls import tinydtls

PINNED = "0.2.3"


def test_installed_dtlssocket_is_the_pinned_one_and_bundles_the_tinydtls_we_read():
    assert metadata.version("DTLSSocket") == PINNED
    assert tinydtls._tinydtls().dtls_package_version() == tinydtls.TINYDTLS_VERSION


def test_pyproject_pins_exactly_that_version():
    pyproject = tomllib.loads((Path(__file__).resolve().parents[3] / "pyproject.toml").read_text())
    assert f"DTLSSocket=={PINNED}" in pyproject["project"]["dependencies"]


def test_aiocoap_internals_the_coaps_listener_builds_on():
    def parameters(function) -> list[str]:
        return list(inspect.signature(function).parameters)

    assert parameters(udp6.MessageInterfaceUDP6.__init__) == ["self", "ctx", "log", "loop"]
    assert parameters(TokenManager.__init__) == ["self", "context"]
    assert parameters(MessageManager.__init__) == ["self", "token_manager"]
    assert "_remote_being_sent_to" in inspect.getsource(udp6.MessageInterfaceUDP6.__init__)
    assert "self.transport.sendmsg" in inspect.getsource(udp6.MessageInterfaceUDP6.send)
