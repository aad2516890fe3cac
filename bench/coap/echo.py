"""The cheapest possible CoAP responder, to show the load generator is not the bottleneck.

It answers every CON request with a piggybacked ACK: 2.01 with Location-Path rd/x for a
request whose first Uri-Path is ``rd``, 2.04 for anything else; no parsing beyond that.

    python -m bench.coap.echo --processes 2 --port 5684 [load options...]
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from bench.coap.loadgen import add_load_arguments, load_options, print_result
from bench.coap.servers import reuseport_socket, run_with_servers, serve_until_signalled
from protocols.coap import message

_CREATED_OPTIONS = message.encode_options(message.path_options(message.LOCATION_PATH, "rd/x"))


class EchoProtocol(asyncio.DatagramProtocol):
    def __init__(self):
        self.served = 0

    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        try:
            mtype, code, mid, token = message.decode_header(data)
        except message.MessageFormatError:
            return
        if mtype != message.CON:
            return
        if code == message.EMPTY:
            self.transport.sendto(message.empty(message.RST, mid), addr)
            return
        self.served += 1
        option = 4 + len(token)
        if len(data) > option + 2 and data[option] == 0xB2 and data[option + 1 : option + 3] == b"rd":
            reply = message.encode_with_options(message.ACK, message.CREATED, mid, token, _CREATED_OPTIONS)
        else:
            reply = message.encode_with_options(message.ACK, message.CHANGED, mid, token, b"")
        self.transport.sendto(reply, addr)


async def serve(host: str, port: int, receive_buffer: int) -> None:
    sock = reuseport_socket(host, port, receive_buffer)
    transport, protocol = await asyncio.get_running_loop().create_datagram_endpoint(
        EchoProtocol, sock=sock
    )
    try:
        await serve_until_signalled(port, lambda: {"served": protocol.served})
    finally:
        transport.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.coap.echo", description=__doc__.split("\n")[0])
    parser.add_argument("--serve", action="store_true", help="be one server process (internal)")
    parser.add_argument("--server-processes", type=int, default=1)
    parser.add_argument("--host", default="::1")
    parser.add_argument("--port", type=int, default=5684)
    parser.add_argument("--rcvbuf", type=int, default=4 << 20)
    parser.add_argument("--server-uvloop", action="store_true")
    parser.add_argument("--json", action="store_true")
    add_load_arguments(parser)
    args = parser.parse_args(argv)
    if args.serve:
        if args.server_uvloop:
            import uvloop

            uvloop.run(serve(args.host, args.port, args.rcvbuf))
        else:
            asyncio.run(serve(args.host, args.port, args.rcvbuf))
        return 0
    server_argv = ["-m", "bench.coap.echo", "--serve", "--host", args.host,
                   "--port", str(args.port), "--rcvbuf", str(args.rcvbuf)]
    if args.server_uvloop:
        server_argv.append("--server-uvloop")
    target = (args.host, args.port)
    result = run_with_servers(server_argv, args.server_processes, target, load_options(args))
    print_result(result, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
