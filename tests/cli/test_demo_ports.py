"""`fleet demo` checks its ports before anything else, and says in one line which flag moves them."""

from __future__ import annotations

import socket

from api.cli import main
from api.commands import taken_ports
from fleet.settings import load_settings
from tests.conftest import free_port


def test_a_taken_port_stops_the_demo_before_it_starts(monkeypatch, capsys, tmp_path):
    # No database is reached: were one started, it would be here (and FLEET_DATABASE_URL unused).
    monkeypatch.setenv("FLEET_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("FLEET_DATABASE_URL", raising=False)
    monkeypatch.delenv("FLEET_HTTP_HOST", raising=False)
    monkeypatch.delenv("FLEET_COAP_HOST", raising=False)
    with socket.socket() as http, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as coap:
        http.bind(("127.0.0.1", 0))
        http.listen()
        coap.bind(("127.0.0.1", 0))
        taken_http, taken_coap = http.getsockname()[1], coap.getsockname()[1]
        free_coap = free_port(socket.SOCK_DGRAM)

        assert main(["demo", "--http-port", str(taken_http), "--coap-port", str(free_coap)]) == 2
        out, err = capsys.readouterr()
        assert out == "" and err == (f"fleet demo: the HTTP port {taken_http} (TCP on 127.0.0.1) is in use; "
                                     "choose another with --http-port\n")

        assert main(["demo", "--http-port", str(free_port()), "--coap-port", str(taken_coap)]) == 2
        out, err = capsys.readouterr()
        assert out == "" and err == (f"fleet demo: the CoAP port {taken_coap} (UDP on ::) is in use; "
                                     "choose another with --coap-port\n")

        # Both taken (a second demo beside the first): both named at once, one try moves them.
        assert main(["demo", "--http-port", str(taken_http), "--coap-port", str(taken_coap)]) == 2
        out, err = capsys.readouterr()
        assert out == "" and [line.split(";")[1] for line in err.splitlines()] == [
            " choose another with --http-port", " choose another with --coap-port"]
    assert list(tmp_path.iterdir()) == []


def test_the_demo_needs_both_kinds_of_worker(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("FLEET_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("FLEET_DATABASE_URL", raising=False)
    assert main(["demo", "--coap-workers", "0"]) == 2
    assert capsys.readouterr().err == "fleet demo: it needs both sides: --coap-workers and --http-workers at least 1\n"
    assert list(tmp_path.iterdir()) == []


def test_a_taken_http_port_stops_serve_before_it_starts(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("FLEET_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("FLEET_DATABASE_URL", raising=False)
    monkeypatch.delenv("FLEET_HTTP_HOST", raising=False)
    with socket.socket() as http:
        http.bind(("127.0.0.1", 0))
        http.listen()
        taken = http.getsockname()[1]
        assert main(["serve", "--http-port", str(taken), "--metrics-port", "0"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err == (f"fleet serve: the HTTP port {taken} (TCP on 127.0.0.1) is in use; "
                                 "choose another with --http-port\n")
    assert list(tmp_path.iterdir()) == []


def test_a_node_without_http_workers_leaves_the_http_port_alone(monkeypatch):
    # A device-only node (`fleet serve --http-workers 0`) beside an API-only one on one machine.
    monkeypatch.delenv("FLEET_HTTP_HOST", raising=False)
    with socket.socket() as http:
        http.bind(("127.0.0.1", 0))
        http.listen()
        monkeypatch.setenv("FLEET_HTTP_PORT", str(http.getsockname()[1]))
        monkeypatch.setenv("FLEET_METRICS_PORT", "0")
        settings = load_settings()
        assert taken_ports(settings, "serve", http=False) == []
        assert len(taken_ports(settings, "serve")) == 1
