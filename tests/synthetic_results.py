"""A realistic synthetic results root, written through ``ccs_ray.tables.write_table``.

Two models (last 4 layers x 12 heads), three judges plus their majority vote, TextSpan spans for
"all" (ranks 1..10) and two folds, the top images of every head (overall and per span, top and bottom, with
photo-like JPEG thumbnails), ablations named as ``ccs_ray.ablate`` names them (none, high, low, equal:high/low,
random:s0..4, concept:location/animals, the sweep's three series, and concept:vehicles, which selected no head
and says why), zero-shot and retrieval evals and per-occupation MaxSkew rows, one row per configuration (random
seeds apart) as the prune stage writes them (no summary rows: the SQL views summarise), judge calls and errors.
Labels are normalised as the judge stage does (``label_normalized``; the combined judge's label is the most common
normalised label), and several are concept family words (location, animals, colors, objects), so every model's
layers have label families. The tables and columns of later versions are written where ``ccs_ray.tables.SCHEMAS``
has them: ``ccs.label_variance`` / ``label_percentile`` (random), ``spans.method`` ('data'), ``span_agreement``
(per head: Jaccard of the data top-m texts with a random weights top-m, a random mean cosine), ``head_effects``
(per head, ablation ``single:zero:<head>``, per top-1 dataset: a change that grows with the head's CCS; no evals
rows of the single strategy) and ``correctness`` (per configuration and top-1 dataset: the packed hit vector of
:data:`N_IMAGES` images whose mean is the evals top-1 value exactly; each configuration's hits are the unpruned
model's with a few hits and misses exchanged, so paired differences are realistic).
Some texts, labels, image URIs and shard names are HTML, to test escaping. :func:`write_failed_run` adds a
failed run; ``write_results(judge_error=...)`` writes a run whose judges all failed (every label and judgment an
error, no CCS, the errors rows the judge stage writes, no ablations). Several calls with the same ``root`` and
other ``models`` (and ``layers``) write one multi-model run.
:func:`write_results` returns every row written (with ``run_id`` and ``model``), so tests can
compute the expected answers independently of DuckDB.
"""

from __future__ import annotations

import functools
import io
import random
from datetime import UTC, datetime, timedelta

import numpy as np
from PIL import Image

from ccs_ray.ablate import Ablation
from ccs_ray.heads import head_name
from ccs_ray.scores import most_common_label, normalize_label
from ccs_ray.tables import SCHEMAS, write_table

MODELS = ("ViT-B-32/openai", "ViT-B-16/laion2b_s34b_b88k")
RUN_ID = "run-20250101"
LAYERS = (8, 9, 10, 11)
N_HEADS = 12
JUDGES = ("claude-sonnet", "gemini-pro", "gpt-4o")
SEEDS = 5
CONCEPTS = ("location", "animals")
DATASETS = (("cifar10", "top1"), ("cifar100", "top1"), ("msrvtt", "R@1"), ("msrvtt", "R@5"), ("msrvtt", "R@10"),
            ("msrvtt", "MedR"))
OCCUPATIONS = ("doctor", "nurse", "pilot", "chef", "teacher", "lawyer")
HOSTILE_TEXT = "<script>alert(1)</script>"
HOSTILE_LABEL = 'tags<b>&"quotes\''
HOSTILE_URI = '"><img src=x onerror="document.title=\'pwned\'">.jpg'  # an image URI (model 0, L8.H0, span 1, top 1)
HOSTILE_SHARD = "shard-'><script>document.title='pwned'</script>.tar"  # the shard of model 0, L8.H1's images
HOSTILE_ERROR = "RuntimeError: unit <b>failed</b> <script>document.title='pwned'</script>"
M_SPANS = 5  # spans a CCS counts
K_IMAGES = 8  # top images per span and overall
THUMB_PX = 128  # the thumbnails' side, as the explain stage writes them (explain.thumb_px)
N_THUMBS = 64  # distinct photo-like thumbnails the top images draw from
SWEEP_K = 3
SWEEP_SEEDS = 2
EMPTY_CONCEPT = ("concept:vehicles", "no head's label is one of the vehicles words")  # selected no head
FAILED_RUN_ID = "run-20250102"
POOL = [f"a photo of {w}" for w in (
    "a beach", "a dog", "a cat", "snow", "a red car", "Paris", "a forest", "three birds", "a crowd",
    "a kitchen", "a violin", "a map of Asia", "stripes", "a bridge", "a desert", "a blue sky",
    "two horses", "a clock", "a market in Tokyo", "a wooden table", "a surfer", "a mountain lake")]
