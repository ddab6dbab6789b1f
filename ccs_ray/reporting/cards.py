"""Every head's card: what it encodes and how sure the judges are, what it responds to, and what removing it costs.

A card (a dict, :func:`head_cards`) holds, per (run, model, head): the label and CCS (and held-out CCS) of every
judge, the report's judge (``combined``, the majority vote, where present) first; the m spans CCS counts, each
with its share of the head's variance, every judge's verdict (1 aligned, 0 not, None no valid answer), its top
images and its bottom images (the most negative projections: the span's other end); the head's overall top
images; its span stability across data folds (mean Jaccard over fold pairs and the share of pairs with the same
top text); and every pruned configuration that removes the head, with its change in accuracy and bias, the one of
its own level (``high`` or ``low``) as ``group``. Everything comes from
canned queries (head_details, span_verdicts, head_top_images, span_stability, head_groups).

Thumbnails are re-encoded for the report as WebP data URIs, longest side at most :data:`THUMB_PX` (the stored
thumbnail's own size when smaller, never enlarged) at quality :data:`THUMB_QUALITY`. A page holds each distinct
thumbnail once (:func:`thumb_styles`: one CSS class per image) and shows it at :data:`SHOW_PX`, enlarged to its
full size on click (keyboard focus), so a report over 6 models x 64 heads x 5 spans x 8 top and 8 bottom images
stays under 25 MB.

Where the head looks: a top image of a span with a map (``top_images.patch_map`` and ``patch_grid``, written by the
explain stage: :mod:`ccs_ray.headmap`'s maps) carries it as ``overlay``, a PNG data URI of one pixel per image
patch on the map's own diverging scale (:func:`ccs_ray.heatmap.cells_png`: red along the span, blue against it),
which the card lays over the thumbnail, scaled with it. Bottom and overall top images have none.
:func:`format_card` is a card as text (``ccs-ray head``), :func:`find_card` finds one.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import io
from collections import defaultdict

from PIL import Image

from ccs_ray.analytics import canned_rows, canned_subquery, query
from ccs_ray.errors import UserError
from ccs_ray.heads import head_name, parse_head_name
from ccs_ray.scores import UNSCORED

THUMB_PX = 128  # longest side of a thumbnail in the report, pixels, at most (shown enlarged on click)
SHOW_PX = 48  # longest side of a thumbnail as the card shows it, CSS pixels
THUMB_QUALITY = 60  # WebP quality (0..100) of a thumbnail in the report
LEVEL_ORDER = ("high", "low", "medium", UNSCORED, None)  # cards of high- and low-CCS heads first; None: not judged
VERDICT_WORDS = {1: "aligned", 0: "not aligned", None: "no answer"}
VERDICT_MARKS = {1: "✓", 0: "✗", None: "?"}


def group_by(rows: list[dict], *keys: str) -> dict[tuple, list[dict]]:
    """Rows grouped by the values of ``keys`` (a tuple), in first-seen order."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        groups[tuple(r[k] for k in keys)].append(r)
    return dict(groups)


def judge_of(rows: list[dict]) -> str:
    """The judge whose CCS the report shows: the majority vote when present, else the first judge by name."""
    judges = {r["judge"] for r in rows}
    return "combined" if "combined" in judges else min(judges)


def anchor(head: str, model: str | None = None, run_id: str | None = None) -> str:
    """The id of a head's card: ``L11.H5`` on a page of one model's heads, ``<model>.L11.H5`` on a page of
    several models, ``<model>.<run>.L11.H5`` when it also holds several runs of the model."""
    return ".".join(p for p in (model, run_id, head) if p)


class HeadError(UserError, ValueError):
    """A malformed head name, or a model, run or head the results do not hold; the message says what there is."""


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def where(heads=None, model: str | None = None, run_id: str | None = None) -> str:
    """A SQL condition on head_label, model and run_id columns selecting ``heads`` (names, any spelling
    :func:`ccs_ray.heads.parse_head_name` reads), ``model`` and ``run_id``; None selects all."""
    conditions = ["true"]
    if heads is not None:
        try:
            names = [head_name(*parse_head_name(h)) for h in heads]
        except ValueError as e:
            raise HeadError(str(e)) from None
        conditions.append(f"head_label IN ({', '.join(map(_literal, names))})")
    if model is not None:
        conditions.append(f"model = {_literal(model)}")
    if run_id is not None:
        conditions.append(f"run_id = {_literal(run_id)}")
    return " AND ".join(conditions)


