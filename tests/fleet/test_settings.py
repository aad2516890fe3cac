"""FLEET_* variables as load_settings reads them."""

import pytest

from fleet.settings import load_settings


def test_commands_in_flight_default_and_override(monkeypatch):
    monkeypatch.delenv("FLEET_COAP_IN_FLIGHT", raising=False)
    assert load_settings().coap.in_flight == 1024
    monkeypatch.setenv("FLEET_COAP_IN_FLIGHT", "64")
    assert load_settings().coap.in_flight == 64


@pytest.mark.parametrize("raw", ["0", "-5", "many"])
def test_commands_in_flight_refuses_nonsense(monkeypatch, raw):
    monkeypatch.setenv("FLEET_COAP_IN_FLIGHT", raw)
    with pytest.raises(ValueError, match="FLEET_COAP_IN_FLIGHT"):
        load_settings()
