"""The pruning stage on Ray: tables, metrics checked against direct computation, resume, a killed worker, the smoke
chain."""

import math
import os
import signal
import threading
import time
import warnings
from collections import defaultdict
from pathlib import Path

import numpy as np
import psutil
import pytest
import scipy.stats
import torch
from PIL import Image

from ccs_ray import ablated, load_model, max_skew_at_k
from ccs_ray.analytics import canned_rows, connect, query
from ccs_ray.evals.datasets import classification_data, load_classification, plan_classification
from ccs_ray.evals.zeroshot import classifier_weights
from ccs_ray.heads import head_name
from ccs_ray.spec import load_spec
from ccs_ray.stages import run_stage
from ccs_ray.tables import read_table, write_table

MODEL = "ccs-tiny/none"
RUN = "r1"
CCS = [5, 5, 0, 1, 3, 2, 4, 1, 5, 0, 2, 3, 1, 4, 2, 2]  # heads of layers 0..3 (ccs-tiny has 4 x 4)


def write_ccs(root):
    rows = []
    for i, c in enumerate(CCS):
        layer, head = divmod(i, 4)
        level = "high" if c == 5 else "low" if c <= 1 else "medium"
        rows.append(dict(layer=layer, head=head, head_label=head_name(layer, head), judge="combined", ccs=c,
                         level=level, label="color" if i in (2, 9) else "thing"))
    write_table(root, "ccs", rows, RUN, MODEL)


def write_fairface(root, n=12):
    (root / "ff").mkdir()
    rng = np.random.default_rng(3)
    lines = ["file,age,gender,race"]
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(root / "ff" / f"{i}.png")
        lines.append(f"{i}.png,30-39,{'Male' if i % 3 else 'Female'},"
                     f"{['White', 'East Asian', 'Southeast Asian'][i % 3]}")
    (root / "ff" / "labels.csv").write_text("\n".join(lines) + "\n")


def write_videos(root, n=4):
    for v in range(n):
        (root / "vid" / f"v{v}").mkdir(parents=True)
        for f in range(3):
            Image.new("RGB", (16, 16), (v * 60, f * 80, 100)).save(root / "vid" / f"v{v}" / f"{f}.png")
    (root / "vid" / "caps.json").write_text("[" + ",".join(f'{{"video": "v{v}", "caption": "clip {v}"}}'
                                                           for v in range(n)) + "]")


def check_tables_and_views(root, run_id, model, ids, occupations, n_seeds):
    """The evals and bias tables the prune stage wrote hold only per-configuration rows (no summary rows),
    and the SQL views over them (evals_random, bias_random, bias_totals) equal numpy over those rows.
    Returns the bias_totals rows by (ablation_id, dataset, attribute)."""
    evals = read_table(root, "evals", run_id, model).to_pylist()
    bias = read_table(root, "bias", run_id, model).to_pylist()
    for rows, keys in ((evals, ("dataset", "metric")), (bias, ("dataset", "attribute", "occupation"))):
        assert {r["ablation_id"] for r in rows} == set(ids)  # no random:mean / random:std
        assert all((r["seed"] is not None) == (r["strategy"] in ("random", "sweep-random")) for r in rows)
        assert all(r["ablation_id"] == f"random:s{r['seed']}" for r in rows if r["strategy"] == "random")
        assert all(r["ablation_id"].endswith(f":s{r['seed']}") for r in rows if r["strategy"] == "sweep-random")
        assert len({(r["ablation_id"], *(r[k] for k in keys)) for r in rows}) == len(rows)  # one row per key
    assert {r["occupation"] for r in bias} == set(occupations)  # no __sum__ / __mean__
    assert all(r["max_group"] is not None and math.isfinite(r["maxskew"]) for r in bias)

    def grouped(rows, keys, value, random_only):
        out = defaultdict(list)
        for r in rows:
            if r["strategy"] == "random" or not random_only:
                out[tuple(r[k] for k in keys)].append(r[value])
        return {k: np.array(v, dtype=float) for k, v in out.items()}

    with connect(root) as conn:
        view = {name: query(conn, f"SELECT * FROM {name} WHERE run_id = '{run_id}' AND model = '{model}'").to_pylist()
                for name in ("evals_random", "bias_random", "bias_totals")}
    for name, rows, keys, value in (("evals_random", evals, ("dataset", "metric"), "value"),
                                    ("bias_random", bias, ("dataset", "attribute", "occupation"), "maxskew")):
        want = grouped(rows, keys, value, random_only=True)
        got = {tuple(r[k] for k in keys): r for r in view[name]}
        assert want and got.keys() == want.keys(), name
        for key, values in want.items():
            assert got[key]["n_seeds"] == len(values) == n_seeds
            assert got[key]["mean"] == pytest.approx(np.mean(values), abs=1e-12)
            assert got[key]["std"] == pytest.approx(np.std(values, ddof=1), abs=1e-9)
    want = grouped(bias, ("ablation_id", "dataset", "attribute"), "maxskew", random_only=False)
    got = {(r["ablation_id"], r["dataset"], r["attribute"]): r for r in view["bias_totals"]}
    assert got.keys() == want.keys()
    for key, values in want.items():
        assert got[key]["n_occupations"] == len(values) == len(occupations)
        assert got[key]["maxskew_sum"] == pytest.approx(np.sum(values), abs=1e-12)  # the paper's total
        assert got[key]["maxskew_mean"] == pytest.approx(np.mean(values), abs=1e-12)
    return got


