"""The same-run ceiling for ingest: bare aiocoap answering Send and Register with no work at all.

Fleet's ingest rate is only meaningful next to what aiocoap itself manages on the same machine
in the same minute, so every ingest benchmark runs this first. ``POST /dp`` gets 2.04 and
``POST /rd`` gets 2.01 with Location-Path rd/x (and ``DELETE /rd/x`` 2.02); N server processes share one port through
SO_REUSEPORT, which aiocoap's ``udp6`` transport sets on its server socket.

    python -m bench.ingest.baseline --processes 2 --port 5683 --clients 200 --duration 10 \\
        --load-processes 2 [--register] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import socket
import sys

from bench.coap.loadgen import add_load_arguments, load_options, loopback_target, print_result
from bench.coap.results import LoadResult
from bench.coap.servers import run_with_servers, serve_until_signalled

DEFAULT_RECEIVE_BUFFER = 4 << 20  # the default 208 KiB drops datagrams under bursts


def _site():
    # aiocoap is imported here so the load-generating parent never pays for it.
    import aiocoap
    from aiocoap import resource

    class Counted(resource.Resource):
        # A fresh response per request: aiocoap writes the message id, token and remote into
        # the Message it is handed, so a shared one gets mutated (and logs a warning each time).
        def __init__(self, code, **options):
            super().__init__()
            self.code = code
            self.options = options
            self.served = 0

        async def render_post(self, request):
            self.served += 1
            return aiocoap.Message(code=self.code, **self.options)

    class Registration(resource.Resource):
        async def render_delete(self, request):
            return aiocoap.Message(code=aiocoap.DELETED)

    send = Counted(aiocoap.CHANGED)
    register = Counted(aiocoap.CREATED, location_path=("rd", "x"))
    site = resource.Site()
    site.add_resource(["dp"], send)
    site.add_resource(["rd"], register)
    site.add_resource(["rd", "x"], Registration())
    return site, send, register


def _server_sockets(context) -> list[socket.socket]:
    """The UDP sockets under an aiocoap context (udp6 and simplesocketserver alike)."""
    sockets = []
    for interface in context.request_interfaces:
        message_interface = getattr(getattr(interface, "token_interface", None), "message_interface", None)
        transport = getattr(message_interface, "transport", None)
        sock = transport.get_extra_info("socket") if transport is not None else None
        if sock is not None:
            sockets.append(sock)
    return sockets


def _duplicate_cache_size(context) -> int:
    # aiocoap keeps every incoming message id (and its response) for EXCHANGE_LIFETIME, 247 s.
    return sum(
        len(getattr(getattr(i, "token_interface", None), "_recent_messages", ()))
        for i in context.request_interfaces
    )


async def serve(bind: str, port: int, transport: str, receive_buffer: int) -> None:
    import aiocoap

    site, send, register = _site()
    extra, bind_port = {}, port
    if transport == "tinydtls_server":
        from bench.ingest.security import server_credentials

        # Each peer's session ends with a warning at shutdown; the figures are what matter here.
        logging.getLogger("coap-server").setLevel(logging.ERROR)
        # aiocoap's DTLS server refuses the any-address and listens one port above the one given.
        bind, bind_port, extra = ("127.0.0.1" if bind in ("::", "0.0.0.0") else bind), port - 1, {
            "server_credentials": server_credentials()}
    context = await aiocoap.Context.create_server_context(
        site, bind=(bind, bind_port), transports=[transport], **extra
    )
    sockets = _server_sockets(context)
    for sock in sockets:
        if receive_buffer:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    reuseport = all(s.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) for s in sockets)
    try:
        await serve_until_signalled(port, lambda: {
            "served_send": send.served,
            "served_register": register.served,
            "duplicate_cache": _duplicate_cache_size(context),
            "so_reuseport": bool(sockets) and reuseport,
            "rcvbuf": sockets[0].getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) if sockets else None,
        })
    finally:
        await context.shutdown()


def run_baseline(
    port: int = 5683,
    processes: int = 1,
    loadgen_kwargs: dict | None = None,
    *,
    host: str = "127.0.0.1",
    bind: str = "::",
    transport: str = "udp6",
    receive_buffer: int = DEFAULT_RECEIVE_BUFFER,
) -> LoadResult:
    """Start ``processes`` bare aiocoap servers on ``port``, wait until they answer, run
    :func:`bench.coap.loadgen.run_load` against ``host`` with ``loadgen_kwargs``, stop them.

    The result's ``servers`` holds each server process's STATS: requests served, CPU seconds,
    RSS, the size of aiocoap's duplicate-detection cache, and whether SO_REUSEPORT was set.
    """
    target = loopback_target((host, port))
    argv = server_argv(port, bind=bind, transport=transport, receive_buffer=receive_buffer)
    return run_with_servers(argv, processes, target, dict(loadgen_kwargs or {}))


def server_argv(port: int, *, bind: str = "::", transport: str = "udp6",
                receive_buffer: int = DEFAULT_RECEIVE_BUFFER) -> list[str]:
    """The command line (after the interpreter) of one baseline server process."""
    return ["-m", "bench.ingest.baseline", "--serve", "--bind", bind, "--port", str(port),
            "--transport", transport, "--rcvbuf", str(receive_buffer)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.ingest.baseline", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--processes", type=int, default=1, dest="server_processes",
                        help="aiocoap server processes")
    parser.add_argument("--port", type=int, default=5683)
    parser.add_argument("--host", default="127.0.0.1", help="address the load is sent to")
    parser.add_argument("--bind", default="::", help="address the servers bind")
    parser.add_argument("--transport", default="udp6", help="aiocoap server transport")
    parser.add_argument("--rcvbuf", type=int, default=DEFAULT_RECEIVE_BUFFER,
                        help="server SO_RCVBUF in bytes; 0 keeps the system default")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--serve", action="store_true", help="be one server process (internal)")
    add_load_arguments(parser, processes_option="--load-processes")
    args = parser.parse_args(argv)
    if args.serve:
        logging.basicConfig(level=logging.WARNING)
        asyncio.run(serve(args.bind, args.port, args.transport, args.rcvbuf))
        return 0
    result = run_baseline(
        args.port, args.server_processes, load_options(args), host=args.host, bind=args.bind,
        transport=args.transport, receive_buffer=args.rcvbuf,
    )
    print_result(result, args.json)
    return 0 if result.acked else 1


if __name__ == "__main__":
    sys.exit(main())
