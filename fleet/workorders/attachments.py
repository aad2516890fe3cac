"""What an attachment may be: an image, recognised by its first bytes, not by what the client says."""

from __future__ import annotations

MAX_ATTACHMENT_BYTES = 5 * 1024 * 1024


def image_type(content: bytes) -> str | None:
    """The media type of a JPEG, PNG or WebP image; None for anything else."""
    if content.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if content.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if len(content) >= 12 and content[:4] == b"RIFF" and content[8:12] == b"WEBP":
        return "image/webp"
    return None