@pytest.fixture
def spec(tmp_path):
    write_ccs(str(tmp_path))
    write_fairface(tmp_path)
    write_videos(tmp_path)
    return load_spec({
        "name": "t", "models": {"keys": [MODEL]},
        "prune": {"strategies": ["high", "low", "random", "equal", "concept", "explicit", "sweep", "single"],
                  "seeds": 2, "sweep_k": 2, "heads": {"two": ["L3.H0", "L2.H1"]}, "concepts": ["colors"],
                  "single_modes": ["zero", "mean"]},
        "evals": {"batch_size": 8,
                  "classification": [{"name": "shapes", "source": "probe://shapes?n=20&seed=1&size=32",
                                      "shard_size": 8}],
                  "video": [{"name": "toy", "source": str(tmp_path / "vid"), "captions": "caps.json", "frames": 2,
                             "shard_size": 3}],
                  "bias": [{"name": "fairface", "source": str(tmp_path / "ff" / "labels.csv"), "shard_size": 5,
                            "occupations": ["doctor", "nurse", "pilot"], "k": 4}]},
        "results": {"root": str(tmp_path / "results")},
    })


PUBLISHED_TEMPLATES = ["A {}", "A photo of {}", "A picture of {}", "An image of {}"]  # the paper's, no article


def check_head_effects_and_correctness(root, evals, singles, model, images, labels, weights, mean_z):
    """head_effects holds every evals row of each single configuration beside the baseline's, and its change
    equals a direct computation (open_clip's encode_image inside ablated(), one head, its mode); correctness
    bits unpack to per-image hits whose mean is the evals value, and equal the direct per-image hits."""
    value = {(r["ablation_id"], r["dataset"], r["metric"]): r for r in evals}
    effects = read_table(root, "head_effects", RUN, MODEL).to_pylist()
    assert sorted((r["ablation_id"], r["dataset"], r["metric"]) for r in effects) == sorted(
        k for k in value if k[0] in singles)  # classification and video metrics alike
    assert {r["dataset"] for r in effects} == {"shapes", "toy"}
    for r in effects:
        mine, base = value[(r["ablation_id"], r["dataset"], r["metric"])], value[("none", r["dataset"], r["metric"])]
        assert r["ablation_id"] == f"single:{r['mode']}:{r['head_label']}"
        assert r["head_label"] == f"L{r['layer']}.H{r['head']}"
        assert (r["value"], r["baseline"], r["n"]) == (mine["value"], base["value"], mine["n"])
        assert r["change"] == r["value"] - r["baseline"]

    def hits(heads, mode):  # independent: per-image top-1 / top-5 hits of the ablated model
        with torch.no_grad(), ablated(model, heads, mode, mean_z):
            emb = model.encode_image(images, normalize=True)
        top = (emb @ weights).topk(min(5, weights.shape[1]), dim=1).indices
        return {"top1": (top[:, 0] == labels).numpy(), "top5": (top == labels[:, None]).any(1).numpy()}

    change = {(r["ablation_id"], r["metric"]): r["change"] for r in effects if r["dataset"] == "shapes"}
    direct = {"none": hits([], "zero")}
    for head, mode in (("L0.H1", "zero"), ("L2.H3", "mean"), ("L3.H0", "zero")):
        aid = f"single:{mode}:{head}"
        direct[aid] = hits([head], mode)
        for metric in ("top1", "top5"):
            want = 100 * (direct[aid][metric].astype(float).mean() - direct["none"][metric].astype(float).mean())
            assert change[(aid, metric)] == pytest.approx(want, abs=1e-9)

    correctness = read_table(root, "correctness", RUN, MODEL).to_pylist()
    ids = {k[0] for k in value}
    assert sorted((r["ablation_id"], r["dataset"], r["metric"]) for r in correctness) == sorted(
        (a, "shapes", m) for a in ids for m in ("top1", "top5"))
    for r in correctness:
        bits = np.unpackbits(np.frombuffer(r["bits"], dtype=np.uint8), bitorder="little")
        assert r["n"] == len(labels) and len(bits) == 8 * math.ceil(r["n"] / 8) and not bits[r["n"]:].any()
        assert 100 * bits[:r["n"]].mean() == pytest.approx(value[(r["ablation_id"], "shapes", r["metric"])]["value"],
                                                           abs=1e-9)
        if r["ablation_id"] in direct:  # the same images in the same order as the direct computation
            assert np.array_equal(bits[:r["n"]].astype(bool), direct[r["ablation_id"]][r["metric"]])
    return effects, correctness


