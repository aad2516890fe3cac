"""CodecError: a payload a device sent (or we were asked to send) breaks its content format."""

from __future__ import annotations

MAX_DIAGNOSTIC_LENGTH = 120


class CodecError(ValueError):
    """A malformed payload; str(error) is a short ASCII diagnostic fit for a CoAP 4.00 payload.

    The message is clipped and stripped of non-ASCII and control characters here, so callers
    may quote bits of untrusted input without ever echoing a whole payload back.
    """

    def __init__(self, diagnostic: str) -> None:
        clipped = diagnostic[:MAX_DIAGNOSTIC_LENGTH]
        printable = "".join(c if " " <= c <= "~" else "?" for c in clipped)
        if len(diagnostic) > MAX_DIAGNOSTIC_LENGTH:
            printable = printable[: MAX_DIAGNOSTIC_LENGTH - 3] + "..."
        super().__init__(printable)
        self.diagnostic = printable
