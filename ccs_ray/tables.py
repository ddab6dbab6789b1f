"""Every Parquet table of a run: schemas, writer and reader, in one place.

Layout under a results root (any fsspec URI)::

    ROOT/<table>/run_id=<run id>/model=<url-quoted model key>/part-<uuid>.parquet

so that ``read_parquet('ROOT/<table>/**/*.parquet', hive_partitioning = true)`` reads a table in
DuckDB. Every row also carries ``run_id`` and ``model`` as ordinary columns. Head columns are ``layer``
and ``head`` (0-based ints) plus ``head_label`` (``L11.H5``).

The reference tables (:data:`REFERENCE_TABLES`: the paper's published head sets, counts and figures,
:mod:`ccs_ray.reference`) belong to no run: they are ``ROOT/<table>/reference.parquet``, the same data in
every root, and their ``model`` is the paper's model key.

Every column name can be written unquoted in DuckDB SQL (none is a keyword DuckDB reserves). A column renamed
since an earlier version is in :data:`RENAMED`: files that still hold the old name read under the new one
(:func:`read_table`, :func:`renamed`, and the views of ``ccs_ray/sql/views.sql``).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from urllib.parse import quote

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from .files import read_parquet, remove, write_parquet

_KEY = [("run_id", pa.string()), ("model", pa.string())]
_HEAD = [("layer", pa.int32()), ("head", pa.int32()), ("head_label", pa.string())]
_ABLATION = [("ablation_id", pa.string()), ("strategy", pa.string()), ("seed", pa.int32())]


def _schema(*groups) -> pa.Schema:
    return pa.schema([pa.field(n, t) for group in groups for n, t in group])


SCHEMAS: dict[str, pa.Schema] = {
    # One row per (run, model): what ran, with what spec, and how it ended.
    "runs": _schema(_KEY, [
        ("spec_name", pa.string()), ("spec_json", pa.string()), ("stage", pa.string()),
        ("status", pa.string()), ("started_at", pa.timestamp("us", tz="UTC")),
        ("finished_at", pa.timestamp("us", tz="UTC")), ("n_images", pa.int64()), ("n_errors", pa.int64()),
        ("version", pa.string()),  # the ccs-ray version that wrote the row (its installed package metadata)
        ("error", pa.string()),  # why the run failed (status 'failed'), else null
        # wall seconds of each stage this invocation ran (stage name -> s; a stage already done on --resume: ~0)
        # and 'total' (the whole invocation, with start-up); null in files of earlier versions
        ("stage_seconds", pa.map_(pa.string(), pa.float64())),
        # per stage whose output this run copied from an earlier run instead of computing it (scan, spans, explain:
        # ccs_ray.stages.reuse), that run's id and results root; null when nothing was reused and in files of
        # earlier versions
        ("reused", pa.map_(pa.string(), pa.struct([("run_id", pa.string()), ("root", pa.string())]))),
    ]),
    # One row per (run, model, shard) of the scan's plan: fingerprint, fold, status 'planned' or 'done', and for a
    # done shard its counts, where (node, worker) and how long (seconds: read, decode and model). While a scan runs
    # a shard may have a 'planned' and a 'done' row in different parts; the view shards keeps the newest.
    "shards": _schema(_KEY, [
        ("shard_id", pa.string()), ("source", pa.string()), ("fingerprint", pa.string()), ("fold", pa.int32()),
        ("n_images", pa.int64()), ("n_errors", pa.int64()), ("status", pa.string()), ("node", pa.string()),
        ("worker", pa.string()), ("seconds", pa.float64()), ("finished_at", pa.timestamp("us", tz="UTC")),
    ]),
    # Where the merged HeadMoments of a model live (a URI inside the run's state folder is read under the results
    # root as it is now: runs.RunState.moments_uri), and over how many images.
    "moments": _schema(_KEY, [
        ("uri", pa.string()), ("convention", pa.string()), ("n_images", pa.int64()), ("n_heads", pa.int32()),
        ("embed_dim", pa.int32()), ("folds", pa.int32()), ("n_shards", pa.int32()),
    ]),
    # TextSpan output: per head and data subset ("all", "fold0", ...), the chosen texts in order. direction: the
    # unit vector [embed_dim] of the text as TextSpan chose it at that step (projected onto the data span and
    # deflated by the earlier choices), along which the stage explain ranks images. method: 'data' (from the scan's
    # moments) or 'weights' (from the head's weights alone, ccs_ray.circuits: subset 'all' only, variance in units
    # of an input variance of 1); null in files of earlier versions means 'data'.
    "spans": _schema(_KEY, _HEAD, [
        ("subset", pa.string()), ("rank", pa.int32()), ("text", pa.string()), ("variance", pa.float64()),
        ("variance_explained", pa.float64()), ("pool", pa.string()), ("svd_rank", pa.int32()),
        ("convention", pa.string()), ("direction", pa.list_(pa.float32())), ("method", pa.string()),
    ]),
    # One row per head whose data and weights spans were both computed (spans.method = 'both'; subset 'all'):
    # m texts compared from each (the top spans.m, fewer where either found fewer), jaccard of those texts (0..1),
    # mean_cosine of the m principal angles between the spans of their directions (0..1; 1: the same subspace).
    "span_agreement": _schema(_KEY, _HEAD, [
        ("m", pa.int32()), ("jaccard", pa.float64()), ("mean_cosine", pa.float64()),
    ]),
    # Top images per head (stage explain, over all data): for span_rank r (1..spans.m), the k images whose
    # contribution has the largest (direction top) or smallest (bottom) projection onto the span's direction
    # (spans.direction), score = x . d in embedding units; span_rank null: the head overall, the k images with
    # the largest contribution norm |x| (direction top). position 1..k, best first (ties: image_uri order).
    # text: the span's text (null overall); thumbnail: JPEG of the image as the model saw it (after
    # preprocessing), longest side explain.thumb_px. patch_map (top rows of a span only, else null; null in files of
    # earlier versions): where the head looks in the image, its contribution per image patch projected onto the
    # span's direction (ccs_ray.headmap.head_map), embedding units like score, row-major over the patch grid of
    # patch_grid rows (columns: len(patch_map) / patch_grid).
    "top_images": _schema(_KEY, _HEAD, [
        ("span_rank", pa.int32()), ("text", pa.string()), ("direction", pa.string()), ("position", pa.int32()),
        ("image_uri", pa.string()), ("shard", pa.string()), ("score", pa.float64()), ("thumbnail", pa.binary()),
        ("patch_map", pa.list_(pa.float32())), ("patch_grid", pa.int32()),
    ]),
    # The concept label each judge gave each head ("paper": from spans 1..5).
    "labels": _schema(_KEY, _HEAD, [
        ("judge", pa.string()), ("variant", pa.string()), ("label", pa.string()), ("label_normalized", pa.string()),
        ("heuristic", pa.bool_()), ("error", pa.string()),
    ]),
    # One row per judge x span: aligned 1/0, null with an error when no valid answer came back.
    "judgments": _schema(_KEY, _HEAD, [
        ("judge", pa.string()), ("variant", pa.string()), ("span_rank", pa.int32()), ("text", pa.string()),
        ("label", pa.string()), ("aligned", pa.int8()), ("heuristic", pa.bool_()), ("error", pa.string()),
    ]),
    # CCS per head, per judge and "combined" (majority vote); ccs_heldout judges spans 6..10.
    # label fidelity (ccs_ray.fidelity, no LLM; null without a label or head statistics): label_variance =
    # Var(X l) / tr C, the share (0..1) of the head's variance along its label l (the label's text embedding
    # projected onto the head's span, unit length); label_percentile (0..100): percent of pool texts whose share
    # is <= the label's (100: no pool text explains more).
    "ccs": _schema(_KEY, _HEAD, [
        ("judge", pa.string()), ("label", pa.string()), ("ccs", pa.int8()), ("ccs_heldout", pa.int8()),
        ("level", pa.string()), ("heuristic", pa.bool_()),
        ("label_variance", pa.float64()), ("label_percentile", pa.float64()),
    ]),
    # Which heads each ablation configuration removes. judge: whose CCS chose them (null: not chosen by CCS);
    # reference_model: the paper's model key the run is compared with (prune.reference_model, default the
    # model's own key); paper_strategy: the published strategy this configuration reproduces (none, high,
    # low, random, concept:<paper name>; null: none does); reason: why a strategy selected no head (e.g. "no
    # head with CCS = 5"; such a row has n_heads 0 and no evals or bias rows), null for a configuration evaluated.
    "ablations": _schema(_KEY, _ABLATION, [
        ("mode", pa.string()), ("k", pa.int32()), ("concept", pa.string()),
        ("heads", pa.list_(pa.string())), ("n_heads", pa.int32()),
        ("judge", pa.string()), ("reference_model", pa.string()), ("paper_strategy", pa.string()),
        ("reason", pa.string()),
    ]),
    # Metric values of each ablation on each dataset (accuracy in percent, recall in percent, ranks).
    "evals": _schema(_KEY, _ABLATION, [
        ("dataset", pa.string()), ("metric", pa.string()), ("value", pa.float64()), ("n", pa.int64()),
    ]),
    # MaxSkew@k per ablation, dataset, attribute and occupation (natural log ratio); combine: how the
    # occupation's templates were combined (embedding_mean, as published, or skew_mean); templates: the prompts.
    "bias": _schema(_KEY, _ABLATION, [
        ("dataset", pa.string()), ("attribute", pa.string()), ("occupation", pa.string()), ("k", pa.int32()),
        ("maxskew", pa.float64()), ("max_group", pa.string()),
        ("combine", pa.string()), ("templates", pa.list_(pa.string())),
    ]),
    # One row per single-head configuration (strategy single, ablation_id single:<mode>:L11.H5), dataset and
    # metric of evals: value, the unpruned model's value (baseline, ablation 'none') and change = value - baseline,
    # in the metric's units (percent points for accuracy and recall, ranks for MedR/MeanR); n: images or videos.
    "head_effects": _schema(_KEY, _HEAD, [
        ("ablation_id", pa.string()), ("mode", pa.string()), ("dataset", pa.string()), ("metric", pa.string()),
        ("value", pa.float64()), ("baseline", pa.float64()), ("change", pa.float64()), ("n", pa.int64()),
    ]),
    # Per-image correctness of each configuration on each classification dataset: metric top1 or top5, n images,
    # bits = numpy.packbits(hits, bitorder='little') of the [n] hit vector (1 = correct; images in the same
    # order for every configuration of a run, model and dataset), for paired comparisons between configurations.
    "correctness": _schema(_KEY, _ABLATION, [
        ("dataset", pa.string()), ("metric", pa.string()), ("n", pa.int64()), ("bits", pa.binary()),
    ]),
    # One row per call sent to a judge endpoint (attempt 0, 1, ... of a request), and one per request answered
    # without a call (attempt null): via = hit (answer cache), merged (an identical request in flight) or sent.
    # outcome: ok, unparseable, http_<status>, timeout, connection, unknown (its process died in flight: null tokens
    # and cost, it may have been billed; ccs_ray.judges.journal); for hits and merges: ok or error. final: the
    # row whose outcome the request kept; retried_after_timeout: sent after an earlier attempt timed out (the
    # server may have computed both). Tokens and cost (USD) as the endpoint reported them; hits cost nothing.
    "judge_calls": _schema(_KEY, [
        ("judge", pa.string()), ("endpoint", pa.string()), ("kind", pa.string()), ("head_label", pa.string()),
        ("span_rank", pa.int32()), ("cache_key", pa.string()), ("via", pa.string()), ("attempt", pa.int32()),
        ("outcome", pa.string()), ("final", pa.bool_()), ("retried_after_timeout", pa.bool_()),
        ("prompt_tokens", pa.int64()), ("completion_tokens", pa.int64()), ("latency_s", pa.float64()),
        ("cost_usd", pa.float64()), ("error", pa.string()), ("logged_at", pa.timestamp("us", tz="UTC")),
    ]),
    # Every bad input or failed item, with the stage that met it and why (images converted and kept: conversions).
    "errors": _schema(_KEY, [
        ("stage", pa.string()), ("source", pa.string()), ("item", pa.string()), ("reason", pa.string()),
        ("detail", pa.string()), ("logged_at", pa.timestamp("us", tz="UTC")),
    ]),
    # Every image scanned after a conversion to RGB, with its original mode (L, P, RGBA, CMYK, I;16...) and how
    # its transparency was converted (data.alpha, ccs_ray.sources.decode): 'dropped' (PIL's plain conversion, as
    # open_clip) or 'over #rrggbb' (composited over that colour); null for an image without transparency and in
    # files of earlier versions (which composited over white).
    "conversions": _schema(_KEY, [
        ("source", pa.string()), ("item", pa.string()), ("from_mode", pa.string()), ("alpha", pa.string()),
        ("logged_at", pa.timestamp("us", tz="UTC")),
    ]),
    # Reference: the head sets the paper pruned, one row per (model, set, head); head_set: high, low or
    # concept:<name>; position: the head's place in the published list.
    "paper_heads": pa.schema([
        ("model", pa.string()), ("head_set", pa.string()), ("concept", pa.string()), ("position", pa.int32()),
        *_HEAD, ("source", pa.string()),
    ]),
    # Reference: the paper's table of high / medium / low head counts per model.
    "paper_counts": pa.schema([("model", pa.string()), ("high", pa.int32()), ("medium", pa.int32()),
                               ("low", pa.int32())]),
    # Reference: one row per published figure; strategy none/high/low/random (mean over seeds)/concept:<name>;
    # approx: read from a small chart (about +-0.3); metric top1, R@1 or maxskew_sum@10:<attribute>.
    "paper_results": pa.schema([
        ("model", pa.string()), ("dataset", pa.string()), ("metric", pa.string()), ("strategy", pa.string()),
        ("value", pa.float64()), ("approx", pa.bool_()), ("source", pa.string()),
    ]),
}

TABLES = tuple(SCHEMAS)
# One line per table: what its rows are (``ccs-ray sql``'s .tables).
SUMMARIES: dict[str, str] = {
    "runs": "one row per run and model: spec, status, times and each stage's seconds",
    "shards": "one row per shard of the scan's plan: status, images, errors, node and seconds",
    "moments": "where each model's merged head moments are, over how many images",
    "spans": "TextSpan: each head's chosen texts per data subset, with their directions",
    "span_agreement": "data against weights spans per head: Jaccard of the texts, mean cosine",
    "top_images": "per head and span, the images projecting most and least onto it, with thumbnails",
    "labels": "the concept label each judge gave each head",
    "judgments": "per judge and span: aligned with the head's label (1 or 0), or an error",
    "ccs": "CCS per head and judge ('combined': majority vote), its level and label fidelity",
    "ablations": "the heads each ablation configuration removes (or why none)",
    "evals": "each configuration's metric values per dataset (accuracy, recall, ranks)",
    "bias": "MaxSkew@k per configuration, dataset, attribute and occupation",
    "head_effects": "per head ablated alone: each metric's change from the unpruned model",
    "correctness": "per configuration and dataset, which images it classified correctly (packed bits)",
    "judge_calls": "every call to a judge endpoint or answer from the cache: outcome, tokens, cost",
    "errors": "every bad input or failed item, with the stage that met it and why",
    "conversions": "every image scanned after a conversion to RGB: its original mode, how its alpha was handled",
    "paper_heads": "reference: the head sets the paper pruned",
    "paper_counts": "reference: the paper's high, medium and low head counts per model",
    "paper_results": "reference: the paper's published figures",
}
REFERENCE_TABLES = ("paper_heads", "paper_counts", "paper_results")  # written whole, not per run and model
# table -> {column name in files of earlier versions: its name now}. ccs-ray 0.2.0 and earlier named logged_at (when
# the row's call, error or conversion was recorded) `at`, a word DuckDB 2 reserves.
RENAMED: dict[str, dict[str, str]] = {table: {"at": "logged_at"} for table in ("judge_calls", "errors", "conversions")}


def partition_path(root: str, table: str, run_id: str, model: str) -> str:
    """Folder of one (table, run, model) partition."""
    return f"{root.rstrip('/')}/{table}/run_id={quote(run_id, safe='')}/model={quote(model, safe='')}"


def to_arrow(table: str, rows: Iterable[Mapping] | pa.Table) -> pa.Table:
    """Rows (dicts) or a table -> a pyarrow Table cast to the table's schema; unknown columns are an error."""
    schema = _schema_of(table)
    if isinstance(rows, pa.Table):
        extra = set(rows.column_names) - set(schema.names)
        if extra:
            raise ValueError(f"table {table!r} has no columns {sorted(extra)}; columns: {schema.names}")
        cols = {n: rows[n] if n in rows.column_names else pa.nulls(rows.num_rows, schema.field(n).type)
                for n in schema.names}
        return pa.table(cols).cast(schema)
    rows = list(rows)
    for row in rows:
        extra = set(row) - set(schema.names)
        if extra:
            raise ValueError(f"table {table!r} has no columns {sorted(extra)}; columns: {schema.names}")
    return pa.Table.from_pylist(rows, schema=schema)