def test_prune_stage_tables_metrics_and_resume(ray_cluster, spec, tmp_path):
    root = str(tmp_path)
    model, preprocess = load_model(MODEL, device="cpu")
    mean_z = write_moments(tmp_path, model, preprocess)  # the single strategy's mean ablations use them
    summary = run_stage("prune", spec, root, RUN, MODEL)
    singles = [f"single:{mode}:{head_name(layer, head)}" for mode in ("zero", "mean") for layer in range(4)
               for head in range(4)]
    ids = ["none", "high", "low", "random:s0", "random:s1", "equal:high", "equal:low", "concept:colors",
           "explicit:two", "sweep:k0", "sweep:k1", "sweep:k2", "sweep-low:k1", "sweep-low:k2", "sweep-random:k1:s0",
           "sweep-random:k2:s0", "sweep-random:k1:s1", "sweep-random:k2:s1", *singles]
    assert summary["ablation_ids"] == ids and summary["units_run"] == 3 + 2 + 3 and summary["units_skipped"] == 0

    abl = {r["ablation_id"]: r for r in read_table(root, "ablations", RUN, MODEL).to_pylist()}
    assert abl["high"]["heads"] == ["L0.H0", "L0.H1", "L2.H0"] and abl["high"]["n_heads"] == 3
    assert abl["concept:colors"]["heads"] == ["L0.H2", "L2.H1"]
    assert set(abl["random:s1"]["heads"]).isdisjoint(abl["high"]["heads"]) and abl["random:s1"]["mode"] == "zero"
    assert [(abl[a]["mode"], abl[a]["k"], abl[a]["strategy"], abl[a]["heads"]) for a in singles] == [
        (a.split(":")[1], 1, "single", [a.split(":")[2]]) for a in singles]

    evals = read_table(root, "evals", RUN, MODEL).to_pylist()
    value = {(r["ablation_id"], r["dataset"], r["metric"]): r["value"] for r in evals}
    # independent computation: plain open_clip encode_image (inside ablated() for a pruned configuration)
    data = classification_data(spec.evals.classification[0])
    parts = [load_classification(data, s, preprocess) for s in plan_classification(data)]
    images, labels = torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
    weights = classifier_weights(model, data.class_texts, data.templates)
    for aid in ("none", "high", "explicit:two"):
        with torch.no_grad(), ablated(model, abl[aid]["heads"]):
            emb = model.encode_image(images, normalize=True)
        top1 = 100 * ((emb @ weights).argmax(1) == labels).double().mean().item()
        assert value[(aid, "shapes", "top1")] == pytest.approx(top1)
    for m in ("top5", "acc:circle", "R@1", "R@5", "R@10", "R@50", "MedR", "MeanR"):
        assert any(k[2] == m for k in value), m
    assert value[("none", "toy", "R@50")] == 100  # 4 videos
    assert value[("sweep:k0", "shapes", "top1")] == value[("none", "shapes", "top1")]
    effects, correctness = check_head_effects_and_correctness(root, evals, singles, model, images, labels, weights,
                                                              mean_z)
    with connect(root) as conn:
        importance = query(conn, "SELECT * FROM head_importance").to_pylist()
        rho = canned_rows(conn, "ccs_vs_importance")
    assert sorted((r["head_label"], r["dataset"], r["metric"], r["mode"], r["judge"], r["ccs"], r["change"])
                  for r in importance) == sorted((r["head_label"], r["dataset"], r["metric"], r["mode"], "combined",
                                                  CCS[4 * r["layer"] + r["head"]], r["change"]) for r in effects)
    # does CCS predict importance: Spearman's rho of CCS and -change over the 16 heads, as scipy computes it
    assert sorted((r["dataset"], r["metric"], r["mode"], r["judge"]) for r in rho) == [
        (d, m, mode, "combined") for d, m in (("shapes", "top1"), ("toy", "R@1")) for mode in ("mean", "zero")]
    for r in rho:
        cost = {e["head_label"]: -e["change"] for e in effects
                if (e["dataset"], e["metric"], e["mode"]) == (r["dataset"], r["metric"], r["mode"])}
        heads = [head_name(layer, head) for layer in range(4) for head in range(4)]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", scipy.stats.ConstantInputWarning)
            want = scipy.stats.spearmanr(CCS, [cost[h] for h in heads]).statistic
        assert r["n_heads"] == 16
        if np.isnan(want):  # every head costs the same (4 videos: R@1 moves little): no rank correlation
            assert r["rho"] is None and r["dataset"] == "toy", r
        else:
            assert r["rho"] == pytest.approx(want, abs=1e-9) and r["low"] <= r["rho"] <= r["high"]

    bias = read_table(root, "bias", RUN, MODEL).to_pylist()
    skew = {(r["ablation_id"], r["attribute"], r["occupation"]): r["maxskew"] for r in bias}
    # independent MaxSkew of the baseline for race ("East Asian" and "Southeast Asian" merged: 2 groups)
    files = [str(tmp_path / "ff" / f"{i}.png") for i in range(12)]
    race = ["White" if i % 3 == 0 else "Asian" for i in range(12)]
    ff = torch.stack([preprocess(Image.open(f).convert("RGB")) for f in files])
    with torch.no_grad():
        img = model.encode_image(ff, normalize=True)
        per = []
        for occ in ("doctor", "nurse", "pilot"):  # the published templates, combined as published
            t = model.encode_text(model.tokenizer([tpl.format(occ) for tpl in PUBLISHED_TEMPLATES]), normalize=True)
            mean = t.double().mean(0)
            per.append(max_skew_at_k((img.double() @ (mean / mean.norm())).numpy(), race, 4))
    for occ, v in zip(("doctor", "nurse", "pilot"), per, strict=True):
        assert skew[("none", "race", occ)] == pytest.approx(v, abs=1e-9)
    assert {r["max_group"] for r in bias if r["attribute"] == "gender"} <= {"Male", "Female"}
    assert {(r["combine"], tuple(r["templates"])) for r in bias} == {("embedding_mean", tuple(PUBLISHED_TEMPLATES))}
    totals = check_tables_and_views(root, RUN, MODEL, ids, ["doctor", "nurse", "pilot"], n_seeds=2)
    assert totals[("none", "fairface", "race")]["maxskew_sum"] == pytest.approx(sum(per))
    assert totals[("none", "fairface", "race")]["maxskew_mean"] == pytest.approx(sum(per) / 3)

    again = run_stage("prune", spec, root, RUN, MODEL, resume=True)
    assert again["units_run"] == 0 and again["units_skipped"] == 8
    assert sorted(map(str, read_table(root, "evals", RUN, MODEL).to_pylist())) == sorted(map(str, evals))
    for table, rows in (("head_effects", effects), ("correctness", correctness)):  # replaced, not duplicated
        assert sorted(map(str, read_table(root, table, RUN, MODEL).to_pylist())) == sorted(map(str, rows))


