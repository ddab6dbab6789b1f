"""The generated probe set: colored shapes, counts of objects, letters and digits, and textures on varied
backgrounds, drawn with PIL and needing no download.

URI: ``probe://[task]?n=512&seed=0&size=224&format=png``. ``task`` is one of :data:`TASKS` (its labels
are the class names of :func:`probe_classes`, for zero-shot classification) or empty for the mixed set
(tasks in turn; labels ``"<task>:<class>"``). Image ``i`` depends only on (task, seed, size, i), and its
class is ``classes[i % len(classes)]``, so every shard is reproducible and classes are balanced. Images
are encoded (PNG by default) so they take the same decode path as files.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .base import Record, Shard, SourceError, fingerprint, row_ranges

GENERATOR_VERSION = 1  # bump when drawing changes: it is part of every probe shard's fingerprint

COLORS = {
    "red": (220, 30, 30), "orange": (245, 140, 20), "yellow": (240, 220, 30), "green": (40, 160, 60),
    "cyan": (40, 200, 210), "blue": (30, 70, 220), "purple": (130, 50, 180), "pink": (245, 130, 190),
    "brown": (125, 75, 35), "black": (15, 15, 15), "white": (245, 245, 245), "gray": (128, 128, 128),
}
SHAPES = ("circle", "square", "triangle", "star", "pentagon", "hexagon", "cross", "diamond")
COUNT_WORDS = ("one", "two", "three", "four", "five", "six")
GLYPHS = tuple("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
TEXTURES = ("stripes", "checkers", "dots", "noise", "grid")

TASKS: dict[str, tuple[str, ...]] = {
    "shapes": SHAPES,
    "colors": tuple(COLORS),
    "counts": COUNT_WORDS,
    "letters": GLYPHS,
    "textures": TEXTURES,
}
_TEXTURE_TEXTS = {"stripes": "striped pattern", "checkers": "checkered pattern", "dots": "polka dot pattern",
                  "noise": "noise pattern", "grid": "grid pattern"}
_FORMATS = {"png": "PNG", "jpeg": "JPEG"}


@dataclass(frozen=True)
class ProbeSpec:
    """A parsed ``probe://`` URI."""

    task: str  # "" for the mixed set
    n: int = 512
    seed: int = 0
    size: int = 224
    format: str = "png"

    @property
    def uri(self) -> str:
        """The canonical URI (every parameter spelled out)."""
        return f"probe://{self.task}?" + urlencode(dict(n=self.n, seed=self.seed, size=self.size, format=self.format))


def parse_probe_uri(uri: str) -> ProbeSpec:
    """``probe://shapes?n=200&seed=1`` -> ProbeSpec; a clear error for an unknown task or parameter."""
    parts = urlsplit(uri)
    if parts.scheme != "probe":
        raise SourceError(f"not a probe URI: {uri!r} (expected probe://[task]?n=..&seed=..&size=..)")
    task = parts.netloc + parts.path.strip("/")
    if task not in ("", "mixed", *TASKS):
        raise SourceError(f"unknown probe task {task!r} in {uri!r}; tasks: {', '.join(TASKS)} (or none: mixed)")
    params = dict(parse_qsl(parts.query, keep_blank_values=True))
    allowed = {"n", "seed", "size", "format"}
    if set(params) - allowed:
        raise SourceError(f"unknown probe parameter(s) {sorted(set(params) - allowed)} in {uri!r}; "
                          f"allowed: {sorted(allowed)}")
    try:
        given: dict[str, Any] = {k: v if k == "format" else int(v) for k, v in params.items()}  # str or int
        spec = ProbeSpec("" if task == "mixed" else task, **given)
    except ValueError:
        raise SourceError(f"probe parameters n, seed and size must be integers: {uri!r}") from None
    if spec.n < 1 or spec.size < 8 or spec.format not in _FORMATS:
        raise SourceError(f"bad probe URI {uri!r}: need n >= 1, size >= 8, format in {sorted(_FORMATS)}")
    return spec


def probe_classes(task: str) -> list[str]:
    """Class labels of a task, in label order (``"mixed"``/``""``: every ``"<task>:<class>"``)."""
    if task in ("", "mixed"):
        return [f"{t}:{c}" for t, classes in TASKS.items() for c in classes]
    if task not in TASKS:
        raise ValueError(f"unknown probe task {task!r}; tasks: {', '.join(TASKS)}, mixed")
    return list(TASKS[task])


