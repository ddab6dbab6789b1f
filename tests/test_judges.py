"""Judge parts without an endpoint: prompts and parsers, cache, limiter arithmetic, offline judge, the offline
stage end to end on a spans table written here, and human-rating import."""

import json
import random
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from ccs_ray import scores
from ccs_ray.bench.judge import max_in_window
from ccs_ray.judges.cache import AnswerCache, cache_key
from ccs_ray.judges.human import import_human_ratings
from ccs_ray.judges.limiter import WINDOW_S, RateLimiter, parse_duration, pause_from_headers
from ccs_ray.judges.offline import DEFAULT_VOCABULARY, NO_CONCEPT, OfflineJudge, vocabulary_from
from ccs_ray.judges.prompts import (
    UnparseableAnswer,
    batched_request,
    judge_request,
    label_request,
    parse_aligned,
    parse_batched,
    parse_label,
    template,
)
from ccs_ray.runs import RunState
from ccs_ray.spec import SpecError, load_spec
from ccs_ray.stages import run_stage
from ccs_ray.tables import read_table, write_table

MODEL = "ccs-tiny/none"
JOBS = Path(__file__).resolve().parents[1] / "jobs"


def write_spans(root, heads: dict[str, list[str]], run_id="r1", model=MODEL):
    """A spans table: ``heads[head_label]`` = texts in rank order."""
    rows = []
    for label, texts in heads.items():
        layer, head = (int(x[1:]) for x in label.split("."))
        rows += [{"layer": layer, "head": head, "head_label": label, "subset": "all", "rank": i, "text": t}
                 for i, t in enumerate(texts, 1)]
        rows += [{"layer": layer, "head": head, "head_label": label, "subset": "fold0", "rank": 1, "text": "ignored"}]
    write_table(str(root), "spans", rows, run_id, model)


COLORS = ["a red car", "blue sky", "green grass", "a yellow flower", "purple dress",
          "a pink cake", "orange sunset", "white snow", "a dog", "a black cat"]
ANIMALS = ["a dog", "a cat", "a horse", "a chair", "a lion", "a tiger", "a bowl of soup", "a bird", "a fish", "a cup"]


# --- prompts -------------------------------------------------------------------------------------------

def test_templates_have_in_context_examples_and_fill_the_last_turn():
    for kind in ("label", "judge", "batched"):
        roles = [r for r, _ in template(kind)]
        assert roles[0] == "system" and roles[-1] == "user" and roles.count("assistant") == 2
    label = label_request(["Photo in Paris", "A map"])
    assert "Rio de Janeiro" in label.messages[1]["content"]  # the geo-location example
    assert "Five candles" in label.messages[3]["content"]  # the counting example
    assert label.messages[-1]["content"].endswith("- Photo in Paris\n- A map")
    judge = judge_request("A map", "location")
    assert judge.messages[-1]["content"] == "Concept: location\nDescription: A map"
    batched = batched_request(["x", "y"], "color")
    assert batched.messages[-1]["content"].endswith("1. x\n2. y") and batched.n == 2
    assert label.schema["json_schema"]["schema"]["required"] == ["label"]


def test_parsers_are_strict_but_tolerant():
    assert parse_label('{"label": "location"}') == "location"
    assert parse_label('```json\n{"label": "art style"}\n```') == "art style"
    assert parse_label("Colors.") == "Colors"
    assert parse_aligned('{"aligned": 1}') == 1
    assert parse_aligned('Sure: {"aligned": false}') == 0
    assert parse_aligned("Yes, it is.") == 1 and parse_aligned("0") == 0
    assert parse_batched('{"aligned": [1, 0, 1]}', 3) == [1, 0, 1]
    assert parse_batched("[0, 1]", 2) == [0, 1]
    assert parse_batched("1 0 yes", 3) == [1, 0, 1]
    for bad in ["%%% not an answer %%%", "", "the common property of these is hard to name honestly"]:
        with pytest.raises(UnparseableAnswer):
            parse_label(bad)
    for bad in ["maybe", '{"aligned": 2}', '{"aligned": 0.5}', ""]:
        with pytest.raises(UnparseableAnswer):
            parse_aligned(bad)
    with pytest.raises(UnparseableAnswer, match="expected 3"):
        parse_batched('{"aligned": [1, 0]}', 3)