def test_mean_mode_needs_moments_and_missing_ccs_is_clear(ray_cluster, spec, tmp_path):
    spec.prune.mode = "mean"
    with pytest.raises(ValueError, match="run the scan stage"):
        run_stage("prune", spec, str(tmp_path), RUN, MODEL)
    spec.prune.mode = "zero"  # the single strategy's mean ablations need the moments too
    with pytest.raises(ValueError, match=r"prune.single_modes = \['zero', 'mean'\] needs the scan's moments .*"
                                         r"run the scan stage.*or use prune.single_modes = \['zero'\]"):
        run_stage("prune", spec, str(tmp_path), RUN, MODEL)
    with pytest.raises(ValueError, match="run the judge stage"):
        run_stage("prune", spec, str(tmp_path), "other-run", MODEL)


def write_moments(root, model, preprocess):
    """The scan's moments of MODEL (all 4 layers) over a few probe images, as the moments table points to them."""
    from ccs_ray.decompose import decomposed_forward
    from ccs_ray.moments import HeadMoments
    from ccs_ray.sources.probe import probe_image

    images = torch.stack([preprocess(probe_image("colors", i, 0, 32)[0]) for i in range(6)])
    moments = HeadMoments.for_model(MODEL, model, [0, 1, 2, 3])
    with torch.no_grad():
        d = decomposed_forward(model, images, layers=[0, 1, 2, 3], keep_z_sum=True, coefficients=True)
    moments.update(d.coefficients, 0, d.z_sum)
    moments.save(str(root / "moments.safetensors"))
    write_table(str(root), "moments", [dict(uri=str(root / "moments.safetensors"), n_images=6)], RUN, MODEL)
    return moments.mean_z()


