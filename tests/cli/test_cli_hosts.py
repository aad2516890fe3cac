"""`fleet serve --host` moves HTTP and CoAP together; `--coap-host` moves CoAP on its own."""

from __future__ import annotations

import pytest

from api.cli import _parser, serve_settings
from fleet.settings import load_settings


@pytest.mark.parametrize(("argv", "http_host", "coap_host"), [
    (["serve"], "127.0.0.1", "::"),
    (["serve", "--host", "10.1.2.3"], "10.1.2.3", "10.1.2.3"),
    (["serve", "--host", "10.1.2.3", "--coap-host", "::"], "10.1.2.3", "::"),
    (["serve", "--coap-host", "192.0.2.7"], "127.0.0.1", "192.0.2.7"),
    (["demo", "--host", "0.0.0.0"], "0.0.0.0", "0.0.0.0"),
    (["doctor", "--host", "10.1.2.3"], "10.1.2.3", "10.1.2.3"),
])
def test_hosts(monkeypatch, argv, http_host, coap_host):
    monkeypatch.delenv("FLEET_HTTP_HOST", raising=False)
    monkeypatch.delenv("FLEET_COAP_HOST", raising=False)
    settings = serve_settings(_parser().parse_args([*argv, "--coap-port", "5690"]), load_settings())
    assert (settings.http.host, settings.coap.host, settings.coap.port) == (http_host, coap_host, 5690)


@pytest.mark.parametrize("command", ["serve", "demo"])
def test_coaps_port(monkeypatch, command):
    monkeypatch.delenv("FLEET_COAPS_PORT", raising=False)
    settings = load_settings()
    assert serve_settings(_parser().parse_args([command]), settings).coap.coaps_port == 5684
    assert serve_settings(_parser().parse_args([command, "--coaps-port", "5999"]), settings).coap.coaps_port == 5999
    assert serve_settings(_parser().parse_args([command, "--coaps-port", "0"]), settings).coap.coaps_port == 0


def test_metrics_port(monkeypatch):
    monkeypatch.delenv("FLEET_METRICS_PORT", raising=False)
    settings = load_settings()
    assert serve_settings(_parser().parse_args(["serve"]), settings).metrics.port == 9464
    assert serve_settings(_parser().parse_args(["serve", "--metrics-port", "0"]), settings).metrics.port == 0


@pytest.mark.parametrize("argv", [["demo", "--metrics-port", "70000"], ["serve", "--http-port", "70000"],
                                  ["coap", "--coap-port", "-1"], ["doctor", "--coap-port", "x"]])
def test_a_port_out_of_range_is_one_line(capsys, argv):
    # 70000 would reach the sockets as 4464 (70000 mod 65536) for some calls and fail others.
    with pytest.raises(SystemExit) as exited:
        _parser().parse_args(argv)
    assert exited.value.code == 2
    assert "must be a port number, 0 to 65535" in capsys.readouterr().err
