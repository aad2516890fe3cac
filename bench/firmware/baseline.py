"""The baseline: a bare aiocoap server serving the same package under Block2 with aiocoap's own
Resource machinery (its Block2 cache renders the whole package for block 0 and slices it for
the rest), at any path, so Fleet's clients fetch from it unchanged.

    python -m bench.firmware.baseline --port 5683 --size 131072 --seed 13
    python -m bench.firmware.baseline --port 5683 --size 131072 --image-version 2.0.0   (bench/firmware/campaign.py)
"""

from __future__ import annotations

import argparse
import asyncio
import sys

import aiocoap
import aiocoap.resource as resource
from aiocoap import Code, Message

from bench.coap.servers import serve_until_signalled


def package_bytes(size: int, seed: int) -> bytes:
    """The package both servers serve (the same bytes from the same seed)."""
    import random
    return random.Random(seed).randbytes(size)


class Package(resource.Resource):
    def __init__(self, content: bytes) -> None:
        super().__init__()
        self.content = content
        self.rendered = 0

    async def render_get(self, request: Message) -> Message:
        self.rendered += 1
        return Message(code=Code.CONTENT, payload=self.content, content_format=42)


async def serve(port: int, content: bytes) -> None:
    root = Package(content)
    context = await aiocoap.Context.create_server_context(root, bind=("::", port), transports=["udp6"])
    try:
        await serve_until_signalled(port, lambda: {"rendered": root.rendered})
    finally:
        await context.shutdown()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.firmware.baseline", description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--size", type=int, default=128 * 1024)
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--image-version", default=None,
                        help="serve simulators.firmware.build_image(VERSION, size) instead (what simulated devices accept)")
    args = parser.parse_args(argv)
    if args.image_version:
        from simulators.firmware import build_image
        content = build_image(args.image_version, args.size)
    else:
        content = package_bytes(args.size, args.seed)
    asyncio.run(serve(args.port, content))
    return 0


if __name__ == "__main__":
    sys.exit(main())