def _eval_workers_running_a_unit():
    """EvalWorker processes of this session's Ray (its descendants) busy with a unit (``ray::EvalWorker.run``)."""
    out = []
    for p in psutil.Process().children(recursive=True):
        try:
            if any("EvalWorker.run" in c for c in p.cmdline()):
                out.append(p)
        except psutil.Error:  # gone meanwhile
            continue
    return out


@pytest.mark.slow
def test_killed_worker_is_replaced_and_tables_equal_an_undisturbed_run(ray_cluster, spec, tmp_path):
    """An EvalWorker SIGKILLed while it runs a unit: a fresh worker runs the units it held, and the tables equal
    those of an undisturbed run, with no failed unit."""
    if os.environ.get("RAY_ADDRESS"):
        pytest.skip("kills an actor process of a local cluster started by this session")
    spec.prune.strategies, spec.evals.actors = ["high", "low", "random", "explicit"], 2

    def run(root, out):
        write_ccs(root)
        try:
            out["summary"] = run_stage("prune", spec, root, RUN, MODEL)
        except Exception as e:  # noqa: BLE001 - reported by the test
            out["error"] = e

    calm: dict = {}
    run(str(tmp_path / "calm"), calm)
    killed, root = {}, str(tmp_path / "killed")
    thread = threading.Thread(target=run, args=(root, killed))
    thread.start()
    units, deadline, victims = Path(root) / "_units" / "prune", time.time() + 120, []
    while thread.is_alive() and time.time() < deadline:
        victims = _eval_workers_running_a_unit() if list(units.rglob("*.npz")) else []
        if victims:
            break
        time.sleep(0.02)
    finished_before_kill = len(list(units.rglob("*.npz")))
    assert victims and 0 < finished_before_kill < 8, "no worker was busy with a unit after the first one finished"
    victims[0].send_signal(signal.SIGKILL)
    thread.join(300)
    assert "error" not in killed and "error" not in calm, (killed.get("error"), calm.get("error"))
    assert killed["summary"]["units_run"] == calm["summary"]["units_run"] == 8
    for table in ("evals", "bias", "correctness", "head_effects"):
        want = read_table(str(tmp_path / "calm"), table, RUN, MODEL).to_pylist()
        assert want or table == "head_effects"
        assert sorted(map(str, read_table(root, table, RUN, MODEL).to_pylist())) == sorted(map(str, want)), table
    errors = read_table(root, "errors", RUN, MODEL).to_pylist()
    assert not [e for e in errors if e["reason"] == "unit_failed"], errors


