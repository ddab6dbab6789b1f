"""Bytes -> a PIL image as open_clip's preprocessing takes it, with every failure classified, for the errors table.

Reasons: ``empty`` (zero bytes), ``not_an_image`` (no image format recognised), ``truncated`` (the data
ends early), ``corrupt`` (a recognised format whose data is broken), ``unsupported`` (a well-formed file in a
format, compression or pixel layout Pillow cannot decode, e.g. a float64 TIFF: Pillow calls it unsupported,
not supported, cannot handle it, has no decoder for it, or finds no mode for it), ``decompression_bomb``
(more pixels than ``PIL.Image.MAX_IMAGE_PIXELS``: where PIL only warns, this is an error too), ``unreadable``
(the bytes could not be read at all: I/O error, missing file or member, permission).

Images that are not RGB (grayscale, 16-bit, CMYK, palette, with transparency) are kept, and converted to RGB as
``alpha`` (``data.alpha``) says:

- ``"drop"`` (the default): as open_clip. Its eval transform resizes and crops the image in the mode it was opened
  in and only then converts it with PIL's plain ``convert("RGB")``, which drops alpha: a fully transparent pixel
  shows the colour stored under it (often black), a palette image is resized by nearest neighbour, 16-bit
  grayscale is clipped at 255 (not scaled). :func:`decode_image` therefore leaves the image in its own mode, and a
  preprocess that converts last (:class:`~ccs_ray.preprocess.Pixels`, open_clip's transform) gives exactly the
  pixels of open_clip's ``preprocess(Image.open(f))``. Every mode Pillow opens a file in converts so.
- a colour (``"white"``, ``"black"`` or ``"#rrggbb"``): an image with transparency (an alpha band, or a
  transparent colour of a palette, grayscale or RGB image) is composited over it at full size, then resized as RGB.

The second value of :func:`decode_image` is the image's row of the ``conversions`` table: its original mode and
how its transparency was handled (``"dropped"``, ``"over #rrggbb"``; None without transparency).
"""

from __future__ import annotations

import io

from PIL import Image, ImageFile, UnidentifiedImageError

from ..choices import alpha_colour

REASONS = ("empty", "not_an_image", "truncated", "corrupt", "unsupported", "decompression_bomb", "unreadable")

# Magic numbers of formats PIL reads: bytes that start so but do not open are a broken image, not a non-image.
_MAGIC = (b"\xff\xd8\xff", b"\x89PNG", b"GIF8", b"BM", b"II*\x00", b"MM\x00*", b"RIFF")
# How Pillow words a file it understands but cannot decode (a corrupt one reads "broken", "unrecognized data
# stream contents", "decoder error", ...).
_UNSUPPORTED = ("unsupported", "not supported", "cannot handle", "not available")


class DecodeError(Exception):
    """An image that cannot be used; ``reason`` is one of :data:`REASONS`."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


def decode_image(data: bytes, alpha: str = "drop") -> tuple[Image.Image, dict | None]:
    """(image, its conversion) of ``data``; raises :class:`DecodeError`. The image is as open_clip's preprocessing
    takes it (``alpha``: module docstring): RGB, or in its own mode for a preprocess that converts it last. Its
    conversion: ``{"from_mode", "alpha"}`` (the ``conversions`` table's columns) or None for a plain RGB image."""
    alpha_colour(alpha)  # a ValueError for a bad alpha, before any image error
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
        return convert(image, alpha)
    except Image.DecompressionBombError as e:
        raise DecodeError("decompression_bomb", str(e)) from None
    except UnidentifiedImageError:
        if not data.startswith(_MAGIC):
            raise DecodeError("not_an_image",
                              f"{len(data)} bytes in no image format PIL reads (starts {data[:8]!r})") from None
        cause = _open_error(data)
        why = f" ({type(cause).__name__}: {cause})" if cause else ""
        raise DecodeError("unsupported" if cause and _unsupported(cause) else "corrupt",
                          f"{len(data)} bytes start like an image but no decoder accepts them{why}") from None
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError, KeyError) as e:
        msg = f"{type(e).__name__}: {e}"
        truncated = "truncated" in msg.lower() or isinstance(e, EOFError)
        raise DecodeError("truncated" if truncated else "unsupported" if _unsupported(e) else "corrupt", msg) from None


