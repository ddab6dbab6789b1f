"""``ccs-ray``: argument parsing only; every command calls one function of the package."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys

from . import __version__, jsonout
from .choices import CONVENTIONS, PRECISIONS, SQL_FORMATS
from .errors import UserError
from .failures import command_line, interrupt_name, interrupt_status, raise_on_sigterm
from .threads import passive_waits

#: The file ``ccs-ray sql --views-file ROOT`` writes unless given ``-o``.
VIEWS_FILE = "views.sql"


def _add_spec_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("spec", help="job spec (TOML path or fsspec URI), e.g. jobs/quickstart.toml")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a spec key (repeatable); the value is read as TOML, else as a string")
    p.add_argument("--model", dest="models", action="append", default=[], metavar="KEY",
                   help="analyse this model key (repeatable); shorthand for --set models.keys=[...]")
    p.add_argument("--results", help="results root URI (default ./results/<spec name>)")
    p.add_argument("--dry-run", action="store_true",
                   help="check everything and print the plan (models, heads, images, actors, judge calls and cost); "
                        "computes and writes nothing")
    p.add_argument("--json", action="store_true", help="print the plan or the run's summary as one JSON object")


def _overrides(args) -> list[str]:
    """``--set`` items, then ``--model`` keys as ``models.keys`` (they win over a ``--set models.keys``)."""
    return list(args.overrides) + ([f"models.keys={json.dumps(args.models)}"] if args.models else [])


def _load(args):
    from .spec import load_spec

    results = [f"results.root={json.dumps(args.results)}"] if args.results else []
    return load_spec(args.spec, _overrides(args) + results)


def _stdout_for_json(as_json: bool):
    """While a command that prints one JSON object computes, everything else written to stdout (Ray's cluster
    warnings among it) goes to stderr, so that stdout holds the JSON alone."""
    return contextlib.redirect_stdout(sys.stderr) if as_json else contextlib.nullcontext()


def _print_plan(plan, as_json: bool) -> int:
    print(jsonout.dumps(plan.to_dict()) if as_json else plan)
    return 0


def _resume_command(args, run_id: str, root: str, resume: bool = True) -> str:
    """The shell-quoted ``ccs-ray run`` that continues run ``run_id`` under ``root`` (with ``resume``; else that
    starts it afresh) with this command's spec and overrides."""
    if "://" not in root:
        root = os.path.abspath(root)
    overrides = [a for o in args.overrides for a in ("--set", o)] + [a for m in args.models for a in ("--model", m)]
    again = ["--resume", "--run-id", run_id] if resume else []
    return command_line("run", args.spec, *overrides, "--results", root, *again)


def _cmd_run(args) -> int:
    spec = _load(args)
    from .preflight import preflight

    # the spec phase loads no torch, open_clip, scipy or Ray: a mistake in the spec is reported in a second
    plan = preflight(spec, resume=args.resume, run_id=args.run_id, dry_run=args.dry_run,
                     progress=not args.no_progress)
    if args.dry_run:
        return _print_plan(plan, args.json)
    from .pipeline import RunFailed, RunInterrupted, describe, run
    from .threads import DRIVER_CPUS, set_threads

    set_threads(DRIVER_CPUS)  # the driver coordinates; the workers that hold CPUs compute
    raise_on_sigterm()  # SIGTERM stops the run as Ctrl-C does: recorded `interrupted`, with a resume line
    if not args.debug:  # the root cause is reported in one line; Ray's report of each failed call is noise
        os.environ.setdefault("RAY_IGNORE_UNHANDLED_ERRORS", "1")
    try:
        with _stdout_for_json(args.json):
            summary = run(spec, resume=args.resume, run_id=args.run_id, progress=not args.no_progress, plan=plan,
                          reuse_from=args.reuse_from, rescan=args.rescan)
    except (RunFailed, RunInterrupted) as e:
        if args.debug:
            raise
        if not e.resumable:
            next_step = f"start a new run with: {_resume_command(args, e.run_id, e.root, resume=False)}"
        else:
            next_step = f"resume with: {_resume_command(args, e.run_id, e.root)}"
        print(f"ccs-ray: {e} (--debug shows the traceback); {next_step}", file=sys.stderr)
        return e.status if isinstance(e, RunInterrupted) else 1
    print(jsonout.dumps(summary, indent=2) if args.json else describe(summary))
    return 0