LABELS = ("location", "animals", "colors", "objects", "counting", "texture")
T0 = datetime(2025, 1, 1, tzinfo=UTC)
N_IMAGES = 1000  # images of every evals row (evals.n, correctness.n)
SWAPS = 30  # hits exchanged for misses (and back) between a configuration's hit vector and the unpruned model's


def _columns(table: str, **values) -> dict:
    """The ``values`` whose column ``table`` has in this version's schema (none for a table it lacks)."""
    names = SCHEMAS[table].names if table in SCHEMAS else ()
    return {k: v for k, v in values.items() if k in names}


@functools.cache
def thumbnails() -> tuple[bytes, ...]:
    """``N_THUMBS`` deterministic photo-like JPEGs (THUMB_PX square; every fourth 3:4 landscape): a smooth colour
    field, a grain texture and sensor noise, which compress like downscaled photographs, not like flat colours."""
    out = []
    for i in range(N_THUMBS):
        rng = np.random.default_rng(1000 + i)
        size = (THUMB_PX, THUMB_PX * 3 // 4) if i % 4 == 3 else (THUMB_PX, THUMB_PX)
        field = Image.fromarray(np.uint8(np.clip(128 + 50 * rng.normal(0, 1, (6, 6, 3)), 0, 255)))
        grain = Image.fromarray(np.uint8(np.clip(128 + 60 * rng.normal(0, 1, (24, 24)), 0, 255)))
        field, grain = field.resize(size, Image.BICUBIC), grain.resize(size, Image.BICUBIC)
        pixels = (np.asarray(field, float) + (np.asarray(grain, float)[..., None] - 128) * 0.5
                  + rng.normal(0, 6, (size[1], size[0], 3)))
        buf = io.BytesIO()
        Image.fromarray(np.uint8(np.clip(pixels, 0, 255))).save(buf, "JPEG", quality=90)
        out.append(buf.getvalue())
    return tuple(out)


def _top_images(rng, m: int, name: str, layer: int, head: int, texts: list[str], k: int) -> list[dict]:
    """A head's top_images rows: per span rank 1..M_SPANS k top and k bottom images, and k overall top images."""
    rows = []
    for span_rank, direction in [(None, "top")] + [(r, d) for r in range(1, M_SPANS + 1) for d in ("top", "bottom")]:
        scores = sorted((rng.uniform(0.05, 2.0) for _ in range(k)), reverse=direction == "top")
        for position, score in enumerate(scores, 1):
            image = rng.randrange(100_000)
            shard = HOSTILE_SHARD if (m, name) == (0, "L8.H1") else f"laion-part-{image % 97:05d}.tar"
            uri = f"s3://images/laion/{shard}/{image:09d}.jpg"
            if (m, name, span_rank, direction, position) == (0, "L8.H0", 1, "top", 1):
                uri = HOSTILE_URI
            rows.append(dict(layer=layer, head=head, head_label=name, span_rank=span_rank,
                             text=None if span_rank is None else texts[span_rank - 1], direction=direction,
                             position=position, image_uri=uri, shard=shard,
                             score=score if direction == "top" else -score,
                             thumbnail=thumbnails()[image % N_THUMBS]))
    return rows


def write_results(root: str, seed: int = 0, heuristic: tuple[str, ...] = (), models: tuple[str, ...] = MODELS,
                  layers: tuple[int, ...] = LAYERS, n_heads: int = N_HEADS, k_images: int = K_IMAGES,
                  judge_error: str | None = None) -> dict[str, list[dict]]:
    """Write the synthetic results of ``models`` (``layers`` x ``n_heads`` heads, ``k_images`` top images per
    span and overall) under ``root``; returns table -> rows written. The judges of the models in ``heuristic``
    are flagged as the offline heuristic judge (labels, judgments, ccs). ``judge_error``: every judge request
    failed with this error, so no head has a CCS."""
    rng = random.Random(seed)
    extra = random.Random(seed + 7919)  # the later versions' columns and tables: the other rows stay as they were
    written: dict[str, list[dict]] = {}

    def put(table: str, rows: list[dict], model: str, name: str | None = None) -> None:
        if table not in SCHEMAS or not rows:
            return
        write_table(root, table, rows, RUN_ID, model, name=name)
        written.setdefault(table, []).extend({**r, "run_id": RUN_ID, "model": model} for r in rows)

    for m, model in enumerate(models):
        heads = [(l, h, head_name(l, h)) for l in layers for h in range(n_heads)]
        put("runs", [dict(spec_name="synthetic", stage="report", status="done", started_at=T0,
                          finished_at=T0 + timedelta(minutes=5), n_images=1536, n_errors=2, version="0.1.0")], model)
        put("shards", [dict(shard_id=f"s{i:03d}", source="probe://", fingerprint=f"f{i}", fold=i % 2,
                            n_images=256, n_errors=int(i == 3), status="done", node="node0", worker="w0",
                            seconds=1.5 + i, finished_at=T0) for i in range(6)], model)
        put("moments", [dict(uri=f"{root}/moments-{m}", convention="centered", n_images=1536, n_heads=48,
                             embed_dim=512, folds=2, n_shards=6)], model)
        put("errors", [dict(stage="scan", source="probe://", item=f"img{i}.jpg", reason="decode",
                            detail="truncated JPEG", logged_at=T0) for i in range(2)], model)
        spans, labels, judgments, ccs, calls, top_images, agreement = [], [], [], [], [], [], []
        for l, h, name in heads:
            texts = rng.sample(POOL, 10)
            if (m, l, h) == (0, 8, 0):
                texts[0] = HOSTILE_TEXT
            fold0 = texts[:5]
            fold1 = rng.sample(texts[:5], rng.randint(1, 5))
            fold1 += [t for t in POOL if t not in fold1 and t not in fold0][:5 - len(fold1)]
            rng.shuffle(fold1)
            for subset, chosen in (("all", texts), ("fold0", fold0), ("fold1", fold1)):
                spans += [dict(layer=l, head=h, head_label=name, subset=subset, rank=r, text=t,
                               variance=1.0 / r, variance_explained=0.1 / r, pool="synthetic",
                               svd_rank=80, convention="centered", **_columns("spans", method="data"))
                          for r, t in enumerate(chosen, 1)]
            weights = extra.sample(POOL, M_SPANS)
            agreement.append(dict(layer=l, head=h, head_label=name, m=M_SPANS,
                                  jaccard=len({*texts[:M_SPANS]} & {*weights}) / len({*texts[:M_SPANS], *weights}),
                                  mean_cosine=extra.uniform(0.3, 1.0)))
            top_images += _top_images(rng, m, name, l, h, texts, k_images)
            truth = [int(rng.random() < rng.choice((0.1, 0.5, 0.95))) for _ in range(10)]
            votes = {}
            for judge in JUDGES:
                label = HOSTILE_LABEL if (m, l, h, judge) == (0, 9, 1, "gpt-4o") else rng.choice(LABELS)
                labels.append(dict(layer=l, head=h, head_label=name, judge=judge, variant="paper", label=label,
                                   label_normalized=normalize_label(label), heuristic=False, error=None))
                aligned = [t if rng.random() > 0.15 else 1 - t for t in truth]
                failed = (m, l, h, judge) == (1, 10, 2, "gemini-pro")
                for r in range(M_SPANS):
                    judgments.append(dict(layer=l, head=h, head_label=name, judge=judge, variant="paper",
                                          span_rank=r + 1, text=texts[r], label=label,
                                          aligned=None if failed and r == 0 else aligned[r], heuristic=False,
                                          error="timeout" if failed and r == 0 else None))
                votes[judge] = aligned
                ccs.append(dict(layer=l, head=h, head_label=name, judge=judge, label=label,
                                ccs=sum(aligned[:5]), ccs_heldout=sum(aligned[5:]), heuristic=False))
                for r in (None, 1, 2, 3, 4, 5):
                    cached = rng.random() < 0.2
                    p_tok, c_tok = rng.randint(200, 400), rng.randint(1, 20)
                    latency = 0.0 if cached else rng.uniform(0.2, 3.0)
                    attempts = [None] if cached else list(range(rng.randint(0, 1) + 1))  # a 429 first, or not
                    request = dict(judge=judge, endpoint=f"http://127.0.0.1:9/{judge}", kind="label" if r is None
                                   else "judge", head_label=name, span_rank=r, cache_key=f"{m}{name}{judge}{r}",
                                   retried_after_timeout=False, error=None, logged_at=T0)
                    for a in attempts:
                        final = a == attempts[-1]
                        calls.append(dict(request, via="hit" if cached else "sent", attempt=a, final=final,
                                          outcome="ok" if final else "http_429", prompt_tokens=p_tok if final else 0,
                                          completion_tokens=c_tok if final else 0, latency_s=latency,
                                          cost_usd=(p_tok * 2.5 + c_tok * 10) / 1e6 if final and not cached else 0.0))
            majority = [int(sum(votes[j][r] for j in JUDGES) * 2 > len(JUDGES)) for r in range(10)]
            label = most_common_label([x["label"] for x in labels[-len(JUDGES):]])
            ccs.append(dict(layer=l, head=h, head_label=name, judge="combined", label=label,
                            ccs=sum(majority[:5]), ccs_heldout=sum(majority[5:]), heuristic=False))
            judgments += [dict(layer=l, head=h, head_label=name, judge="combined", variant="paper", span_rank=r + 1,
                               text=texts[r], label=label, aligned=majority[r], heuristic=False,
                               error=None) for r in range(M_SPANS)]
        for row in ccs:
            row["level"] = "high" if row["ccs"] == 5 else "low" if row["ccs"] <= 1 else "medium"
            row.update(_columns("ccs", label_variance=extra.uniform(0.001, 0.2),
                                label_percentile=extra.uniform(0, 100)))
        for row in (*labels, *judgments, *ccs):
            row["heuristic"] = model in heuristic
        if judge_error:
            _fail_judges(labels, judgments, ccs, judge_error)
            put("errors", [dict(stage="judge", source=c["judge"], item=f"{c['head_label']} judge {c['span_rank']}",
                                reason="judge request failed", detail=judge_error, logged_at=T0)
                           for c in calls if c["span_rank"] is not None], model, name="judge")
        put("spans", spans, model)
        put("span_agreement", agreement, model)
        put("top_images", top_images, model)
        put("labels", labels, model)
        for judge in (*JUDGES, "combined"):  # one file per judge, as a judge pool would write them
            put("judgments", [j for j in judgments if j["judge"] == judge], model, name=judge)
            put("judge_calls", [c for c in calls if c["judge"] == judge], model)
        put("ccs", ccs, model)
        if judge_error:
            continue
        _write_ablations(put, rng, model, m, [c for c in ccs if c["judge"] == "combined"], heads,
                         extra, np.random.default_rng([seed, m]))
    return written


def _fail_judges(labels: list[dict], judgments: list[dict], ccs: list[dict], error: str) -> None:
    """Turn the rows into those of judges whose every request failed with ``error``, as the judge stage writes
    them: no label, every judgment null with the error (the majority vote's: no valid vote), no CCS."""
    for row in labels:
        row.update(label=None, label_normalized=None, error=error)
    for row in judgments:
        row.update(label=None, aligned=None, error="no valid vote" if row["judge"] == "combined" else error)
    for row in ccs:
        row.update(label=None, ccs=None, ccs_heldout=None, level="unscored", label_variance=None,
                   label_percentile=None)


def _hits(gen: np.random.Generator, base: np.ndarray | None, k: int) -> np.ndarray:
    """A hit vector of N_IMAGES images with exactly ``k`` hits: random for the unpruned model (``base`` None), else
    ``base`` with SWAPS hits and misses exchanged, then hits added or removed at random to make ``k``."""
    if base is None:
        hits = np.zeros(N_IMAGES, bool)
        hits[gen.choice(N_IMAGES, k, replace=False)] = True
        return hits
    hits = base.copy()
    ones, zeros = np.flatnonzero(hits), np.flatnonzero(~hits)
    swaps = min(SWAPS, len(ones), len(zeros))
    hits[gen.choice(ones, swaps, replace=False)] = False
    hits[gen.choice(zeros, swaps, replace=False)] = True
    more = k - int(hits.sum())
    hits[gen.choice(np.flatnonzero(hits != (more > 0)), abs(more), replace=False)] = more > 0
    return hits


def _write_ablations(put, rng, model, m, combined, heads, extra_rng, gen) -> None:
    high = [c["head_label"] for c in combined if c["ccs"] == 5]
    low = [c["head_label"] for c in combined if c["ccs"] <= 1]
    others = [n for _, _, n in heads if n not in high]
    n_equal = min(len(high), len(low))
    configs = [("none", "none", None, None, []), ("high", "high", None, None, high), ("low", "low", None, None, low),
               ("equal:high", "equal", None, "high", high[:n_equal]),
               ("equal:low", "equal", None, "low", low[:n_equal])]
    configs += [(f"random:s{s}", "random", s, None, rng.sample(others, len(high))) for s in range(SEEDS)]
    configs += [(f"concept:{c}", "concept", None, c, rng.sample(others, 3)) for c in CONCEPTS]
    by_ccs = [c["head_label"] for c in sorted(combined, key=lambda c: -c["ccs"])]
    configs += [(f"sweep:k{k}", "sweep", None, None, by_ccs[:k]) for k in range(SWEEP_K + 1)]
    configs += [(f"sweep-low:k{k}", "sweep-low", None, None, by_ccs[::-1][:k]) for k in range(1, SWEEP_K + 1)]
    for s in range(SWEEP_SEEDS):
        order = rng.sample(by_ccs, SWEEP_K)
        configs += [(f"sweep-random:k{k}:s{s}", "sweep-random", s, None, order[:k]) for k in range(1, SWEEP_K + 1)]
    ablations, evals, bias, correctness, unpruned = [], [], [], [], {}
    ablations.append(dict(ablation_id=EMPTY_CONCEPT[0], strategy="concept", seed=None, mode="zero", k=0,
                          concept=EMPTY_CONCEPT[0].split(":")[1], heads=[], n_heads=0, judge="combined",
                          reference_model=model, paper_strategy=None, reason=EMPTY_CONCEPT[1]))
    for ablation_id, strategy, seed, concept, pruned in configs:
        key = dict(ablation_id=ablation_id, strategy=strategy, seed=seed)
        ablations.append(dict(key, mode="zero", k=len(pruned), concept=concept, heads=pruned, n_heads=len(pruned),
                              judge=None if strategy == "none" else "combined", reference_model=model,
                              paper_strategy=Ablation(ablation_id, strategy, concept=concept).paper_strategy))
        per_head = {"sweep": 4, "sweep-low": 0.5, "sweep-random": 2}.get(strategy, 0) * len(pruned)
        hurt = ({"none": 0, "high": 14, "low": 2, "random": 6, "concept": 4, "equal": 5}.get(strategy, 0) + per_head
                ) * (1 + 0.3 * m)
        for d, (dataset, metric) in enumerate(DATASETS):
            extra = 9.0 if (concept, dataset) == ("location", "cifar100") else 0.0
            value = (80 - 10 * min(d, 2) + 8 * max(d - 2, 0) - hurt - extra
                     + rng.gauss(0, 1.5 if seed is not None else 0.3))
            if metric == "top1":  # a share of N_IMAGES hits, which correctness holds image by image
                hits = _hits(gen, unpruned.get(dataset), min(max(round(value * N_IMAGES / 100), 0), N_IMAGES))
                unpruned.setdefault(dataset, hits)
                value = 100 * int(hits.sum()) / N_IMAGES
                correctness.append(dict(key, dataset=dataset, metric=metric, n=N_IMAGES,
                                        bits=np.packbits(hits, bitorder="little").tobytes()))
            evals.append(dict(key, dataset=dataset, metric=metric, n=N_IMAGES,
                              value=2 + hurt / 4 + rng.random() if metric == "MedR" else value))
        for attribute, groups in (("race", 6), ("gender", 2)):
            for occupation in OCCUPATIONS:
                bias.append(dict(key, dataset="fairface", attribute=attribute, occupation=occupation, k=10,
                                 maxskew=rng.uniform(0.1, 1.0) + 0.05 * hurt,
                                 max_group=f"group{rng.randrange(groups)}"))
    put("ablations", ablations, model)
    put("evals", evals, model)
    put("bias", bias, model)
    put("correctness", correctness, model)
    baseline = {e["dataset"]: e["value"] for e in evals if e["ablation_id"] == "none" and e["metric"] == "top1"}
    effects = []
    for c in combined:  # each head alone: removing a higher-CCS head costs more accuracy, with noise
        for dataset, value in baseline.items():
            change = -(0.3 * c["ccs"] + extra_rng.gauss(0, 0.5)) * (1 + 0.3 * m)
            effects.append(dict(layer=c["layer"], head=c["head"], head_label=c["head_label"],
                                ablation_id=f"single:zero:{c['head_label']}", mode="zero", dataset=dataset,
                                metric="top1", value=value + change, baseline=value, change=change, n=N_IMAGES))
    put("head_effects", effects, model)


def write_failed_run(root: str, model: str = MODELS[0]) -> dict:
    """A later run of ``model`` that failed in the prune stage (its error holds HTML); returns its runs row."""
    row = dict(spec_name="synthetic", stage="prune", status="failed", started_at=T0 + timedelta(days=1),
               finished_at=T0 + timedelta(days=1, minutes=2), n_images=1536, n_errors=0, version="0.1.0",
               error=HOSTILE_ERROR)
    write_table(root, "runs", [row], FAILED_RUN_ID, model)
    return {**row, "run_id": FAILED_RUN_ID, "model": model}


def write_paper_figures(root: str, shift: float = 0.0, run_id: str = "run-paper") -> list[dict]:
    """A results root whose figures are the paper's published ones plus ``shift``, as the prune stage would write
    them for ``prune.strategies = [paper-high, paper-low, paper-random, paper-concept:<each>]`` on each paper
    model: per published figure the configuration's evals row (top1, R@1; paper-random: three seeds whose mean is
    the figure) or bias rows (104 occupations whose MaxSkew sums to the figure). Returns the published rows."""
    from ccs_ray.reference import paper_reference

    published = paper_reference().results.to_pylist()
    for model in dict.fromkeys(r["model"] for r in published):
        rows = [r for r in published if r["model"] == model]
        configs = {"none": [("none", None)], "high": [("paper-high", None)], "low": [("paper-low", None)],
                   "random": [(f"paper-random:s{s}", s) for s in range(3)]}
        ablations, evals, bias = [], [], []
        for strategy in dict.fromkeys(r["strategy"] for r in rows):
            for ablation_id, seed in configs.get(strategy, [(f"paper-{strategy}", None)]):  # paper-concept:<name>
                concept = strategy.split(":", 1)[1] if strategy.startswith("concept:") else None
                ablations.append(dict(ablation_id=ablation_id, strategy=ablation_id.split(":")[0], seed=seed,
                                      mode="zero", k=1, concept=concept, heads=["L11.H0"], n_heads=1,
                                      reference_model=model, paper_strategy=strategy))
                spread = (seed - 1) * 0.5 if seed is not None else 0.0  # seeds 0, 1, 2: -0.5, 0, +0.5
                for r in (r for r in rows if r["strategy"] == strategy):
                    key = dict(ablation_id=ablation_id, strategy=ablations[-1]["strategy"], seed=seed,
                               dataset=r["dataset"])
                    value = r["value"] + shift + spread
                    if r["metric"].startswith("maxskew_sum@"):
                        k, attribute = r["metric"].removeprefix("maxskew_sum@").split(":")
                        bias += [dict(key, attribute=attribute, occupation=f"occupation {o}", k=int(k),
                                      maxskew=value / 104, max_group="g", combine="embedding_mean") for o in range(104)]
                    else:
                        evals.append(dict(key, metric=r["metric"], value=value, n=1000))
        for table, data in (("ablations", ablations), ("evals", evals), ("bias", bias)):
            write_table(root, table, data, run_id, model)
    return published