@pytest.mark.parametrize("text,n,expected", [
    ("1. no\n2. no\n3. yes", 3, [0, 0, 1]),  # the numbers are not judgments
    ("Here you go:\n1) yes\n2) 0 (a dog)\n3) true", 3, [1, 0, 1]),  # prose lines and comments around a numbered list
    ("```json\n[1, 0, 1]\n```", 3, [1, 0, 1]),
    ('```json\n{"aligned": [0, 1]}\n```', 2, [0, 1]),
    ('Sure! {"aligned": [0, 1]} Hope this helps.', 2, [0, 1]),
    ("yes, no; 1", 3, [1, 0, 1]),
    ("1. yes\n2. no", 3, None),  # two numbered answers for three spans
    ("1. yes\n3. no\n2. yes", 3, None),  # numbering out of order
    ("1. yes 2. no 3. yes", 3, None),  # one line: not a list numbered 1..3
    ("1. a red car: yes\n2. no", 2, None),  # a numbered line must start with its judgment
    ("Span 1 is aligned, span 2 is not: 1 0", 3, None),  # prose numbers are not judgments
    ("The answers are [1, 0] for spans 1 and 2.", 2, None),
    ('{"aligned": [1, {"x": 1}]}', 2, None),
])
def test_batched_parser_is_strict_about_numbering(text, n, expected):
    if expected is None:
        with pytest.raises(UnparseableAnswer):
            parse_batched(text, n)
    else:
        assert parse_batched(text, n) == expected


# --- cache ---------------------------------------------------------------------------------------------

def test_cache_key_is_content_addressed():
    msgs = [{"role": "user", "content": "x"}]
    k = cache_key("http://h/v1/", "m", msgs, {"temperature": 0})
    assert k == cache_key("http://h/v1", "m", msgs, {"temperature": 0})
    assert k != cache_key("http://h/v1", "m2", msgs, {"temperature": 0})
    assert k != cache_key("http://h/v1", "m", [{"role": "user", "content": "y"}], {"temperature": 0})
    assert k != cache_key("http://h/v1", "m", msgs, {"temperature": 1})