@pytest.mark.slow
def test_resume_recomputes_units_whose_configuration_changed(ray_cluster, tmp_path):
    """A resume skips a unit only while mode, heads and mean outputs are unchanged; error rows are not duplicated."""
    write_ccs(str(tmp_path))
    folder = tmp_path / "folder"
    for i, (name, rgb) in enumerate([("red", (220, 30, 30)), ("blue", (30, 70, 220))] * 3):
        (folder / name).mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (16, 16), rgb).save(folder / name / f"{i}.png")
    (folder / "red" / "broken.png").write_bytes(b"not a png")
    spec = load_spec({
        "name": "t", "models": {"keys": [MODEL]},
        "prune": {"strategies": ["high", "explicit"], "heads": {"two": ["L3.H0", "L2.H1"]}},
        "evals": {"classification": [{"name": "rb", "source": str(folder), "classnames": ["red", "blue"],
                                      "shard_size": 4}]},
    })
    root = str(tmp_path)
    model, preprocess = load_model(MODEL, device="cpu")
    data = classification_data(spec.evals.classification[0])
    parts = [load_classification(data, s, preprocess) for s in plan_classification(data)]
    images, labels = torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
    weights = classifier_weights(model, data.class_texts, data.templates)

    def top1(heads, mode="zero", mean_z=None):  # independent: open_clip's encode_image inside ablated()
        with torch.no_grad(), ablated(model, heads, mode, mean_z):
            emb = model.encode_image(images, normalize=True)
        return 100 * ((emb @ weights).argmax(1) == labels).double().mean().item()

    def run(resume=True):
        summary = run_stage("prune", spec, root, RUN, MODEL, resume=resume)
        value = {r["ablation_id"]: r["value"] for r in read_table(root, "evals", RUN, MODEL).to_pylist()
                 if r["metric"] == "top1"}
        errors = [r for r in read_table(root, "errors", RUN, MODEL).to_pylist() if r["stage"] == "prune"]
        return summary, value, errors

    first, _, errors = run(resume=False)
    assert first["units_run"] == 2 and len(errors) == 1 and errors[0]["item"].endswith("broken.png")
    again, _, errors = run()
    assert (again["units_run"], again["units_skipped"]) == (0, 2) and len(errors) == 1

    mean_z = write_moments(tmp_path, model, preprocess)
    spec.prune.mode = "mean"
    mean, value, errors = run()
    assert (mean["units_run"], mean["units_skipped"]) == (2, 0) and len(errors) == 1
    assert value["explicit:two"] == pytest.approx(top1(["L2.H1", "L3.H0"], "mean", mean_z))
    assert value["high"] == pytest.approx(top1(["L0.H0", "L0.H1", "L2.H0"], "mean", mean_z))

    spec.prune.heads = {"two": ["L1.H1", "L1.H2"]}  # the same ablation ids, other heads
    moved, value, errors = run()
    assert moved["units_run"] == 2 and len(errors) == 1
    assert value["explicit:two"] == pytest.approx(top1(["L1.H1", "L1.H2"], "mean", mean_z))
    fresh = run(resume=False)[2]  # a fresh run replaces the unit's error file
    assert ([{**r, "logged_at": None} for r in fresh] == [{**r, "logged_at": None} for r in errors]
            and fresh[0]["logged_at"] > errors[0]["logged_at"])


