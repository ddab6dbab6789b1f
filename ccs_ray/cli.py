"""``ccs-ray``: argument parsing only; every command calls one function of the package."""

from __future__ import annotations

import argparse
import json
import sys

from .choices import PRECISIONS, SQL_FORMATS
from .errors import UserError


def _add_spec_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("spec", help="job spec (TOML path or fsspec URI), e.g. jobs/quickstart.toml")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a spec key (repeatable); the value is read as TOML, else as a string")
    p.add_argument("--results", help="results root URI (default ./results/<spec name>)")


def _load(args):
    from .spec import load_spec

    overrides = list(args.overrides) + ([f"results.root={json.dumps(args.results)}"] if args.results else [])
    return load_spec(args.spec, overrides)


def _cmd_run(args) -> int:
    spec = _load(args)  # a bad spec is reported before the engine (torch, Ray) is imported
    from .pipeline import run

    summary = run(spec, resume=args.resume, run_id=args.run_id, dry_run=args.dry_run, progress=not args.no_progress)
    print(json.dumps(summary, indent=2, default=str))
    return 0


def _cmd_submit(args) -> int:
    spec = _load(args)
    from .submit import submit

    return submit(spec, args.spec, args.overrides, args.address)


def _cmd_sql(args) -> int:
    from .analytics import main_sql

    return main_sql(args.query, args.results, args.format, args.output, args.canned)


def _cmd_report(args) -> int:
    from .report import build_report

    print(build_report(args.results, args.output))
    return 0


def _cmd_ratings(args) -> int:
    from .judges.human import import_human_ratings

    print(json.dumps(import_human_ratings(args.csv, args.results, args.run_id), indent=2, default=str))
    return 0


def _cmd_bench(args) -> int:
    import importlib

    options = {k: v for k, v in vars(args).items() if k not in ("command", "bench", "json", "func") and v is not None}
    figures = importlib.import_module(f"ccs_ray.bench.{args.bench}").run(**options)
    if args.json:
        print(json.dumps(figures))
    else:
        width = max(map(len, figures))
        for key, value in figures.items():
            print(f"{key:<{width}}  {value}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ccs-ray", description=__doc__.split(":")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="run every stage a job spec enables")
    _add_spec_args(p)
    p.add_argument("--resume", action="store_true", help="continue the latest (or --run-id) run, skipping finished work")
    p.add_argument("--run-id", help="run id to create or resume")
    p.add_argument("--dry-run", action="store_true", help="stop before paid judge calls; print their number and cost")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("submit", help="submit the same run as a Ray job to a cluster")
    _add_spec_args(p)
    p.add_argument("--address", required=True, help="Ray dashboard address, e.g. http://head:8265")
    p.set_defaults(func=_cmd_submit)

    p = sub.add_parser("sql", help="query the results with DuckDB (no QUERY: interactive)")
    p.add_argument("query", nargs="?", help="SQL over the views (see .views in interactive mode)")
    p.add_argument("--results", default="./results", help="results root (default ./results)")
    p.add_argument("--format", default="table", choices=SQL_FORMATS)
    p.add_argument("-o", "--output", help="write the result to this file")
    p.add_argument("--query", dest="canned", help="run a canned query from sql/queries by name")
    p.set_defaults(func=_cmd_sql)

    p = sub.add_parser("report", help="write the self-contained HTML report")
    p.add_argument("--results", required=True, help="results root")
    p.add_argument("-o", "--output", default="report.html")
    p.set_defaults(func=_cmd_report)

    p = sub.add_parser("ratings", help="import human span ratings (CSV) and compare judges with them")
    p.add_argument("csv", help="CSV with model, head_label, span_rank, aligned[, rater]")
    p.add_argument("--results", required=True)
    p.add_argument("--run-id", required=True)
    p.set_defaults(func=_cmd_ratings)

    p = sub.add_parser("bench", help="benchmarks (ratios measured side by side in one run)")
    benches = p.add_subparsers(dest="bench", required=True)
    b = benches.add_parser("decompose", help="plain encode_image vs decomposition + moments")
    b.add_argument("--model", default="ViT-B-32/none")
    b.add_argument("--precision", default="fp32", choices=PRECISIONS)
    b.add_argument("--batch-size", dest="batch_size", type=int, default=16)
    b.add_argument("--reps", type=int)
    b = benches.add_parser("scan", help="end-to-end scan vs decode-only and model-only throughput")
    b.add_argument("--model", default="ViT-B-32/none")
    b.add_argument("--images", type=int)
    b.add_argument("--batch-size", dest="batch_size", type=int)
    b = benches.add_parser("prune", help="prefix-shared ablation configurations vs each alone")
    b.add_argument("--model")
    b.add_argument("--configs", type=int)
    b.add_argument("--batch-size", dest="batch_size", type=int)
    b = benches.add_parser("judge", help="judge pool throughput against a rate-limited loopback server")
    b.add_argument("--rpm", type=float)
    b.add_argument("--seconds", type=float)
    for b in benches.choices.values():
        b.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (UserError, FileNotFoundError) as e:
        print(f"ccs-ray: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
