"""Simulated firmware: images that say their own version, and a device's object 5 (Firmware
Update) state machine, without any I/O.

An image is a pseudo-random body followed by a trailer: the version (UTF-8), the SHA-256 of the
body, the version's length and a magic. A device checks it as the bytes arrive (memory flat in
the image's size) and learns the version it will run; no trailer means Update Result 6, a body
that does not match its SHA-256 Update Result 5. Bench and end-to-end tests build images with
`build_image`; the states and codes are OMA object 5's (LwM2M 1.1 §E.6).
"""

from __future__ import annotations

import hashlib
import struct
from urllib.parse import unquote, urlsplit

from simulators.objects import MethodNotAllowed

MAGIC = b"FLEETFW1"
_TAIL = struct.Struct("!32sB8s")  # SHA-256 of the body, length of the version, magic
MAX_VERSION_BYTES = 255  # PkgVersion (/5/0/7) is 0..255 bytes
MAX_TRAILER = MAX_VERSION_BYTES + _TAIL.size

# /5/0/3 State
IDLE, DOWNLOADING, DOWNLOADED, UPDATING = 0, 1, 2, 3
# /5/0/5 Update Result
(INITIAL, UPDATED, NO_STORAGE, NO_MEMORY, CONNECTION_LOST, INTEGRITY, UNSUPPORTED_PACKAGE,
 INVALID_URI, UPDATE_FAILED, UNSUPPORTED_PROTOCOL) = range(10)
# /5/0/9 Firmware Update Delivery Method
PULL, PUSH, BOTH = 0, 1, 2
# /5/0/8 Firmware Update Protocol Support: CoAP with block-wise transfer, and CoAPS (over the
# device's own DTLS session with its server)
COAP, COAPS = 0, 1
# How an install ends (the fault kinds choose): the new version, the old one after a failed
# install (8), or the old one after the bootloader reverted what it believed was a success.
INSTALLED, INSTALL_FAILED, ROLLED_BACK = "installed", "install_failed", "rolled_back"


def build_image(version: str, size: int) -> bytes:
    """A firmware image of exactly `size` bytes that declares `version`; the same arguments
    always give the same bytes."""
    encoded = version.encode()
    if not encoded or len(encoded) > MAX_VERSION_BYTES:
        raise ValueError(f"a version takes 1..{MAX_VERSION_BYTES} bytes of UTF-8")
    body_size = size - len(encoded) - _TAIL.size
    if body_size < 0:
        raise ValueError(f"an image of version {version!r} needs at least"
                         f" {size - body_size} bytes")
    body = hashlib.shake_256(b"fleet simulated firmware " + encoded).digest(body_size)
    return body + encoded + _TAIL.pack(hashlib.sha256(body).digest(), len(encoded), MAGIC)


class PackageRejected(Exception):
    """The received package cannot be installed; `result` is its /5/0/5 code."""

    def __init__(self, result: int, reason: str) -> None:
        super().__init__(reason)
        self.result = result


class ImageReader:
    """Checks an image as its bytes arrive: everything but a trailer-sized tail goes into the
    hash at once, so a download holds a few hundred bytes whatever the image's size."""

    __slots__ = ("hasher", "tail", "size")

    def __init__(self) -> None:
        self.hasher = hashlib.sha256()
        self.tail = b""
        self.size = 0

    def feed(self, data: bytes) -> None:
        self.size += len(data)
        tail = self.tail + data
        if len(tail) > MAX_TRAILER:
            cut = len(tail) - MAX_TRAILER
            self.hasher.update(tail[:cut])
            tail = tail[cut:]
        self.tail = tail

    def finish(self) -> str:
        """The image's version; PackageRejected when it has no trailer or fails its check."""
        tail = self.tail
        if len(tail) < _TAIL.size:
            raise PackageRejected(UNSUPPORTED_PACKAGE, "too short for a firmware trailer")
        digest, length, magic = _TAIL.unpack(tail[-_TAIL.size:])
        if magic != MAGIC or length == 0 or len(tail) < _TAIL.size + length:
            raise PackageRejected(UNSUPPORTED_PACKAGE, "no firmware trailer")
        version_at = len(tail) - _TAIL.size - length
        try:
            version = tail[version_at:len(tail) - _TAIL.size].decode()
        except UnicodeDecodeError:
            raise PackageRejected(UNSUPPORTED_PACKAGE, "the trailer's version is not UTF-8") from None
        hasher = self.hasher.copy()
        hasher.update(tail[:version_at])
        if hasher.digest() != digest:
            raise PackageRejected(INTEGRITY, "the body does not match its SHA-256")
        return version


def image_version(image: bytes) -> str:
    """The version a whole image declares (PackageRejected as ImageReader.finish)."""
    reader = ImageReader()
    reader.feed(image)
    return reader.finish()


