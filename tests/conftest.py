"""Shared fixtures: one local Ray cluster per test session, tiny random-init models, and the guard that keeps
shared objects as every test found them.

A session- or module-scoped model is handed to many tests. A test that must change one takes a copy
(``tiny_model_copy``); the autouse guard compares every guarded object among a test's fixtures with a pristine
copy after the test, fails the test that changed one (naming each parameter, buffer or attribute it changed), and
puts the object back as it was so that the tests after it are not affected.
"""

import contextlib
import copy
import fcntl
import hashlib
import json
import os
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

_GUARDED: dict[int, tuple[object, object, dict]] = {}  # id -> (the object handed out, a pristine copy, its print)


def guarded(obj, request):
    """Register ``obj``, the value (or first item of the value) of the session- or module-scoped fixture of
    ``request``, with the guard until that fixture ends; returns ``obj``."""
    pristine = copy.deepcopy(obj)
    _GUARDED[id(obj)] = (obj, pristine, fingerprint(pristine))
    request.addfinalizer(lambda: _GUARDED.pop(id(obj), None))
    return obj


def _tensor_print(t) -> tuple:
    """(shape, dtype, device, requires_grad, a digest of the bytes) of tensor ``t``."""
    import torch

    data = t.detach().cpu().contiguous().view(-1)
    digest = hashlib.blake2b(data.view(torch.uint8).numpy().tobytes(), digest_size=16).hexdigest()
    return tuple(t.shape), str(t.dtype), str(t.device), t.requires_grad, digest


def _plain(value) -> bool:
    return value is None or isinstance(value, (bool, int, float, str, bytes, tuple, frozenset))


def fingerprint(obj) -> dict[str, object]:
    """What a test could change in ``obj`` (a torch module, or anything with a ``__dict__``): every parameter's and
    buffer's shape, dtype, device and bytes, the set of submodules, and every plain attribute, by dotted name."""
    import torch

    if not isinstance(obj, torch.nn.Module):
        return {f"attribute {k}": repr(v) for k, v in vars(obj).items()}
    out: dict[str, object] = {}
    for prefix, module in obj.named_modules(remove_duplicate=False):
        at = f"{prefix}." if prefix else ""
        out[f"submodules of {prefix or 'the model'}"] = tuple(module._modules)
        for kind, entries in (("parameter", module._parameters), ("buffer", module._buffers)):
            for key, value in entries.items():
                out[f"{kind} {at}{key}"] = None if value is None else _tensor_print(value)
        for key, value in vars(module).items():
            if not key.startswith("_") and _plain(value):
                out[f"attribute {at}{key}"] = value
    return out


def _changes(before: dict, after: dict) -> list[str]:
    lines = [f"{key} removed" for key in before.keys() - after.keys()]
    lines += [f"{key} added" for key in after.keys() - before.keys()]
    for key in before.keys() & after.keys():
        if before[key] != after[key]:
            was, now = before[key], after[key]
            if isinstance(was, tuple) and isinstance(now, tuple) and len(was) == len(now) == 5:  # a tensor
                what = ["shape", "dtype", "device", "requires_grad", "values"]
                lines.append(f"{key}: {', '.join(w for w, a, b in zip(what, was, now, strict=True) if a != b)} "
                             "changed")
            else:
                lines.append(f"{key}: {was!r} -> {now!r}")
    return sorted(lines)


@pytest.fixture(autouse=True)
def _shared_objects_unchanged(request):
    """Fails the test that changed a guarded object among the fixtures it used, and restores the object."""
    yield
    changed = {}
    for name in request.fixturenames:
        try:  # the wider-scoped fixtures are alive still; the test's own ones are torn down already
            value = request.getfixturevalue(name)
        except AssertionError:
            continue
        for obj in value if isinstance(value, tuple) else (value,):
            entry = _GUARDED.get(id(obj))
            if entry is None or entry[0] is not obj:
                continue
            diff = _changes(entry[2], fingerprint(obj))
            if diff:
                changed[name] = diff
                obj.__dict__.clear()
                obj.__dict__.update(copy.deepcopy(entry[1]).__dict__)
    if changed:
        pytest.fail("the test changed shared fixtures (take a copy, e.g. tiny_model_copy): " + "; ".join(
            f"{name}: {', '.join(diff)}" for name, diff in changed.items()), pytrace=False)