def _cmd_init(args) -> int:
    from .spec import write_starter

    path = write_starter(args.name)
    print(f"wrote {path}: edit it, then run it with: ccs-ray run {path}")
    return 0


def _cmd_submit(args) -> int:
    spec = _load(args)
    from .preflight import preflight
    from .submit import submit

    plan = preflight(spec, dry_run=True, cluster=False)  # API keys and resources are the job's, on the cluster
    if args.dry_run:
        return _print_plan(plan, args.json)
    return submit(spec, args.spec, _overrides(args), args.address, pip=args.pip, runtime_env=args.runtime_env,
                  follow=args.follow)


def _cmd_sql(args) -> int:
    from .sqlshell import main_sql, write_views_file

    if args.views_file:
        print(write_views_file(args.views_file, args.output or VIEWS_FILE))
        return 0
    return main_sql(args.query, args.results, args.format, args.output, args.canned)


def _cmd_report(args) -> int:
    from .reporting import build_report

    print(build_report(args.results, args.output, heads=args.heads))
    return 0


def _cmd_head(args) -> int:
    if args.image is None:
        if args.text is not None or args.span is not None or args.convention is not None:
            raise UserError("--text, --span and --convention draw a head's map: they need --image PATH")
        if args.results is None:
            raise UserError("the head's card is read from the results: give --results ROOT (or --image PATH to draw "
                            "where the head looks)")
        from .reporting import show_head

        print(show_head(args.results, args.model, args.head, run_id=args.run_id, open_=args.open, out=args.output))
        return 0
    if args.open:
        raise UserError("--open writes the head's HTML card; with --image, -o names the PNG")
    if args.text is not None and args.span is not None:
        raise UserError("--text and --span are two directions: give one")
    from .headmap import write_head_map

    print(write_head_map(args.model, args.head, args.image, out=args.output, text=args.text, results=args.results,
                         run_id=args.run_id, span=args.span or 1, convention=args.convention))
    return 0


def _cmd_compare_paper(args) -> int:
    from .compare import compare_paper

    print(compare_paper(args.results, as_json=args.json))
    return 0


def _cmd_ratings(args) -> int:
    from .judges.human import import_human_ratings

    print(jsonout.dumps(import_human_ratings(args.csv, args.results, args.run_id), indent=2))
    return 0