def write_table(root: str, table: str, rows, run_id: str, model: str, name: str | None = None) -> str | None:
    """Write rows into the (run, model) partition of ``table``; ``run_id`` and ``model`` are filled in.

    ``name`` gives the file a stable name (re-writing it replaces it, which makes stages idempotent);
    otherwise a unique part name is used. Returns the file URI, or None when there were no rows.
    """
    data = to_arrow(table, rows)
    if data.num_rows == 0:
        return None
    data = data.set_column(0, "run_id", pa.array([run_id] * data.num_rows, pa.string()))
    data = data.set_column(1, "model", pa.array([model] * data.num_rows, pa.string()))
    uri = f"{partition_path(root, table, run_id, model)}/{name or 'part-' + uuid.uuid4().hex}.parquet"
    write_parquet(uri, data)
    return uri


def write_empty_tables(root: str, run_id: str, model: str) -> list[str]:
    """A zero-row part in the (run, model) partition of every table that has no file under ``root`` yet, so that
    every view of ``views.sql`` opens in plain DuckDB too (a pattern with no files is an error there).
    Returns the tables written."""
    written = []
    for table, schema in SCHEMAS.items():
        if table in REFERENCE_TABLES:
            continue
        fs, path = fsspec.core.url_to_fs(f"{root.rstrip('/')}/{table}")
        if not (fs.exists(path) and fs.glob(f"{path}/**/*.parquet")):
            write_parquet(f"{partition_path(root, table, run_id, model)}/empty.parquet", schema.empty_table())
            written.append(table)
    return written