def test_cache_concurrent_writers_and_readers(tmp_path):
    cache = AnswerCache(str(tmp_path / "c"))
    keys = [cache_key("e", "m", [{"role": "user", "content": str(i)}], {}) for i in range(20)]
    seen_bad = []

    def worker(seed):
        rng = random.Random(seed)
        for _ in range(100):
            i = rng.randrange(20)
            cache.put(keys[i], {"value": i})
            got = cache.get(keys[i])
            if got != {"value": i}:
                seen_bad.append(got)

    threads = [threading.Thread(target=worker, args=(s,)) for s in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not seen_bad
    assert all(cache.get(k) == {"value": i} for i, k in enumerate(keys))
    assert not list(tmp_path.rglob("*.tmp"))
    assert cache.get(cache_key("e", "m", [], {})) is None
    with pytest.raises(ValueError, match="64 lower-case hex"):
        cache.get("../etc")


# --- limiter -------------------------------------------------------------------------------------------

class FakeClock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def test_limiter_keeps_every_window_under_rpm_and_uses_the_budget():
    clock = FakeClock()
    lim = RateLimiter(rpm=120, burst_s=5, clock=clock)
    rng = random.Random(0)
    sent = []
    for i in range(600):
        at = lim.reserve()
        clock.t = max(clock.t, at - rng.uniform(0, 0.5))  # callers ask a little ahead of their slot
        sent.append(at)
        if i % 97 == 0:
            lim.pause(2.0)
    assert sent == sorted(sent)
    assert max_in_window(sent, 60.0) <= 120
    minutes = (sent[-1] - sent[0]) / 60
    assert 600 / minutes >= 0.9 * 120


def test_limiter_token_budget_and_pause():
    clock = FakeClock()
    lim = RateLimiter(rpm=10_000, tpm=1000, burst_s=1, clock=clock)
    sent = [(lim.reserve(100), 100) for _ in range(30)]
    for t, _ in sent:  # any window of 60 s holds at most 1000 tokens
        assert sum(k for u, k in sent if t - WINDOW_S < u <= t) <= 1000
    assert sent[-1][0] - sent[0][0] >= 2 * 60  # 3000 tokens need at least two more windows
    end = lim.pause(30)
    assert lim.reserve(1) >= end
    with pytest.raises(ValueError, match="never fit"):
        lim.reserve(5000)
    with pytest.raises(ValueError, match="must be > 0"):
        RateLimiter(rpm=0)


def test_settled_usage_paces_the_token_budget():
    lim = RateLimiter(rpm=10_000, tpm=6000, burst_s=1, clock=FakeClock())  # 100 tokens/s, 100 at once
    at = lim.reserve(50)
    assert lim.reserve(50) == at  # estimates alone: both fit the burst
    lim = RateLimiter(rpm=10_000, tpm=6000, burst_s=1, clock=FakeClock())
    at = lim.reserve(50)
    lim.settle(at, 50, 500)  # the answer used 500 tokens, not 50
    assert lim.reserve(50) == pytest.approx(at + 4.5)  # 500 + 50 <= 100 + 100 t: t = 4.5 s

    clock = FakeClock()
    lim = RateLimiter(rpm=10_000, tpm=1000, burst_s=60, clock=clock)  # the 60 s window binds
    first = lim.reserve(900)
    assert lim.reserve(900) == pytest.approx(first + WINDOW_S)  # estimates alone: a whole window later
    lim = RateLimiter(rpm=10_000, tpm=1000, burst_s=60, clock=clock)
    first = lim.reserve(900)
    lim.settle(first, 900, 100)  # over-estimated: 800 tokens come back at once
    assert lim.reserve(900) == pytest.approx(first)
    sent = [(first, 100), (first, 900)] + [(lim.reserve(200), 200) for _ in range(10)]
    for t, _ in sent:  # any window of 60 s holds at most 1000 tokens of actual usage
        assert sum(k for u, k in sent if t - WINDOW_S < u <= t) <= 1000


def test_header_pauses():
    assert parse_duration("6m0s") == 360 and parse_duration("20ms") == 0.02 and parse_duration("1.5") == 1.5
    assert parse_duration("1h2m3.5s") == 3723.5 and parse_duration("soon") is None
    assert pause_from_headers({"Retry-After": "3"}) == 3
    assert pause_from_headers({"retry-after-ms": "250", "Retry-After": "1"}) == 0.25
    assert pause_from_headers({"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "2s",
                               "x-ratelimit-remaining-tokens": "0", "x-ratelimit-reset-tokens": "6m0s"}) == 360
    assert pause_from_headers({"x-ratelimit-remaining-requests": "5", "x-ratelimit-reset-requests": "2s"}) == 0


# --- offline judge ---------------------------------------------------------------------------------------

def test_offline_judge_words():
    judge = OfflineJudge()
    assert judge.label(COLORS[:5]) == "colors"
    assert judge.aligned(COLORS[5:], "colors") == [1, 1, 1, 0, 1]
    assert judge.label(["qwzx", "blorp"]) == NO_CONCEPT
    assert judge.aligned(["qwzx"], NO_CONCEPT) == [0]
    custom = OfflineJudge(vocabulary_from({"vehicles": ["car", "bus"], "sky": []}))
    assert custom.label(["a car", "a bus", "blue sky"]) == "vehicles"
    assert custom.aligned(["a red car", "clear sky", "a dog"], "sky") == [0, 1, 0]
    assert list(vocabulary_from(["colors", "glass"])) == ["colors", "glass"]
    assert vocabulary_from(["colors"])["colors"][1:] == DEFAULT_VOCABULARY["colors"]
    with pytest.raises(ValueError, match="at least one"):
        vocabulary_from([])


def test_offline_judge_with_clip_text_encoder_is_deterministic(tiny_model):
    from ccs_ray.texts import text_embeddings

    model, _ = tiny_model
    encoder = lambda texts: text_embeddings(model, texts)  # noqa: E731
    a, b = OfflineJudge(text_encoder=encoder), OfflineJudge(text_encoder=encoder)
    assert a.threshold == b.threshold and 0.5 <= a.separation <= 1.0
    for texts in (COLORS, ANIMALS):
        assert a.label(texts[:5]) == b.label(texts[:5])
        assert a.aligned(texts, a.label(texts[:5])) == b.aligned(texts, b.label(texts[:5]))
    words = OfflineJudge()
    if a.threshold is None:  # a random-init text tower separates nothing: only the words count
        assert a.aligned(ANIMALS, "animals") == words.aligned(ANIMALS, "animals")


def test_offline_embedding_signal_extends_the_words():
    # A real (if simple) encoder whose geometry knows that "crimson-ish" belongs with the colours.
    concepts = list(DEFAULT_VOCABULARY)

    def encoder(texts):
        import torch
        out = torch.zeros(len(texts), len(concepts) + 1)
        for i, t in enumerate(texts):
            hits = [c for c, kws in DEFAULT_VOCABULARY.items()
                    if any(k in t for k in kws)] or (["colors"] if "ish" in t else [])
            for c in hits:
                out[i, concepts.index(c)] = 1
            if not hits:
                out[i, -1] = 1
        return torch.nn.functional.normalize(out, dim=1)

    judge = OfflineJudge(text_encoder=encoder)
    assert judge.threshold is not None and judge.separation >= 0.8
    assert judge.aligned(["crimsonish", "qwzx"], "colors") == [1, 0]
    assert OfflineJudge().aligned(["crimsonish", "qwzx"], "colors") == [0, 0]


# --- the offline stage end to end -------------------------------------------------------------------------

def test_offline_stage_writes_every_table(tmp_path):
    write_spans(tmp_path, {"L3.H0": COLORS, "L3.H1": ANIMALS, "L2.H1": COLORS[:7]})
    spec = load_spec({"name": "t"})
    summary = run_stage("judge", spec, str(tmp_path), "r1", MODEL)
    assert summary["judges"] == ["offline-heuristic", "combined"] and summary["heuristic"] and summary["calls"] == 0
    ccs = {(r["head_label"], r["judge"]): r for r in read_table(str(tmp_path), "ccs", "r1").to_pylist()}
    judge = OfflineJudge()
    for head, texts in {"L3.H0": COLORS, "L3.H1": ANIMALS}.items():
        label = judge.label(texts[:5])
        row = ccs[(head, "offline-heuristic")]
        assert row["label"] == label and row["heuristic"] is True
        assert row["ccs"] == sum(judge.aligned(texts[:5], label))
        assert row["ccs_heldout"] == sum(judge.aligned(texts[5:], label))
        assert row["level"] == scores.level(row["ccs"])
        assert ccs[(head, "combined")]["ccs"] == row["ccs"]
    short = ccs[("L2.H1", "offline-heuristic")]  # 7 of the 10 spans: paper scored, heldout incomplete
    assert short["ccs"] == 5 and short["ccs_heldout"] is None
    errors = read_table(str(tmp_path), "errors", "r1").to_pylist()
    assert [e["item"] for e in errors] == ["L2.H1"] and "missing ranks [8, 9, 10]" in errors[0]["detail"]
    judgments = read_table(str(tmp_path), "judgments", "r1").to_pylist()
    assert len(judgments) == 2 * (10 + 10 + 7) and all(j["heuristic"] for j in judgments)
    labels = read_table(str(tmp_path), "labels", "r1").to_pylist()
    assert {r["variant"] for r in labels} == {"paper", "heldout"} and all(r["heuristic"] for r in labels)
    assert summary["ccs_at_k"]["offline-heuristic"][5] == pytest.approx(2 / 3)
    assert summary["label_fidelity"].startswith("not computed: no moments")  # spans written here, no scan
    assert all(r["label_variance"] is None and r["label_percentile"] is None for r in ccs.values())

    run_stage("judge", spec, str(tmp_path), "r1", MODEL)  # a re-run replaces, never duplicates
    assert read_table(str(tmp_path), "judgments", "r1").num_rows == len(judgments)
    assert read_table(str(tmp_path), "ccs", "r1").num_rows == 6


@pytest.mark.parametrize("method", ["data", "weights"])
def test_stage_writes_label_fidelity_of_every_label(tmp_path, tiny_model, method):
    from ccs_ray.circuits import head_covariances
    from ccs_ray.decompose import tower_shape
    from ccs_ray.fidelity import label_fidelity
    from ccs_ray.moments import HeadMoments
    from ccs_ray.texts import text_embeddings

    model, _ = tiny_model
    write_spans(tmp_path, {"L3.H0": COLORS, "L2.H1": ANIMALS})
    (tmp_path / "pool.txt").write_text("\n".join(COLORS + ANIMALS + ["a red dog", "the color blue"]) + "\n")
    if method == "data":
        moments = HeadMoments(MODEL, [2, 3], tower_shape(model), folds=2)  # full moments of synthetic data
        g = np.random.default_rng(0)
        x = torch.as_tensor(g.normal(size=(40, 2, 4, 6)) @ g.normal(size=(6, moments.embed_dim)))  # rank 6 < D
        moments.update(x[:25], 0)
        moments.update(x[25:], 1)
        moments.save(str(tmp_path / "moments.safetensors"))
        write_table(str(tmp_path), "moments", [{"uri": str(tmp_path / "moments.safetensors")}], "r1", MODEL)
        stats = {h: moments.head(h) for h in ("L3.H0", "L2.H1")}
    else:  # no scan: the weights' covariances under the scan's convention
        stats = {h: (1, torch.zeros(len(c)), c) for h, c in head_covariances(model, [2, 3], "textspan").items()}
    spec = load_spec({"name": "t", "scan": {"convention": "textspan"}, "stages": ["scan", "spans", "judge"],
                      "spans": {"template": "a photo of {}", "rank": 4, "pool": str(tmp_path / "pool.txt"),
                                "method": method},
                      "judge": {"vocabulary": {"color": ["red", "blue"], "animal": ["dog", "cat"]}}})
    summary = run_stage("judge", spec, str(tmp_path), "r1", MODEL)
    assert summary["label_fidelity"] == method

    pool = text_embeddings(model, (tmp_path / "pool.txt").read_text().split("\n")[:-1], "a photo of {}")
    rows = read_table(str(tmp_path), "ccs", "r1").to_pylist()
    assert {r["judge"] for r in rows} == {"offline-heuristic", "combined"} and len(rows) == 4
    for r in rows:
        variance, percentile = label_fidelity(*stats[r["head_label"]],
                                              text_embeddings(model, [r["label"]], "a photo of {}"), pool, 4)
        assert r["label_variance"] == pytest.approx(variance[0], rel=1e-5)
        assert r["label_percentile"] == pytest.approx(percentile[0])
    for judge in ("offline-heuristic", "combined"):
        assert summary["label_percentile_median"][judge] == pytest.approx(
            np.median([r["label_percentile"] for r in rows if r["judge"] == judge]))


def test_stage_errors_are_clear(tmp_path):
    with pytest.raises(ValueError, match="no spans"):
        run_stage("judge", load_spec({"name": "t"}), str(tmp_path), "r1", MODEL)
    write_spans(tmp_path, {"L3.H0": COLORS})
    spec = load_spec({"name": "t", "judge": {"kind": "openai"}})
    with pytest.raises(ValueError, match="needs base_url and model"):
        run_stage("judge", spec, str(tmp_path), "r1", MODEL)
    spec = load_spec({"name": "t", "judge": {"judges": [{"kind": "offline"}, {"kind": "offline"}]}})
    with pytest.raises(ValueError, match="unique"):
        run_stage("judge", spec, str(tmp_path), "r1", MODEL)
    spec = load_spec({"name": "t", "judge": {"base_url": "http://127.0.0.1:9/v1", "model": "x",
                                             "api_key_env": "CCS_TEST_UNSET_KEY"}})
    with pytest.raises(ValueError, match="CCS_TEST_UNSET_KEY"):
        run_stage("judge", spec, str(tmp_path), "r1", MODEL)


# --- human ratings ------------------------------------------------------------------------------------------

def test_import_human_ratings_and_kappa(tmp_path):
    write_spans(tmp_path, {"L3.H0": COLORS, "L3.H1": ANIMALS})
    RunState(str(tmp_path), "r1").create(load_spec({"name": "t"}))
    run_stage("judge", load_spec({"name": "t"}), str(tmp_path), "r1", MODEL)
    machine = {(j["head_label"], j["span_rank"]): j["aligned"]
               for j in read_table(str(tmp_path), "judgments", "r1").to_pylist()
               if j["judge"] == "offline-heuristic" and j["variant"] == "paper"}
    human = dict(machine)
    human[("L3.H1", 4)] = 1 - human[("L3.H1", 4)]  # the rater disagrees once
    lines = ["model,head_label,span_rank,aligned,rater"] + [f"{MODEL},{h},{r},{a},ann"
                                                            for (h, r), a in sorted(human.items())]
    (tmp_path / "h.csv").write_text("\n".join(lines) + "\n")
    out = import_human_ratings(str(tmp_path / "h.csv"), str(tmp_path), "r1")
    keys = sorted(human)
    expected = scores.cohen_kappa([human[k] for k in keys], [machine[k] for k in keys])
    assert out["rows"] == 10 and out["raters"] == ["ann"]
    assert out["kappa"][MODEL]["ann"]["offline-heuristic"] == pytest.approx(expected)
    assert out["kappa"][MODEL]["ann"]["combined"] == pytest.approx(expected)
    ccs = {r["head_label"]: r for r in read_table(str(tmp_path), "ccs", "r1").to_pylist() if r["judge"] == "human:ann"}
    assert ccs["L3.H1"]["ccs"] == sum(human[("L3.H1", r)] for r in range(1, 6)) and ccs["L3.H1"]["ccs_heldout"] is None
    texts = {j["span_rank"]: j["text"] for j in read_table(str(tmp_path), "judgments", "r1").to_pylist()
             if j["judge"] == "human:ann" and j["head_label"] == "L3.H0"}
    assert texts[1] == COLORS[0]


@pytest.mark.parametrize("csv_text,message", [
    ("model,head_label,aligned\n", "missing column"),
    ("model,head_label,span_rank,aligned\nm,L3.H0,1,2\n", "aligned must be 0 or 1"),
    ("model,head_label,span_rank,aligned\nm,head3,1,1\n", "line 2.*L<layer>.H<head>"),
    ("model,head_label,span_rank,aligned\nm,L3.H0,0,1\n", "span_rank must be an integer >= 1"),
    ("model,head_label,span_rank,aligned,variant\nm,L3.H0,1,1,other\n", "variant must be one of"),
])
def test_human_ratings_bad_csv(tmp_path, csv_text, message):
    (tmp_path / "h.csv").write_text(csv_text)
    with pytest.raises(ValueError, match=message):
        import_human_ratings(str(tmp_path / "h.csv"), str(tmp_path), "r1")


def test_human_ratings_refuse_a_run_that_is_not_there(tmp_path, capsys):
    from ccs_ray import cli

    for run_id in ("r1", "a b"):
        RunState(str(tmp_path), run_id).create(load_spec({"name": "t"}))
    (tmp_path / "h.csv").write_text(f"model,head_label,span_rank,aligned\n{MODEL},L3.H0,1,1\n")
    before = sorted(tmp_path.rglob("*"))
    assert cli.main(["ratings", str(tmp_path / "h.csv"), "--results", str(tmp_path), "--run-id", "r2"]) == 2
    assert capsys.readouterr().err == f"ccs-ray: ratings: no run 'r2' under {tmp_path}; runs: a b, r1\n"
    assert sorted(tmp_path.rglob("*")) == before  # nothing written


def test_spec_overrides_set_the_endpoint():
    spec = load_spec({"name": "t"}, ["judge.base_url=http://127.0.0.1:8000/v1", "judge.model=m",
                                     "judge.rpm=30", "judge.api_key_env=MY_KEY"])
    assert (spec.judge.kind, spec.judge.base_url, spec.judge.model, spec.judge.rpm, spec.judge.api_key_env) == \
        ("openai", "http://127.0.0.1:8000/v1", "m", 30, "MY_KEY")
    assert "MY_KEY" in json.loads(spec.to_json())["judge"]["api_key_env"]


@pytest.mark.parametrize("overrides", [['judge.base_url="http://127.0.0.1:1/v1"'], ["judge.base_url=http://127.0.0.1:1/v1"],
                                       ["judge.model=gpt-x"], ["judge.api_key_env=MY_KEY"]])
def test_an_llm_key_without_kind_selects_the_llm_judge(overrides):
    assert load_spec(JOBS / "smoke.toml").judge.kind == "offline"  # no LLM key: the offline default
    assert load_spec(JOBS / "smoke.toml", overrides).judge.kind == "openai"


@pytest.mark.parametrize("judge,message", [
    ({"kind": "offline", "base_url": "http://127.0.0.1:1/v1"}, r"judge.kind = 'offline'.*judge.base_url"),
    ({"kind": "offline", "model": "m"}, r"judge.kind = 'offline'.*judge.model"),
    ({"judges": [{"model": "a", "base_url": "http://h/v1"}], "base_url": "http://g/v1"},
     r"judge.judges lists.*judge.base_url"),
    ({"judges": [{"kind": "offline", "model": "m"}]}, r"judge.judges\[0\].kind = 'offline'.*model"),
])
def test_contradictory_judge_keys_are_spec_errors(judge, message):
    with pytest.raises(SpecError, match=message):
        load_spec({"name": "t", "judge": judge})


def test_model_without_base_url_is_an_llm_judge_missing_its_endpoint(tmp_path):
    write_spans(tmp_path, {"L3.H0": COLORS})
    with pytest.raises(ValueError, match="needs base_url"):
        run_stage("judge", load_spec({"name": "t"}, ["judge.model=gpt-x"]), str(tmp_path), "r1", MODEL)


def test_concurrency_splits_exactly_over_actors():
    from ccs_ray.judges.pool import split_slots

    assert split_slots(8, 3) == (3, 3, 2) and split_slots(2, 3) == (1, 1) and split_slots(6, 2) == (3, 3)
    for concurrency in range(1, 40):
        for actors in range(1, 9):
            slots = split_slots(concurrency, actors)
            assert sum(slots) == concurrency and len(slots) == min(actors, concurrency)
            assert min(slots) >= 1 and max(slots) - min(slots) <= 1


def test_base_url_secrets_are_stripped_from_dumps_and_errors():
    from ccs_ray.judges.client import Endpoint, redactor
    from ccs_ray.spec import JudgeConfig

    url = "https://bobby:pa%24s-word@gw.example:8443/v1?api-key=qk-123456&x=1#frag"
    assert JudgeConfig.public_url(url) == "https://gw.example:8443/v1"
    with pytest.raises(SpecError, match="api_key_env") as refused:  # credentials belong in the environment
        load_spec({"name": "t", "judge": {"judges": [{"base_url": url, "model": "m"}]}}, ["judge.heldout=false"])
    assert not any(s in str(refused.value) for s in ("bobby", "pa%24s", "qk-123456"))
    request = judge_request("a red car", "color")
    assert Endpoint(url, "m").key(request) == Endpoint("https://gw.example:8443/v1", "m").key(request)
    redact = redactor(url, "sk-live-abcdef")
    text = ("401 for https://bobby:pa$s-word@gw.example:8443/v1?api-key=qk-123456: key sk-live-abcdef, "
            "{'authorization': 'Basic Ym9iOnBhJHM='}, Authorization: Bearer tok-99 and a basic message")
    assert redact(text) == ("401 for https://***:***@gw.example:8443/v1?api-key=***: key ***, "
                            "{'authorization': 'Basic ***'}, Authorization: Bearer *** and a basic message")