def probe_class_texts(task: str) -> list[str]:
    """Text for each class of :func:`probe_classes`, to fill templates such as ``"a photo of a {}."``."""
    return [_class_text(*(c.split(":", 1) if ":" in c else (task, c))) for c in probe_classes(task)]


def _class_text(task: str, cls: str) -> str:
    if task == "colors":
        return f"{cls} object"
    if task == "counts":
        return f"{cls} object" if cls == "one" else f"{cls} objects"
    if task == "letters":
        return f"digit {cls}" if cls.isdigit() else f"letter {cls}"
    if task == "textures":
        return _TEXTURE_TEXTS[cls]
    return cls


def plan(cfg) -> Iterator[tuple[str, tuple, str]]:
    """(canonical uri, (start, stop), fingerprint) per shard of ``shard_size`` images."""
    spec = parse_probe_uri(cfg.source)
    n = spec.n if cfg.limit is None else min(spec.n, cfg.limit)
    return ((spec.uri, (start, stop), fingerprint(spec.uri, start, stop, GENERATOR_VERSION))
            for start, stop in row_ranges(n, cfg.shard_size))


def read(shard: Shard) -> Iterator[Record]:
    """The encoded images of the shard's index range, with their labels."""
    spec = parse_probe_uri(shard.uri)
    for i in range(*shard.items):
        image, label = probe_image(spec.task, i, spec.seed, spec.size)
        buf = io.BytesIO()
        image.save(buf, _FORMATS[spec.format], **({"compress_level": 1} if spec.format == "png" else {"quality": 95}))
        yield Record(f"{spec.uri}#{i}", buf.getvalue(), label)


def probe_image(task: str, index: int, seed: int = 0, size: int = 224) -> tuple[Image.Image, str]:
    """Image ``index`` of a task (``""`` mixed) and its label; a pure function of its arguments."""
    names = list(TASKS)
    if task in ("", "mixed"):
        sub = names[index % len(names)]
        image, label = probe_image(sub, index // len(names), seed, size)
        return image, f"{sub}:{label}"
    classes = TASKS[task]
    cls = classes[index % len(classes)]
    rng = np.random.default_rng([seed, names.index(task), index])
    return _DRAW[task](rng, cls, size), cls


def _color(rng, name: str) -> tuple[int, int, int]:
    jitter = rng.integers(-15, 16, 3)
    r, g, b = (int(v) for v in np.clip(np.array(COLORS[name]) + jitter, 0, 255))
    return r, g, b


def _contrasting(rng, avoid: list[tuple]) -> tuple[int, int, int]:
    """A random color at least 140 (RGB distance) away from every color in ``avoid``."""
    while True:
        r, g, b = (int(v) for v in rng.integers(0, 256, 3))
        if all(math.dist((r, g, b), a) > 140 for a in avoid):
            return r, g, b


def _background(rng, size: int, avoid: list[tuple], gradient: bool = True) -> Image.Image:
    """Solid, two-color gradient, or speckled background, away from the foreground colors."""
    a, b = _contrasting(rng, avoid), _contrasting(rng, avoid)
    style = rng.integers(3) if gradient else 2 * rng.integers(2)
    if style == 0:
        return Image.new("RGB", (size, size), a)
    if style == 1:
        t = np.linspace(0, 1, size)[:, None, None]
        grad = (1 - t) * np.array(a) + t * np.array(b)
        grad = grad if rng.integers(2) else grad.transpose(1, 0, 2)  # vertical or horizontal
        return Image.fromarray(np.broadcast_to(grad, (size, size, 3)).astype(np.uint8))
    arr = np.clip(np.array(a) + rng.normal(0, 12, (size, size, 3)), 0, 255).astype(np.uint8)
    return Image.fromarray(arr)


def _polygon(shape: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    """Vertices of a shape of circumradius ``r`` centred at (cx, cy), rotated by ``angle`` radians."""
    if shape == "star":
        pts = [(r if k % 2 == 0 else 0.42 * r, k * math.pi / 5) for k in range(10)]
    elif shape == "cross":
        w = 0.35 * r
        xy = [(w, r), (w, w), (r, w), (r, -w), (w, -w), (w, -r),
              (-w, -r), (-w, -w), (-r, -w), (-r, w), (-w, w), (-w, r)]
        pts = [(math.hypot(x, y), math.atan2(y, x)) for x, y in xy]
    elif shape == "diamond":
        pts = [(r, 0), (0.6 * r, math.pi / 2), (r, math.pi), (0.6 * r, 3 * math.pi / 2)]
    else:
        k = {"triangle": 3, "square": 4, "pentagon": 5, "hexagon": 6}[shape]
        pts = [(r, 2 * math.pi * j / k + (math.pi / 4 if k == 4 else -math.pi / 2)) for j in range(k)]
    return [(cx + d * math.cos(t + angle), cy + d * math.sin(t + angle)) for d, t in pts]


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, r: float, angle: float, color) -> None:
    if shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=color)
    else:
        draw.polygon(_polygon(shape, cx, cy, r, angle), fill=color)