def _unsupported(e: Exception) -> bool:
    """Whether Pillow's error says the file is understood but not decodable; a ``KeyError`` (or an error raised
    from one) is a mode, compression or layout missing from Pillow's tables."""
    if isinstance(e, KeyError) or isinstance(e.__cause__, KeyError):
        return True
    return any(words in str(e).lower() for words in _UNSUPPORTED)


def _open_error(data: bytes) -> Exception | None:
    """What the format plugin that claims ``data`` raised when opening it (``Image.open`` only says it cannot
    identify the file), or None."""
    Image.init()
    for fmt in Image.ID:
        factory, accept = Image.OPEN[fmt]
        try:
            claims = accept is not None and accept(data[:16])
        except Exception:  # noqa: BLE001 - a plugin that cannot even read the prefix does not claim it
            claims = False
        if claims and not isinstance(claims, str):  # a str is Pillow's "looks like it, but" warning
            try:
                factory(io.BytesIO(data), "")  # as Image.open calls it for a file object
            except Exception as e:  # noqa: BLE001 - any error of the claiming plugin is the answer
                return e
    return None


def convert(image: Image.Image, alpha: str = "drop") -> tuple[Image.Image, dict | None]:
    """(image, its conversion) as :func:`decode_image` gives them, for a PIL image as it was opened."""
    transparent = image.has_transparency_data
    if image.mode == "RGB" and not transparent:
        return image, None
    colour = alpha_colour(alpha)
    row = {"from_mode": image.mode, "alpha": None if not transparent else f"over {colour}" if colour else "dropped"}
    return (to_rgb(image, alpha) if transparent and colour else image), row


def to_rgb(image: Image.Image, alpha: str = "drop") -> Image.Image:
    """Any PIL mode -> RGB: PIL's plain conversion (``alpha="drop"``, what open_clip does), or transparency
    composited over the colour ``alpha`` names (:func:`~ccs_ray.choices.alpha_colour`)."""
    colour = alpha_colour(alpha)
    if colour is None or not image.has_transparency_data:
        return image.convert("RGB")
    canvas = Image.new("RGBA", image.size, colour)
    return Image.alpha_composite(canvas, image.convert("RGBA")).convert("RGB")


def deferrable_jpeg(data: bytes) -> str | None:
    """The mode (``"RGB"`` or ``"L"``) of a complete JPEG that a model's device can decode (:func:`decode_jpegs`),
    read from its header alone; None for anything else (other formats, CMYK, no end marker, more pixels than
    ``PIL.Image.MAX_IMAGE_PIXELS``), which :func:`decode_image` decodes on CPU and classifies."""
    if not data.startswith(b"\xff\xd8\xff") or not data.rstrip(b"\x00").endswith(b"\xff\xd9"):
        return None
    try:
        image = Image.open(io.BytesIO(data))  # the header only: nothing is decoded
    except Exception:  # noqa: BLE001 - decode_image classifies it
        return None
    limit = Image.MAX_IMAGE_PIXELS
    if image.format != "JPEG" or image.mode not in ("RGB", "L") or (limit and image.width * image.height > limit):
        return None
    return image.mode


def decode_jpegs(datas: list[bytes], device) -> list:
    """JPEGs decoded on ``device`` in one batch (torchvision's ``decode_jpeg``; nvJPEG on CUDA): RGB uint8
    [3, h, w] tensors there, None for each one it cannot decode (the caller decodes those on CPU, so that they are
    classified as :func:`decode_image` does)."""
    import torch
    from torchvision.io import ImageReadMode, decode_jpeg

    tensors = [torch.frombuffer(bytearray(d), dtype=torch.uint8) for d in datas]
    if not tensors:
        return []
    try:
        return list(decode_jpeg(tensors, mode=ImageReadMode.RGB, device=device))
    except RuntimeError:  # one bad image fails the batch: decode them one at a time
        out = []
        for t in tensors:
            try:
                out.append(decode_jpeg(t, mode=ImageReadMode.RGB, device=device))
            except RuntimeError:
                out.append(None)
        return out
