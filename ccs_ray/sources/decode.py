"""Bytes -> RGB PIL image, with every failure classified, for the errors table.

Reasons: ``empty`` (zero bytes), ``not_an_image`` (no image format recognised), ``truncated`` (the data
ends early), ``corrupt`` (a recognised format whose data is broken), ``decompression_bomb`` (more pixels
than ``PIL.Image.MAX_IMAGE_PIXELS``: where PIL only warns, this is an error too), ``unreadable`` (the bytes
could not be read at all: I/O error, missing file or member, permission). Images that are not RGB
(grayscale, CMYK, palette, with alpha) are converted, alpha composited on white, and reported as
``converted:<mode>``: kept, but counted.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

REASONS = ("empty", "not_an_image", "truncated", "corrupt", "decompression_bomb", "unreadable")

# Magic numbers of formats PIL reads: bytes that start so but do not open are a broken image, not a non-image.
_MAGIC = (b"\xff\xd8\xff", b"\x89PNG", b"GIF8", b"BM", b"II*\x00", b"MM\x00*", b"RIFF")


class DecodeError(Exception):
    """An image that cannot be used; ``reason`` is one of :data:`REASONS`."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


def decode_image(data: bytes) -> tuple[Image.Image, str | None]:
    """(RGB image, original mode if it was converted else None); raises :class:`DecodeError`."""
    if not data:
        raise DecodeError("empty", "zero bytes")
    ImageFile.LOAD_TRUNCATED_IMAGES = False  # never decode half an image silently
    try:
        image = Image.open(io.BytesIO(data))  # raises over 2x the limit, only warns between 1x and 2x
        limit, pixels = Image.MAX_IMAGE_PIXELS, image.width * image.height
        if limit and pixels > limit:  # checked here, not by turning the warning into an error: thread-safe
            raise DecodeError("decompression_bomb", f"{image.width}x{image.height} = {pixels} pixels is more than "
                                                    f"PIL.Image.MAX_IMAGE_PIXELS = {limit}")
        image.load()
    except Image.DecompressionBombError as e:
        raise DecodeError("decompression_bomb", str(e)) from None
    except UnidentifiedImageError:
        if data.startswith(_MAGIC):
            raise DecodeError("corrupt", f"{len(data)} bytes start like an image but no decoder accepts them") from None
        raise DecodeError("not_an_image", f"{len(data)} bytes in no image format PIL reads (starts {data[:8]!r})") from None
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError) as e:
        msg = f"{type(e).__name__}: {e}"
        reason = "truncated" if "truncated" in msg.lower() or isinstance(e, EOFError) else "corrupt"
        raise DecodeError(reason, msg) from None
    if image.mode == "RGB":
        return image, None
    return to_rgb(image), image.mode


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode -> RGB; transparency (RGBA, LA, PA, P or L with a transparent color) over white."""
    if image.mode in ("P", "L") and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    if image.mode.startswith("I;16"):  # 16-bit grayscale: keep the top 8 bits
        image = Image.fromarray((np.asarray(image).astype(np.uint16) >> 8).astype(np.uint8))
    return image.convert("RGB")