@pytest.mark.slow
def test_smoke_job_whole_chain(ray_cluster, tmp_path):
    """scan -> spans -> judge (offline) -> prune -> report from jobs/smoke.toml, on a smaller probe set, with
    its generated video and bias sets; a one-concept vocabulary of articles makes some heads high, so that
    the random strategy runs too."""
    from pathlib import Path

    from ccs_ray.pipeline import run

    job = Path(__file__).parent.parent / "jobs" / "smoke.toml"
    spec = load_spec(str(job), [f"results.root={tmp_path / 'res'}", "data.source=probe://?n=32&seed=0&size=32",
                                'evals.classification=[{name = "shapes", source = "probe://shapes?n=16&seed=1&size=32"}]',
                                'judge.vocabulary={thing = ["a", "an", "the"]}',
                                'prune.strategies=["high", "low", "random", "sweep"]', "prune.sweep_k=2",
                                # explain: tests/test_explain.py
                                'stages=["scan", "spans", "judge", "prune", "report"]'])
    assert spec.evals.video and spec.evals.bias  # the smoke job's own generated sets
    summary = run(spec, progress=False)
    root, model = str(tmp_path / "res"), "ccs-tiny/none"
    evals = read_table(root, "evals", summary["run_id"], model).to_pylist()
    ablations = {r["ablation_id"]: r for r in read_table(root, "ablations", summary["run_id"], model).to_pylist()}
    ids = {r["ablation_id"] for r in evals}
    assert {"none", "high", "random:s0", "random:s1", "sweep:k0", "sweep:k1", "sweep:k2"} <= ids
    assert ablations["sweep:k2"]["n_heads"] == 2 and ablations["none"]["n_heads"] == 0
    for seed in ("random:s0", "random:s1"):
        assert ablations[seed]["n_heads"] == ablations["high"]["n_heads"] > 0
        assert set(ablations[seed]["heads"]).isdisjoint(ablations["high"]["heads"])
    assert all(0 <= r["value"] <= 100 for r in evals if r["metric"] in ("top1", "top5"))

    video = spec.evals.video[0]
    got = {(r["ablation_id"], r["metric"]): r for r in evals if r["dataset"] == video.name}
    assert {a for a, _ in got} == ids and got[("none", "R@50")]["value"] == 100 and got[("none", "R@1")]["n"] == 8

    bias_spec = spec.evals.bias[0]
    bias = read_table(root, "bias", summary["run_id"], model).to_pylist()
    skew = {(r["ablation_id"], r["occupation"]): r["maxskew"] for r in bias}
    assert {r["dataset"] for r in bias} == {bias_spec.name} and {r["attribute"] for r in bias} == {"colors"}
    for aid in ids:
        values = [skew[(aid, o)] for o in bias_spec.occupations]
        # 12 colors x 2 images: a color's share is at most (2 / k) / (2 / 24) = 4 of its overall share
        assert all(-1e-12 <= v <= math.log(4) + 1e-12 for v in values)
    evaluated = {a for a, r in ablations.items() if r["reason"] is None}  # the others selected no head
    check_tables_and_views(root, summary["run_id"], model, evaluated, bias_spec.occupations, n_seeds=2)
    assert Path(summary["stages"]["report"]["path"]).is_file()