def _cmd_bench(args) -> int:
    import importlib

    options = {k: v for k, v in vars(args).items()
               if k not in ("command", "bench", "json", "func", "debug") and v is not None}
    with _stdout_for_json(args.json):
        figures = importlib.import_module(f"ccs_ray.bench.{args.bench}").run(**options)
    if args.json:
        print(jsonout.dumps(figures))
    else:
        width = max(map(len, figures))
        for key, value in figures.items():
            print(f"{key:<{width}}  {value}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ccs-ray", description="Concept Consistency Scores of CLIP attention heads, "
                                     "at scale on Ray: run a job spec, query its results, read its report.")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of any error")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="run every stage a job spec enables")
    _add_spec_args(p)
    p.add_argument("--resume", action="store_true",
                   help="continue the latest (or --run-id) run, skipping finished work")
    p.add_argument("--run-id", help="run id to create or resume")
    p.add_argument("--no-progress", action="store_true", help="no progress bars or progress lines")
    reuse = p.add_mutually_exclusive_group()
    reuse.add_argument("--reuse-from", dest="reuse_from", action="append", default=[], metavar="URI",
                       help="also reuse the scans, spans and explain passes of the finished runs under this results "
                            "root (repeatable; those under --results are always reused) where their inputs match "
                            "(model, weights, layers, convention, precision, preprocessing, images, settings): no "
                            "image is read again")
    reuse.add_argument("--rescan", action="store_true",
                       help="reuse nothing: scan the images (and compute spans and explain) again")
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("init", help="write a commented starter job spec (a built-in one) to this folder")
    p.add_argument("name", nargs="?", help="built-in spec to copy (default quickstart; ccs-ray run NAME runs it as is)")
    p.set_defaults(func=_cmd_init)

    p = sub.add_parser("submit", help="submit the same run as a Ray job to a cluster")
    _add_spec_args(p)
    p.add_argument("--address", help="Ray dashboard address, e.g. http://head:8265 (default: $RAY_ADDRESS); on a "
                   "cluster of several nodes the job refuses a local results root unless every node mounts it "
                   "(--set results.shared=true)")
    p.add_argument("--follow", action="store_true",
                   help="stream the job's logs until it ends; exit 1 unless it succeeded")
    p.add_argument("--pip", action="append", metavar="REQUIREMENT", help="pip requirement for the job (repeatable)")
    p.add_argument("--runtime-env", metavar="FILE", help="JSON/YAML Ray runtime env merged into the job's")
    p.set_defaults(func=_cmd_submit)

    p = sub.add_parser("sql", help="query the results with DuckDB (no QUERY: interactive)")
    p.add_argument("query", nargs="?", help="SQL over the views (see .views in interactive mode); interval functions "
                   "(sql/macros.sql): wilson_interval, mean_interval, paired_difference, spearman_interval, "
                   "share_interval, cohen_kappa_se, fleiss_kappa_se")
    p.add_argument("--results", default="./results", help="results root (default ./results)")
    p.add_argument("--format", default="table", choices=SQL_FORMATS, help="output format (default table)")
    p.add_argument("-o", "--output", help="write the result to this file")
    p.add_argument("--query", dest="canned", help="run a canned query from sql/queries by name")
    p.add_argument("--views-file", metavar="ROOT", help=f"write {VIEWS_FILE} (or -o FILE): the views and macros over "
                   f"the results root ROOT, for plain DuckDB (duckdb -init {VIEWS_FILE})")
    p.set_defaults(func=_cmd_sql)

    p = sub.add_parser("report", help="write the self-contained HTML report")
    p.add_argument("--results", required=True, help="results root")
    p.add_argument("-o", "--output", default="report.html", help="HTML file to write (default report.html)")
    p.add_argument("--head", dest="heads", action="append", metavar="HEAD",
                   help="show only this head (e.g. L11.H5) in the head explorer and cards (repeatable)")
    p.set_defaults(func=_cmd_report)

    p = sub.add_parser("head", help="print one head's card: label, CCS per judge, spans with verdicts, top images; "
                                    "with --image, draw where the head looks in an image")
    p.add_argument("model", help="model key as in the results, e.g. ViT-B-32/openai")
    p.add_argument("head", help="head name, e.g. L11.H5")
    p.add_argument("--results", help="results root (the card, and the span directions of --image without --text)")
    p.add_argument("--run-id", help="the run (default: the latest run with the head)")
    p.add_argument("--open", action="store_true", help="also write the head's HTML card and open it in the browser")
    p.add_argument("-o", "--output", help="HTML card to write with --open (default ccs-head-<model>-<head>.html); "
                                          "with --image, the PNG (default <image name>-<head>.png)")
    p.add_argument("--image", help="draw the head's per-patch contribution along a direction over this image (path "
                                   "or URI) as a PNG heatmap of the image's size, and print its path")
    p.add_argument("--text", help="with --image: the direction is this text's embedding (default: the head's span)")
    p.add_argument("--span", type=int, metavar="RANK", help="with --image: the direction of the head's span RANK "
                   "(default 1), from --results")
    p.add_argument("--convention", choices=CONVENTIONS, help="with --image: the decomposition convention (default: "
                   "the spans'; with --text, centered)")
    p.set_defaults(func=_cmd_head)

    p = sub.add_parser("compare-paper", help="compare the results with the paper's published figures and head sets")
    p.add_argument("--results", required=True, help="results root")
    p.add_argument("--json", action="store_true", help="print one JSON object (summary, figures, agreement, notes)")
    p.set_defaults(func=_cmd_compare_paper)

    p = sub.add_parser("ratings", help="import human span ratings (CSV) and compare judges with them")
    p.add_argument("csv", help="CSV with model, head_label, span_rank, aligned[, rater]")
    p.add_argument("--results", required=True, help="results root of the run the ratings are for")
    p.add_argument("--run-id", required=True, help="the run whose spans were rated")
    p.set_defaults(func=_cmd_ratings)

    p = sub.add_parser("bench", help="benchmarks (ratios measured side by side in one run)")
    benches = p.add_subparsers(dest="bench", required=True)
    b = benches.add_parser("decompose", help="plain encode_image vs decomposition + moments")
    b.add_argument("--model", default="ViT-B-32/none", help="model key (default ViT-B-32/none)")
    b.add_argument("--precision", default="fp32", choices=PRECISIONS, help="weights and activations (default fp32)")
    b.add_argument("--batch-size", dest="batch_size", type=int, default=16, help="images per batch (default 16)")
    b.add_argument("--reps", type=int, help="timed repetitions")
    b = benches.add_parser("scan", help="end-to-end scan vs decode-only and model-only throughput")
    b.add_argument("--model", default="ViT-B-32/none", help="model key (default ViT-B-32/none)")
    b.add_argument("--images", type=int, help="images generated and scanned")
    b.add_argument("--batch-size", dest="batch_size", type=int, help="images per batch")
    b = benches.add_parser("prune", help="prefix-shared ablation configurations vs each alone")
    b.add_argument("--model", help="model key")
    b.add_argument("--configs", type=int, help="ablation configurations")
    b.add_argument("--batch-size", dest="batch_size", type=int, help="images per batch")
    b = benches.add_parser("judge", help="judge pool throughput against a rate-limited loopback server")
    b.add_argument("--rpm", type=float, help="the server's requests per minute")
    b.add_argument("--seconds", type=float, help="how long to run")
    b = benches.add_parser("chaos", help="a run under every fault at once (kills, judge faults) vs an undisturbed run")
    b.add_argument("--images", type=int, help="images generated and scanned")
    b.add_argument("--seed", type=int, help="seed of the faults and of which actors are killed")
    benches.add_parser("preflight", help="seconds from `ccs-ray run` to the error, per kind of mistake; --help time")
    b = benches.add_parser("plan", help="checkpoint bytes as the shards covered grow; planning and dispatching a "
                                        "large source")
    b.add_argument("--model", help="model key of the checkpointed moments (default ccs-tiny/none)")
    b.add_argument("--small", type=int, help="shards of the small case (default 10)")
    b.add_argument("--large", type=int, help="shards of the large case (default 10000)")
    b.add_argument("--checkpoint-every", dest="checkpoint_every", type=int, help="shards per checkpoint (default 10)")
    b.add_argument("--images", type=int, help="also plan and dispatch a generated manifest of this many images")
    b.add_argument("--shard-size", dest="shard_size", type=int, help="images per shard of --images (default 1000)")
    b = benches.add_parser("quickstart", help="the README's first job (random init) alone and beside a one-core "
                                              "busy loop: wall and CPU seconds per stage")
    b.add_argument("--model", help="model key (default ViT-B-32/none)")
    b.add_argument("--spec", help="spec name or path (default quickstart)")
    benches.add_parser("gpu", help="every GPU figure (decomposed vs plain per model and precision, sum-back error, "
                                   "peak memory, scan vs model-only) in at most 8 minutes; without a GPU, one line")
    for b in benches.choices.values():
        b.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_cmd_bench)
    for p in [*sub.choices.values(), *benches.choices.values()]:  # also after the command: ccs-ray run SPEC --debug
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                       help="show the full traceback of any error")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Exit status: 0 done, 1 a failure during a run, 2 a mistake in the spec, the input or the environment, 130 after
    Ctrl-C and 143 after SIGTERM (128 + the signal's number, as shells report them)."""
    args = build_parser().parse_args(argv)
    passive_waits()  # before any OpenMP runtime loads (ccs_ray.threads)
    try:
        return args.func(args)
    except (UserError, FileNotFoundError) as e:
        if args.debug:
            raise
        print(f"ccs-ray: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:  # before a run started, or in another command: nothing to resume
        if args.debug:
            raise
        print(f"ccs-ray: interrupted by {interrupt_name(e)}", file=sys.stderr)
        return interrupt_status(e)


if __name__ == "__main__":
    sys.exit(main())