def _one_shape(rng, size: int, shape: str, color) -> Image.Image:
    image = _background(rng, size, [color])
    r = size * rng.uniform(0.18, 0.32)
    cx, cy = rng.uniform(r, size - r, 2)
    angle = rng.uniform(-0.3, 0.3) if shape not in ("circle",) else 0.0
    _draw_shape(ImageDraw.Draw(image), shape, cx, cy, r, angle, color)
    return image


def _draw_shapes(rng, cls: str, size: int) -> Image.Image:
    return _one_shape(rng, size, cls, _color(rng, str(rng.choice(list(COLORS)))))


def _draw_colors(rng, cls: str, size: int) -> Image.Image:
    return _one_shape(rng, size, str(rng.choice(SHAPES)), _color(rng, cls))


def _draw_counts(rng, cls: str, size: int) -> Image.Image:
    """``k`` same-shape objects in distinct cells of a 3x3 grid, so they never touch, on a plain background."""
    k = COUNT_WORDS.index(cls) + 1
    shape = str(rng.choice(SHAPES))
    colors = [_color(rng, str(rng.choice(list(COLORS)))) for _ in range(k)]
    image = _background(rng, size, colors, gradient=False)
    draw, cell = ImageDraw.Draw(image), size / 3
    r = cell * rng.uniform(0.25, 0.36)
    for c, color in zip(rng.choice(9, k, replace=False), colors, strict=True):
        cx = (c % 3 + 0.5) * cell + rng.uniform(-1, 1) * (cell / 2 - r - 3)
        cy = (c // 3 + 0.5) * cell + rng.uniform(-1, 1) * (cell / 2 - r - 3)
        _draw_shape(draw, shape, cx, cy, r, rng.uniform(-0.3, 0.3), color)
    return image


def _draw_letters(rng, cls: str, size: int) -> Image.Image:
    color = _color(rng, str(rng.choice(list(COLORS))))
    image = _background(rng, size, [color])
    font = ImageFont.load_default(size=int(size * rng.uniform(0.45, 0.7)))
    draw = ImageDraw.Draw(image)
    left, top, right, bottom = draw.textbbox((0, 0), cls, font=font)
    x = rng.uniform(0, max(size - (right - left), 1)) - left
    y = rng.uniform(0, max(size - (bottom - top), 1)) - top
    draw.text((x, y), cls, fill=color, font=font)
    return image


def _draw_textures(rng, cls: str, size: int) -> Image.Image:
    a = _color(rng, str(rng.choice(list(COLORS))))
    b = _contrasting(rng, [a])
    period = int(size * rng.uniform(0.06, 0.14)) + 2
    yy, xx = np.mgrid[:size, :size]
    if cls == "stripes":
        d = (xx, yy, xx + yy, xx - yy)[rng.integers(4)]
        mask = (d // period) % 2 == 0
    elif cls == "checkers":
        mask = ((xx // period) + (yy // period)) % 2 == 0
    elif cls == "dots":
        mask = ((xx % period - period / 2) ** 2 + (yy % period - period / 2) ** 2) < (period * 0.3) ** 2
    elif cls == "grid":
        mask = (xx % period < max(period // 6, 1)) | (yy % period < max(period // 6, 1))
    else:  # noise
        mask = rng.random((size, size)) < 0.5
    arr = np.where(mask[..., None], np.array(a), np.array(b)).astype(np.uint8)
    return Image.fromarray(arr)


_DRAW = {"shapes": _draw_shapes, "colors": _draw_colors, "counts": _draw_counts, "letters": _draw_letters,
         "textures": _draw_textures}
