"""Drawing a head's map (:mod:`ccs_ray.headmap`): colours, a PNG of one pixel per patch, an overlay on the image.

numpy and PIL only, so that a report or a notebook draws the maps the explain stage stored without loading a model.
A map ``values`` [gh, gw] (row-major over the patch grid, embedding units) is drawn on a diverging scale centred on
0 (:func:`colors`): red where a patch pushes the head's output along the direction, blue against it, full colour at
``scale`` (default :func:`default_scale`, the map's largest |value|).
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, PngImagePlugin

from .jsonout import dumps

#: Opacity of the heat layer over the image (0: the image alone, 1: the heat layer alone).
ALPHA = 0.6
#: Colours of the diverging scale at -scale, 0 and +scale (RGB): a patch that pushes the head's output along the
#: direction is red, one that pushes against it blue.
NEGATIVE, ZERO, POSITIVE = (33, 102, 172), (247, 247, 247), (178, 24, 43)
#: Colours of a map's cells in a head card (:func:`cells_png`): odd, so that 0 has its own.
CELL_LEVELS = 33
#: Colour drawn (at the same opacity) over the parts of an image that the model does not see (cropped away).
VEIL = (128, 128, 128)
#: The PNG text chunk that holds a drawn map's values, scale and what it shows (JSON).
PNG_KEY = "ccs_ray.head_map"


def colors(values: np.ndarray, scale: float) -> np.ndarray:
    """uint8 [..., 3] RGB of ``values`` on the diverging scale: -scale blue, 0 near white, +scale red (clipped)."""
    t = np.clip(np.asarray(values, dtype=np.float64) / scale, -1, 1)[..., None]
    ends = np.where(t >= 0, np.array(POSITIVE, float), np.array(NEGATIVE, float))
    return np.rint(np.array(ZERO, float) + np.abs(t) * (ends - np.array(ZERO, float))).astype(np.uint8)


def default_scale(values: np.ndarray) -> float:
    """The colour scale of a map: its largest |value| (1 for a map of zeros)."""
    top = float(np.abs(values).max())
    return top if top > 0 else 1.0


def cells_png(values: np.ndarray, scale: float | None = None) -> bytes:
    """PNG bytes of a map ``values`` [gh, gw] (row-major patch values) as gh x gw pixels, one per patch, on the
    diverging scale (:func:`colors`; ``scale`` default :func:`default_scale`) in :data:`CELL_LEVELS` steps from
    -scale to +scale: a palette image, a few hundred bytes even for a 16 x 16 grid (a report holds thousands)."""
    values = np.asarray(values, dtype=np.float64)
    scale = scale or default_scale(values)
    steps = CELL_LEVELS - 1
    index = np.rint((np.clip(values / scale, -1, 1) + 1) * steps / 2).astype(np.uint8)
    image = Image.frombytes("P", (index.shape[1], index.shape[0]), index.tobytes())
    image.putpalette(colors(np.linspace(-scale, scale, CELL_LEVELS), scale).ravel().tolist())
    out = io.BytesIO()
    image.save(out, format="PNG", optimize=True)
    return out.getvalue()


def overlay(image: Image.Image, values: np.ndarray, box: tuple[float, float, float, float] | None = None,
            scale: float | None = None) -> Image.Image:
    """``image`` (RGB, its own size) with the map ``values`` [gh, gw] drawn over ``box`` (:func:`model_view`; default
    the whole image, as for an image the model saw as it is), one flat cell per patch, at opacity :data:`ALPHA`;
    outside the box, the :data:`VEIL`. ``scale``: the value drawn at full colour (default :func:`default_scale`)."""
    base = image.convert("RGB")
    x0, y0, x1, y1 = (round(c) for c in (box or (0, 0, *base.size)))
    cells = Image.fromarray(colors(values, scale or default_scale(values)))
    layer = Image.new("RGB", base.size, VEIL)
    layer.paste(cells.resize((x1 - x0, y1 - y0), Image.Resampling.NEAREST), (x0, y0))
    return Image.blend(base, layer, ALPHA)


def overlay_png(image: Image.Image, values: np.ndarray, box: tuple[float, float, float, float] | None = None,
                scale: float | None = None, about: dict | None = None) -> bytes:
    """PNG bytes of :func:`overlay`, carrying in its text chunk :data:`PNG_KEY` the JSON of ``about`` (what the map
    shows) with ``scale`` and ``values`` (the [gh, gw] map as nested lists)."""
    scale = scale or default_scale(values)
    info = PngImagePlugin.PngInfo()
    info.add_text(PNG_KEY, dumps({**(about or {}), "scale": scale, "values": np.asarray(values).tolist()}))
    out = io.BytesIO()
    overlay(image, values, box, scale).save(out, format="PNG", pnginfo=info)
    return out.getvalue()