class PackageUri:
    """Where a Package URI (/5/0/1) points: host, port and the request's path and query."""

    __slots__ = ("host", "port", "path", "query", "secure")

    def __init__(self, host: str, port: int, path: tuple[str, ...], query: tuple[str, ...],
                 secure: bool = False) -> None:
        self.host, self.port, self.path, self.query = host, port, path, query
        self.secure = secure  # coaps: only over the device's own DTLS session with its server


def parse_package_uri(uri: str) -> PackageUri:
    """A coap:// URI taken apart; PackageRejected 7 when it is not a URI with a host,
    9 when its scheme is not one the device speaks (/5/0/8: CoAP and CoAPS)."""
    try:
        parts = urlsplit(uri)
        port = parts.port
    except ValueError:
        raise PackageRejected(INVALID_URI, "not a URI") from None
    if not parts.scheme or not parts.netloc:
        raise PackageRejected(INVALID_URI, "not an absolute URI")
    if parts.scheme.lower() not in ("coap", "coaps"):
        raise PackageRejected(UNSUPPORTED_PROTOCOL, f"{parts.scheme} is not supported")
    if not parts.hostname:
        raise PackageRejected(INVALID_URI, "the URI names no host")
    path = tuple(unquote(s) for s in parts.path.split("/") if s)
    query = tuple(unquote(s) for s in parts.query.split("&") if s)
    secure = parts.scheme.lower() == "coaps"
    return PackageUri(parts.hostname, port or (5684 if secure else 5683), path, query, secure)


class FirmwareUpdate:
    """One device's object 5: State, Update Result, the package's name and version, and the
    version it runs once an update went through. `generation` changes whenever a transfer
    starts or the machine resets, so work scheduled for an older one can tell it is stale."""

    __slots__ = ("state", "result", "uri", "pkg_name", "pkg_version", "running", "staged",
                 "reader", "generation", "transfer")

    def __init__(self) -> None:
        self.state = IDLE
        self.result = INITIAL
        self.uri = ""
        self.pkg_name = ""
        self.pkg_version = ""
        self.running: str | None = None  # None: the version the device left the factory with
        self.staged: str | None = None  # the downloaded image's version
        self.reader: ImageReader | None = None
        self.generation = 0
        self.transfer: object = None  # the wire's business (simulators.firmware_transfer)

    def _refuse_while_updating(self) -> None:
        if self.state == UPDATING:
            raise MethodNotAllowed("the device is installing firmware")

    def reset(self) -> None:
        """An empty Package URI or Package: back to Idle, result 0, the image discarded."""
        self._refuse_while_updating()
        self.state, self.result, self.uri = IDLE, INITIAL, ""
        self.staged = self.reader = None
        self.generation += 1

    def pull(self, uri: str) -> PackageUri | None:
        """A Package URI was written: where to download from, or None (reset, or a URI the
        device cannot use: Idle with result 7 or 9)."""
        if not uri:
            self.reset()
            return None
        self._refuse_while_updating()
        self.uri = uri
        try:
            target = parse_package_uri(uri)
        except PackageRejected as rejected:
            self.fail(rejected.result)
            return None
        self.begin()
        return target

    def begin(self) -> None:
        """A transfer starts (a download, or the first block of a pushed package)."""
        self._refuse_while_updating()
        self.state, self.result = DOWNLOADING, INITIAL
        self.staged = None
        self.reader = ImageReader()
        self.generation += 1

    def feed(self, data: bytes) -> None:
        self.reader.feed(data)

    @property
    def received(self) -> int:
        return self.reader.size if self.reader is not None else 0

    def complete(self) -> bool:
        """All bytes are in: Downloaded, or Idle with 5 or 6. True when it can be installed."""
        try:
            version = self.reader.finish()
        except PackageRejected as rejected:
            self.fail(rejected.result)
            return False
        self.reader = None
        self.state, self.staged, self.pkg_version = DOWNLOADED, version, version
        return True

    def fail(self, result: int) -> None:
        """A transfer ended without a usable package: Idle, with why in Update Result."""
        self.state, self.result = IDLE, result
        self.staged = self.reader = None
        self.generation += 1

    def update(self) -> None:
        """Execute Update (/5/0/2): only a downloaded package can be installed."""
        if self.state != DOWNLOADED:
            raise MethodNotAllowed("Update is executable only in State 2 (Downloaded)")
        self.state, self.result = UPDATING, INITIAL
        self.generation += 1

    def installed(self, outcome: str) -> None:
        """The device booted again after Updating. A rollback believes it succeeded (1) yet
        runs the old version: only /3/0/3 tells the server."""
        if outcome == INSTALLED:
            self.running, self.result = self.staged, UPDATED
        else:
            self.result = UPDATE_FAILED if outcome == INSTALL_FAILED else UPDATED
        self.state, self.staged, self.uri = IDLE, None, ""
        self.generation += 1
