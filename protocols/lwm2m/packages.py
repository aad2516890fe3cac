"""GET /fw/<token>: firmware packages served block-wise (RFC 7959 Block2) from Fleet's listener.

Two ways in, one answer: the transport's fast path (`fast_download`) serves a block straight
from the node's caches, or once they have looked the token or chunk up; aiocoap's full path
(`render_download`) answers everything the fast path declines (NON requests, other options,
other methods, BERT).
The device chooses the block size (SZX 0-6, 16-1024 bytes) and may start at any block, so a
broken download resumes where it stopped; the ETag (the first 8 bytes of the package's SHA-256)
lets it notice that the package behind the URI changed.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable

from aiocoap import CONTENT, Code, Message, error
from aiocoap.optiontypes import BlockOption

from fleet.firmware.delivery import DEFAULT_BLOCK_SIZE, Downloads
from fleet.firmware.models import Block
from protocols.coap import message

DOWNLOAD_SEGMENT = "fw"
_DOWNLOAD_SEGMENT = DOWNLOAD_SEGMENT.encode()
_OPAQUE = message.uint(message.OPAQUE)
_MAX_TOKEN_TEXT = 128


def is_download(path: tuple[str, ...]) -> bool:
    return len(path) >= 1 and path[0] == DOWNLOAD_SEGMENT


def _answer_options(block: Block, explicit: bool, size2_asked: bool) -> list[tuple[int, bytes]]:
    package = block.package
    options = [(message.ETAG, package.etag), (message.CONTENT_FORMAT, _OPAQUE)]
    if explicit or block.more:
        options.append((message.BLOCK2, message.block_value(block.number, block.more, block.size)))
    if block.number == 0 or size2_asked:
        options.append((message.SIZE2, message.uint(package.size)))
    return options


def fast_download(downloads: Downloads, path: tuple[bytes, ...], block2: bytes | None,
                  size2_asked: bool) -> tuple[bytes, memoryview] | Callable[[], asyncio.Future] | None:
    """(encoded options, payload) of a 2.05 answered from memory; when the token or the chunk
    is not in memory, a callable that looks them up and gives a future of the same (or of the
    FleetError to answer with); None declines."""
    if len(path) != 2 or path[0] != _DOWNLOAD_SEGMENT or len(path[1]) > _MAX_TOKEN_TEXT:
        return None
    if block2 is None:
        number, size, explicit = 0, DEFAULT_BLOCK_SIZE, False
    else:
        if len(block2) > 3 or (block2 and block2[-1] & 0x07 == 7):
            return None  # over three bytes, or BERT: render_download says why
        raw = int.from_bytes(block2, "big")
        number, size, explicit = raw >> 4, 16 << (raw & 0x07), True
    try:
        token = path[1].decode()
    except UnicodeDecodeError:
        return None
    block = downloads.block_now(token, number, size)
    if block is None:
        return functools.partial(_look_up, downloads, token, number, size, explicit, size2_asked)
    return message.encode_options(_answer_options(block, explicit, size2_asked)), block.payload


def _look_up(downloads: Downloads, token: str, number: int, size: int, explicit: bool,
             size2_asked: bool) -> asyncio.Future:
    async def answer() -> tuple[bytes, memoryview]:
        block = await downloads.block(token, number, size)
        return message.encode_options(_answer_options(block, explicit, size2_asked)), block.payload
    return asyncio.ensure_future(answer())


async def render_download(downloads: Downloads, request: Message) -> Message:
    """The full path's answer; FleetErrors (4.04 unknown token, 4.00 beyond the end) go to the
    one CoAP error mapper."""
    path = request.opt.uri_path
    if len(path) != 2 or not path[1]:
        raise error.NotFound("a package is downloaded from /fw/<token>")
    if request.code != Code.GET:
        raise error.MethodNotAllowed(f"{request.code} not allowed here: packages are read with GET")
    if request.opt.accept not in (None, message.OPAQUE):
        raise error.NotAcceptable("a package is served as application/octet-stream (42) only")
    asked = request.opt.block2
    if asked is None:
        number, size, explicit = 0, DEFAULT_BLOCK_SIZE, False
    elif asked.size_exponent == 7:
        raise error.BadOption("block size exponent 7 (BERT) is for CoAP over TCP only")
    else:
        number, size, explicit = asked.block_number, asked.size, True
    block = await downloads.block(path[1], number, size)
    response = Message(code=CONTENT, payload=bytes(block.payload), content_format=message.OPAQUE,
                       etag=block.package.etag)
    if explicit or block.more:
        response.opt.block2 = BlockOption.BlockwiseTuple(block.number, block.more, (block.size.bit_length() - 5))
    if block.number == 0 or request.opt.size2 is not None:
        response.opt.size2 = block.package.size
    return response