@pytest.fixture(scope="session")
def ray_cluster():
    """A real Ray cluster: the one at RAY_ADDRESS when set, else a local 2-CPU one started here."""
    import ray

    from ccs_ray.cluster import ensure_ray

    ensure_ray(num_cpus=2)
    yield ray
    ray.shutdown()


SMOKE = Path(__file__).resolve().parents[1] / "jobs" / "smoke.toml"


def _session_dir(tmp_path_factory) -> Path:
    """A folder of this test session that every xdist worker shares (each worker's own temp folder is beneath it)."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@contextlib.contextmanager
def _locked(path: Path):
    """Holds an exclusive lock on the file ``path`` (created) across processes."""
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


@pytest.fixture(autouse=True)
def _one_test_of_a_group_at_a_time(request, tmp_path_factory):
    """Tests of one ``xdist_group`` never run at once, in any worker: each holds its group's lock around its own
    (function-scoped) fixtures and its body; autouse, this lock is taken before them. (The group is a lock rather
    than a worker: pytest 9 derives a test's node id from its collection address, so the group suffix xdist appends
    to it no longer reaches the scheduler.)"""
    mark = request.node.get_closest_marker("xdist_group")
    if mark is None:
        yield
        return
    name = mark.args[0] if mark.args else mark.kwargs.get("name", "default")
    with _locked(_session_dir(tmp_path_factory) / f"group-{name}.lock"):
        yield


@pytest.fixture(scope="session")
def _smoke_run(ray_cluster, tmp_path_factory):
    from ccs_ray import pipeline
    from ccs_ray.spec import load_spec

    shared = _session_dir(tmp_path_factory) / "smoke"
    shared.mkdir(exist_ok=True)
    root, summary = shared / "results", shared / "summary.json"
    spec = load_spec(str(SMOKE), [f"results.root={json.dumps(str(root))}"])
    with _locked(shared / "run.lock"):  # the first worker to ask runs it; the others read what it wrote
        if not summary.exists():
            summary.write_text(json.dumps(pipeline.run(spec, progress=False), default=str))
    return spec, str(root), json.loads(summary.read_text())


def _listing(root: str) -> dict[str, tuple[int, int]]:
    """path -> (size, modification time in ns) of every file and folder under ``root``."""
    out = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            st = os.stat(os.path.join(folder, name))
            out[os.path.relpath(os.path.join(folder, name), root)] = (st.st_size, st.st_mtime_ns)
    return out


@pytest.fixture
def smoke_run(_smoke_run):
    """(spec, results root, summary) of ``jobs/smoke.toml`` run once per test session (by the first worker that asks),
    for the tests that read a whole run. A test that writes under the root fails: its files, sizes and modification
    times are compared after the test."""
    spec, root, summary = _smoke_run
    before = _listing(root)
    yield spec, root, copy.deepcopy(summary)
    after = _listing(root)
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    assert not changed, f"the test changed the shared smoke run under {root}: {changed[:10]}"


@pytest.fixture(scope="session")
def tiny_model(request):
    """(model, preprocess) of the 4-layer, 4-head, 32-pixel ``ccs-tiny`` config, random init, fp32, CPU. Shared by
    the session and guarded: a test that changes the model fails; take ``tiny_model_copy`` to change one."""
    import torch

    from ccs_ray import load_model

    torch.manual_seed(0)
    model, preprocess = load_model("ccs-tiny/none", device="cpu")
    return guarded(model, request), preprocess


@pytest.fixture
def tiny_model_copy(tiny_model):
    """(a deep copy of the session's tiny model for this test alone, preprocess)."""
    return copy.deepcopy(tiny_model[0]), tiny_model[1]
