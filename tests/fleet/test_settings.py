"""FLEET_* variables as load_settings reads them."""

import pytest

from fleet.access.limits import Rate
from fleet.errors import SettingsError
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


@pytest.mark.parametrize(("raw", "seconds"), [(None, 30.0), ("4.5", 4.5), ("0.5", None), ("soon", None)])
def test_node_timeout_default_override_and_nonsense(monkeypatch, raw, seconds):
    if raw is None:
        monkeypatch.delenv("FLEET_NODE_TIMEOUT_S", raising=False)
    else:
        monkeypatch.setenv("FLEET_NODE_TIMEOUT_S", raw)
    if seconds is None:
        with pytest.raises(ValueError, match="FLEET_NODE_TIMEOUT_S"):
            load_settings()
    else:
        assert load_settings().coap.node_timeout_s == seconds


def test_rate_limits_defaults_and_overrides(monkeypatch):
    for name in ("RATE_KEY_PER_S", "RATE_ADDRESS_BURST", "COAP_PEER_PER_S", "AUTH_FAILURES_BURST"):
        monkeypatch.delenv(f"FLEET_{name}", raising=False)
    settings = load_settings()
    assert (settings.http.limits.key_per_s, settings.http.limits.address_burst) == (100.0, 1000)
    assert (settings.coap.peer_rate.per_s, settings.coap.peer_rate.burst) == (50.0, 200)
    monkeypatch.setenv("FLEET_RATE_KEY_PER_S", "2.5")
    monkeypatch.setenv("FLEET_COAP_PEER_PER_S", "0")
    monkeypatch.setenv("FLEET_AUTH_FAILURES_BURST", "5")
    settings = load_settings()
    assert settings.http.limits.key_per_s == 2.5 and settings.http.limits.auth_failures_burst == 5
    assert not settings.coap.peer_rate.enabled


@pytest.mark.parametrize("raw", ["-1", "fast", "nan"])
def test_rate_limits_refuse_nonsense(monkeypatch, raw):
    monkeypatch.setenv("FLEET_RATE_ADDRESS_PER_S", raw)
    with pytest.raises(ValueError, match="FLEET_RATE_ADDRESS_PER_S"):
        load_settings()


def test_a_rate_needs_a_burst(monkeypatch):
    monkeypatch.setenv("FLEET_COAP_PEER_BURST", "0")
    with pytest.raises(ValueError, match="FLEET_COAP_PEER_BURST"):
        load_settings()
    monkeypatch.setenv("FLEET_COAP_PEER_PER_S", "0")
    assert not load_settings().coap.peer_rate.enabled


def test_the_coap_limit_per_address_is_off_unless_set(monkeypatch):
    monkeypatch.delenv("FLEET_COAP_ADDRESS_PER_S", raising=False)
    assert not load_settings().coap.address_rate.enabled
    monkeypatch.setenv("FLEET_COAP_ADDRESS_PER_S", "500")
    monkeypatch.setenv("FLEET_COAP_ADDRESS_BURST", "2000")
    assert load_settings().coap.address_rate == Rate(500.0, 2000)


def test_the_routing_service_is_unset_by_default_and_must_be_http(monkeypatch):
    monkeypatch.delenv("FLEET_ROUTING_URL", raising=False)
    assert load_settings().routing_url is None
    monkeypatch.setenv("FLEET_ROUTING_URL", "http://osrm.internal:5000")
    assert load_settings().routing_url == "http://osrm.internal:5000"
    monkeypatch.setenv("FLEET_ROUTING_URL", "osrm.internal")
    with pytest.raises(ValueError, match="FLEET_ROUTING_URL"):
        load_settings()