@functools.lru_cache(maxsize=8192)
def thumbnail(data: bytes) -> tuple[str, int, int] | None:
    """(WebP data URI, width, height) of an image's bytes, longest side at most THUMB_PX (a smaller image keeps its
    size); None when they are no image.
    WebP, because at this size a JPEG's fixed tables are a third of the file."""
    try:
        with Image.open(io.BytesIO(data)) as opened:
            image = opened.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError):
        return None
    image.thumbnail((THUMB_PX, THUMB_PX), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    image.save(buf, "WEBP", quality=THUMB_QUALITY)
    return "data:image/webp;base64," + base64.b64encode(buf.getvalue()).decode("ascii"), image.width, image.height


def thumb_class(src: str) -> str:
    """The CSS class that paints the thumbnail with data URI ``src`` (:func:`thumb_styles`)."""
    return "t" + hashlib.sha1(src.encode("ascii")).hexdigest()[:12]


def thumb_styles(images) -> list[tuple[str, str]]:
    """(CSS class, data URI) of each distinct thumbnail among ``images`` (card image dicts), in first-seen order."""
    return list({i["cls"]: i["src"] for i in images if i["src"]}.items())


def card_images(cards) -> list[dict]:
    """Every image dict of ``cards``: each span's top and bottom images and the head's overall top images."""
    return [i for c in cards for i in (*c["images"], *(i for sp in c["spans"] for i in (*sp["images"], *sp["bottom"])))]


def overlay(patch_map: list[float], grid_rows: int) -> str:
    """The PNG data URI of a map (``top_images.patch_map``, row-major over ``grid_rows`` rows), one pixel per patch."""
    import numpy as np

    from ccs_ray.heatmap import cells_png

    png = cells_png(np.asarray(patch_map, dtype=np.float64).reshape(grid_rows, -1))
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _image(row: dict) -> dict:
    """A card's image: URI, shard, score, position and its thumbnail (``src``, CSS class ``cls``; ``width`` and
    ``height`` as shown, CSS pixels; ``zoom``: the factor that shows it at its full size), None fields without one;
    ``overlay``: where the head looks in it (:func:`overlay`), None without a map."""
    thumb = thumbnail(row["thumbnail"]) if row["thumbnail"] else None
    mapped = row.get("patch_map") is not None and row.get("patch_grid")
    image = dict(uri=row["image_uri"], shard=row["shard"], score=row["score"], position=row["position"], src=None,
                 cls=None, width=None, height=None, zoom=None,
                 overlay=overlay(row["patch_map"], row["patch_grid"]) if mapped else None)
    if thumb:
        src, width, height = thumb
        scale = SHOW_PX / max(width, height)
        image.update(src=src, cls=thumb_class(src), width=round(width * scale), height=round(height * scale),
                     zoom=round(1 / scale, 3))
    return image


def head_cards(conn, condition: str = "true", anchors: dict | None = None) -> dict[tuple[str, str], list[dict]]:
    """(run_id, model) -> the cards of its heads that meet ``condition`` (:func:`where`), in head order.

    ``anchors``: (run_id, model) -> (model or None, run_id or None), what card ids carry besides the head
    (:func:`anchor`); default: the head alone.
    """
    details = group_by(canned_rows(conn, "head_details", condition), "run_id", "model", "head_label")
    verdicts = group_by(canned_rows(conn, "span_verdicts", condition), "run_id", "model", "head_label")
    images = group_by(query(conn, f"""
        SELECT * FROM (
            SELECT q.*, t.thumbnail, t.patch_map, t.patch_grid FROM {canned_subquery('head_top_images')} q
            JOIN top_images t ON t.run_id = q.run_id AND t.model = q.model AND t.layer = q.layer AND t.head = q.head
                AND t.span_rank IS NOT DISTINCT FROM q.span_rank AND t.direction = q.direction
                AND t.position = q.position)
        WHERE {condition} ORDER BY model, run_id, layer, head, span_rank NULLS FIRST, direction DESC, position
        """).to_pylist(),
                 "run_id", "model", "head_label")
    stability = {(r["run_id"], r["model"], r["head_label"]): r for r in query(conn, f"""
        SELECT run_id, model, head_label, count(*) AS pairs, avg(jaccard) AS jaccard,
               avg(same_top::INTEGER) AS same_top
        FROM {canned_subquery('span_stability')} WHERE {condition} GROUP BY ALL""").to_pylist()}
    groups = group_by(canned_rows(conn, "head_groups"), "run_id", "model")
    keys = sorted({*details, *verdicts, *images}, key=lambda k: (k[1], k[0], parse_head_name(k[2])))
    cards: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for run_id, model, head in keys:
        key = (run_id, model, head)
        rows = details.get(key, [])
        judge = judge_of(rows) if rows else None
        ordered = sorted(rows, key=lambda r: (r["judge"] != judge, r["judge"]))
        judges = [r["judge"] for r in ordered] or sorted({v["judge"] for v in verdicts.get(key, []) if v["judge"]})
        mine = ordered[0] if ordered else {}
        spans = []
        head_images = group_by(images.get(key, []), "span_rank", "direction")
        for (rank,), span_rows in group_by(verdicts.get(key, []), "span_rank").items():
            by_judge = {v["judge"]: v["aligned"] for v in span_rows}
            spans.append(dict(rank=rank, text=span_rows[0]["text"],
                              variance_explained=span_rows[0]["variance_explained"],
                              verdicts=[by_judge.get(j) for j in judges],
                              images=[_image(r) for r in head_images.get((rank, "top"), [])],
                              bottom=[_image(r) for r in head_images.get((rank, "bottom"), [])]))
        explained = [s["variance_explained"] for s in spans if s["variance_explained"] is not None]
        removing = [g for g in groups.get((run_id, model), []) if head in (g["heads"] or [])]
        layer, index = parse_head_name(head)
        cards[(run_id, model)].append(dict(
            run_id=run_id, model=model, layer=layer, head=index, head_label=head,
            anchor=anchor(head, *(anchors or {}).get((run_id, model), (None, None))),
            judge=judge, judges=judges, ccs=mine.get("ccs"), ccs_heldout=mine.get("ccs_heldout"),
            level=mine.get("level"), unscored_reason=mine.get("unscored_reason"), label=mine.get("label"),
            heuristic=any(r["heuristic"] for r in rows),
            label_variance=mine.get("label_variance"), label_percentile=mine.get("label_percentile"),
            labels=[dict(judge=r["judge"], label=r["label"], ccs=r["ccs"], ccs_heldout=r["ccs_heldout"],
                         label_variance=r["label_variance"], label_percentile=r["label_percentile"])
                    for r in ordered],
            spans=spans, variance_explained=sum(explained) if explained else None,
            images=[_image(r) for r in head_images.get((None, "top"), [])], stability=stability.get(key),
            groups=removing, group=next((g for g in removing if g["config"] == mine.get("level")), None)))
    return dict(cards)


def card_order(cards: list[dict]) -> list[dict]:
    """Cards of high-CCS heads first, then low, medium, unscored and not judged; each in head order."""
    return sorted(cards, key=lambda c: (LEVEL_ORDER.index(c["level"]), c["layer"], c["head"]))


def _num(value, fmt: str) -> str:
    return "–" if value is None else format(value, fmt)


def _fidelity_text(j: dict) -> str:
    """The label's fidelity: its share of the head's variance and its percentile among the pool texts."""
    if j["label_variance"] is None:
        return ""
    return (f" (label fidelity: {100 * j['label_variance']:.1f} % of the variance, percentile "
            f"{_num(j['label_percentile'], '.0f')} of the pool)")


def _group_text(g: dict) -> str:
    return (f"{g['config']} ({g['n_heads']} heads, mean CCS {_num(g['mean_ccs'], '.2f')}): Δ top-1 "
            f"{_num(g['delta_accuracy'], '+.2f')} pts, Δ MaxSkew (sum) {_num(g['delta_maxskew_sum'], '+.3f')}")


def format_card(card: dict) -> str:
    """One card as plain text for a terminal: label and CCS per judge (and why there is none), spans with every
    judge's verdict and their top and bottom image URIs, the overall top image URIs, span stability and the pruned
    groups with the head."""
    lines = [f"{card['head_label']} of {card['model']} (run {card['run_id']})"]
    if card["judge"]:
        lines.append(f"label: {card['label'] or '–'} · CCS {_num(card['ccs'], 'd')} ({card['level']}), "
                     f"held-out {_num(card['ccs_heldout'], 'd')} · judge {card['judge']}"
                     + (" (offline heuristic judge: tests the pipeline, no finding)" if card["heuristic"] else ""))
        if card["unscored_reason"]:
            lines.append(f"no CCS: {card['unscored_reason']}")
        width = max(len(j["judge"]) for j in card["labels"])
        lines += [f"  {j['judge']:<{width}}  CCS {_num(j['ccs'], 'd'):>1}  held-out {_num(j['ccs_heldout'], 'd'):>1}  "
                  f"label: {j['label'] or '–'}{_fidelity_text(j)}" for j in card["labels"]]
    else:
        lines.append("not judged")
    lines.append(f"spans (verdicts: {', '.join(card['judges']) or 'none'}):" if card["spans"] else "no spans")
    for s in card["spans"]:
        share = "" if s["variance_explained"] is None else f" ({100 * s['variance_explained']:.1f} % of the variance)"
        lines.append(f"  {s['rank']}. {s['text']}{share}")
        if card["judges"]:
            lines.append("     " + ", ".join(f"{j}: {VERDICT_WORDS[v]}"
                                             for j, v in zip(card["judges"], s["verdicts"], strict=True)))
        lines += [f"     top {i['position']}: {i['uri']} (score {i['score']:.3g})" for i in s["images"]]
        lines += [f"     bottom {i['position']}: {i['uri']} (score {i['score']:.3g})" for i in s["bottom"]]
    lines.append("top images overall:" if card["images"] else "no top images (the explain stage has not run)")
    lines += [f"  {i['position']}. {i['uri']} (score {i['score']:.3g})" for i in card["images"]]
    st = card["stability"]
    if st:
        lines.append(f"span stability across folds: mean Jaccard {st['jaccard']:.2f} over {st['pairs']} fold "
                     f"pair{'s' * (st['pairs'] != 1)}, same top text in {st['same_top']:.0%} of them")
    lines.append("pruned in:" if card["groups"] else "pruned in no evaluated configuration")
    lines += [f"  {_group_text(g)}" for g in card["groups"]]
    return "\n".join(lines)


def find_card(conn, model: str, head: str, run_id: str | None = None) -> dict:
    """The card of ``head`` of ``model`` in ``run_id`` (default: the latest run that has it)."""
    condition = where([head], model, run_id)
    models = sorted(r["model"]
                    for r in query(conn, "SELECT model FROM judged_spans UNION SELECT model FROM ccs").to_pylist())
    if model not in models:
        raise HeadError(f"no results for model {model!r}; models: {', '.join(models) or 'none'}")
    cards = head_cards(conn, condition)
    if not cards:
        runs = sorted({r["run_id"] for r in canned_rows(conn, "span_verdicts", where(model=model))})
        heads = sorted({r["head_label"] for r in canned_rows(conn, "span_verdicts", where(model=model, run_id=run_id))},
                       key=parse_head_name)
        have = f"{len(heads)} heads, {heads[0]} .. {heads[-1]}" if heads else "none"
        raise HeadError(f"no head {head_name(*parse_head_name(head))} of {model}"
                        + (f" in run {run_id}" if run_id else "")
                        + f"; runs: {', '.join(runs) or 'none'}; heads: {have}")
    return cards[max(cards)][0]