def replace_file(root: str, table: str, rows, run_id: str, model: str, name: str) -> None:
    """Write ``rows`` as the file ``name`` of a partition, replacing an earlier one (removed when no rows):
    a stage that re-runs replaces its own rows and never duplicates them."""
    if write_table(root, table, rows, run_id, model, name=name) is None:
        remove(f"{partition_path(root, table, run_id, model)}/{name}.parquet")


def remove_parts(root: str, table: str, run_id: str, model: str, prefixes: tuple[str, ...]) -> int:
    """Remove the files of a (table, run, model) partition whose names start with one of ``prefixes`` (a stage's
    parts, once one file replaces them); returns how many."""
    fs, path = fsspec.core.url_to_fs(partition_path(root, table, run_id, model))
    parts = [p for p in (fs.glob(f"{path}/*.parquet") if fs.exists(path) else [])
             if p.rsplit("/", 1)[-1].startswith(prefixes)]
    for p in parts:
        fs.rm(p)
    return len(parts)


def read_table(root: str, table: str, run_id: str | None = None, model: str | None = None,
               name: str | None = None) -> pa.Table:
    """All rows of ``table`` under ``root`` (optionally one run and/or model, and only the files ``name``, as
    :func:`write_table` named them), empty with the schema if none.

    Files written by an earlier version read too: a column they lack comes back as nulls, a column renamed since
    (:data:`RENAMED`) under its new name, a column this version no longer has is dropped. A part cut short or not
    Parquet is a :class:`~ccs_ray.files.IncompleteFileError` that names it (temporary files of writes in progress
    never match).
    """
    schema = _schema_of(table)
    if table in REFERENCE_TABLES:
        raise ValueError(f"{table} is reference data, the same in every root: ccs_ray.reference.reference_tables()")
    fs, path = fsspec.core.url_to_fs(f"{root.rstrip('/')}/{table}")
    runs = quote(run_id, safe="") if run_id else "*"
    models = quote(model, safe="") if model else "*"
    pattern = f"{path}/run_id={runs}/model={models}/{name or '*'}.parquet"
    parts = []
    for file in sorted(fs.glob(pattern)):
        data = read_parquet(fs, file)
        data = data.rename_columns([RENAMED.get(table, {}).get(n, n) for n in data.column_names])
        parts.append(to_arrow(table, data.select([n for n in data.column_names if n in schema.names])))
    return pa.concat_tables(parts) if parts else schema.empty_table()


def renamed(table: str, row: Mapping) -> dict:
    """A row of ``table`` as an earlier version recorded it, with each column renamed since (:data:`RENAMED`)
    under its new name."""
    names = RENAMED.get(table, {})
    return {names.get(k, k): v for k, v in row.items()}


def has_rows(root: str, table: str, run_id: str, model: str) -> bool:
    """Whether ``table`` holds any row of ``model`` in run ``run_id`` (read from the Parquet footers only)."""
    fs, path = fsspec.core.url_to_fs(partition_path(root, table, run_id, model))
    for file in sorted(fs.glob(f"{path}/*.parquet")):
        with fs.open(file, "rb") as f:
            if pq.ParquetFile(f).metadata.num_rows:
                return True
    return False


def _schema_of(table: str) -> pa.Schema:
    if table not in SCHEMAS:
        raise ValueError(f"unknown table {table!r}; tables: {', '.join(TABLES)}")
    return SCHEMAS[table]