def test_metrics_are_served_on_loopback_9464_unless_set(monkeypatch):
    for name in ("METRICS_HOST", "METRICS_PORT"):
        monkeypatch.delenv(f"FLEET_{name}", raising=False)
    assert (load_settings().metrics.host, load_settings().metrics.port) == ("127.0.0.1", 9464)
    monkeypatch.setenv("FLEET_METRICS_HOST", "0.0.0.0")
    monkeypatch.setenv("FLEET_METRICS_PORT", "0")
    assert (load_settings().metrics.host, load_settings().metrics.port) == ("0.0.0.0", 0)
    monkeypatch.setenv("FLEET_METRICS_PORT", "70000")
    with pytest.raises(ValueError, match="FLEET_METRICS_PORT"):
        load_settings()


@pytest.mark.parametrize(("variables", "named"), [
    ({"FLEET_DB_POOL_MAX": "0"}, "FLEET_DB_POOL_MAX"),
    ({"FLEET_DB_POOL_MIN": "-1"}, "FLEET_DB_POOL_MIN"),
    ({"FLEET_DB_POOL_MIN": "30", "FLEET_DB_SYSTEM_POOL_MAX": "20"}, "FLEET_DB_SYSTEM_POOL_MAX"),
    ({"FLEET_MAX_BODY_BYTES": "0"}, "FLEET_MAX_BODY_BYTES"),
])
def test_pool_sizes_the_pools_cannot_have_are_refused_by_name(monkeypatch, variables, named):
    for name in ("FLEET_DB_POOL_MIN", "FLEET_DB_POOL_MAX", "FLEET_DB_SYSTEM_POOL_MAX", "FLEET_MAX_BODY_BYTES"):
        monkeypatch.delenv(name, raising=False)
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError, match=f"^{named} must be"):
        load_settings()


def test_coaps_listens_on_5684_unless_set_and_its_public_uri_must_be_coaps(monkeypatch):
    monkeypatch.delenv("FLEET_COAPS_PORT", raising=False)
    monkeypatch.delenv("FLEET_COAPS_PUBLIC_URI", raising=False)
    assert (load_settings().coap.coaps_port, load_settings().coap.coaps_public_uri) == (5684, None)
    monkeypatch.setenv("FLEET_COAPS_PORT", "0")  # off
    assert load_settings().coap.coaps_port == 0
    monkeypatch.setenv("FLEET_COAPS_PUBLIC_URI", "coap://lwm2m.city.example")
    with pytest.raises(SettingsError, match="FLEET_COAPS_PUBLIC_URI"):
        load_settings()


def test_one_source_takes_a_fifth_of_the_handshake_rates_unless_set(monkeypatch):
    monkeypatch.delenv("FLEET_COAPS_SOURCE_SHARE", raising=False)
    assert load_settings().coap.coaps_source_share == 0.2
    monkeypatch.setenv("FLEET_COAPS_SOURCE_SHARE", "1")  # off: devices behind one carrier NAT
    assert load_settings().coap.coaps_source_share == 1.0
    for bad in ("0", "1.5"):
        monkeypatch.setenv("FLEET_COAPS_SOURCE_SHARE", bad)
        with pytest.raises(SettingsError, match="^FLEET_COAPS_SOURCE_SHARE must be"):
            load_settings()


def test_registration_followups_are_shared_by_the_coap_workers(monkeypatch):
    monkeypatch.delenv("FLEET_REGISTRATION_FOLLOWUPS", raising=False)
    monkeypatch.delenv("FLEET_COAP_WORKERS", raising=False)
    assert load_settings().coap.followups_per_worker == 500.0
    monkeypatch.setenv("FLEET_REGISTRATION_FOLLOWUPS", "600")
    monkeypatch.setenv("FLEET_COAP_WORKERS", "4")
    assert load_settings().coap.followups_per_worker == 150.0
    monkeypatch.setenv("FLEET_COAP_WORKERS", "0")  # a node without device edge: nothing to share
    assert load_settings().coap.followups_per_worker == 600.0
    monkeypatch.setenv("FLEET_COAP_WORKERS", "-1")
    with pytest.raises(ValueError, match="FLEET_COAP_WORKERS"):
        load_settings()
