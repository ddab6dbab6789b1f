"""The module map of docs/architecture.md holds: engine -> stages -> pipeline -> cli, never upwards.

Every ``import`` in the package (top level or inside a function) is read from the source with ``ast``;
a module may import only modules of its own layer or a lower one.
"""

import ast
from pathlib import Path

import pytest

from ccs_ray.choices import STAGES as STAGE_NAMES

PACKAGE = Path(__file__).resolve().parents[1] / "ccs_ray"

#: Layers from the bottom; a module not listed is in the engine (layer 0).
LAYERS = {"stages": 1, "pipeline": 2, "preflight": 2, "submit": 2, "bench": 2, "cli": 3}
LAYER_NAMES = ("engine", "stages", "pipeline", "cli")


def _module(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _layer(module: str) -> int:
    parts = module.split(".")
    return LAYERS.get(parts[1], 0) if len(parts) > 1 else 0


def _imports(path: Path, source: str | None = None, modules: set[str] | None = None) -> set[str]:
    """ccs_ray modules imported by the package file at ``path`` (relative imports resolved); ``source``
    replaces its text. With ``modules`` (the package's), ``from pkg import sub`` of a submodule imports only ``sub``
    (the package is already being imported), and each import is the module it names."""
    module = _module(path)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text() if source is None else source)):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.split(".")[0] == "ccs_ray"}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] == "ccs_ray":
                subs = {f"{target}.{a.name}" for a in node.names}  # `from . import scan` imports a module
                if modules is None:
                    out |= {target} | subs
                else:
                    out |= {m for m in subs if m in modules} or {target}
    if modules is not None:
        out = {_owner(m, modules) for m in out}
    return out


def _owner(target: str, modules: set[str]) -> str:
    """The module ``target`` names (``ccs_ray.x.name`` -> ``ccs_ray.x``)."""
    while target not in modules and "." in target:
        target = target.rsplit(".", 1)[0]
    return target


def test_no_module_imports_a_higher_layer():
    files = sorted(PACKAGE.rglob("*.py"))
    assert len(files) > 40
    modules = {_module(p) for p in files}
    bad = []
    for path in files:
        here = _module(path)
        for target in _imports(path):
            while target not in modules and "." in target:  # `from .x import name`: the module is x
                target = target.rsplit(".", 1)[0]
            if _layer(target) > _layer(here):
                bad.append(f"{here} ({LAYER_NAMES[_layer(here)]}) imports {target} ({LAYER_NAMES[_layer(target)]})")
    assert not bad, "\n".join(bad)


def test_the_checker_sees_an_upward_import():
    """The rule is not vacuous: an engine module importing a stage inside a function is reported."""
    path = PACKAGE / "textspan.py"
    imports = _imports(path, path.read_text() + "\n\ndef _f():\n    from .stages import scan\n")
    assert "ccs_ray.stages.scan" in imports and _layer("ccs_ray.stages.scan") > _layer("ccs_ray.textspan")


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of ``graph`` with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while not component or component[-1] != v:
                component.append(stack.pop())
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _graph() -> dict[str, set[str]]:
    files = sorted(PACKAGE.rglob("*.py"))
    modules = {_module(p) for p in files}
    return {_module(p): _imports(p, modules=modules) - {_module(p)} for p in files}


def test_the_import_graph_has_no_cycle():
    """No module imports, at any depth and inside functions too, a module that imports it back."""
    assert not _cycles(_graph())


def test_the_cycle_check_sees_a_cycle():
    graph = _graph()
    graph["ccs_ray.runs"] = graph["ccs_ray.runs"] | {"ccs_ray.pipeline"}
    assert ["ccs_ray.pipeline", "ccs_ray.runs"] in [c for c in _cycles(graph) if len(c) == 2] or any(
        {"ccs_ray.pipeline", "ccs_ray.runs"} <= set(c) for c in _cycles(graph))


def test_stage_contracts_give_the_spec_order_and_only_earlier_needs():
    from ccs_ray.spec import load_spec
    from ccs_ray.stages import STAGES, run_order

    assert tuple(s.name for s in STAGES) == STAGE_NAMES == tuple(run_order())
    specs = [load_spec({"name": "n"}), load_spec({"name": "n", "prune": {"mode": "mean"}}),
             load_spec({"name": "n", "stages": ["spans"], "spans": {"method": "weights"}})]
    for s in STAGES:
        for spec in specs:
            assert {n.stage for n in s.needs(spec)} <= set(STAGE_NAMES[:STAGE_NAMES.index(s.name)]), s.name


def test_the_documented_stage_table_is_the_contracts():
    from ccs_ray.stages.contract import markdown_table

    doc = (PACKAGE.parent / "docs" / "architecture.md").read_text()
    assert markdown_table() in doc, "docs/architecture.md: paste ccs_ray.stages.contract.markdown_table()"


def test_no_two_modules_share_a_name_at_different_levels():
    """A name means one thing: ``stages.explain`` is the stage and no engine module is called ``explain`` (bench
    modules are named after their command, ``ccs-ray bench NAME``, and live apart)."""
    names: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        module = _module(path)
        if not module.startswith("ccs_ray.bench.") and module != "ccs_ray":
            names.setdefault(module.rsplit(".", 1)[-1], set()).add(module)
    clashes = {k: sorted(v) for k, v in names.items() if len({m.count(".") for m in v}) > 1}
    assert not clashes


def test_front_door_and_judge_actors_do_not_load_torch():
    """The CLI (``--help``, a spec error), the public API's names and a judge worker's modules import neither
    torch nor open_clip until an engine name is used."""
    import subprocess
    import sys

    code = ("import sys, ccs_ray, ccs_ray.cli, ccs_ray.spec, ccs_ray.judges.pool, ccs_ray.judges.limiter\n"
            "assert 'ablated' in dir(ccs_ray)\n"
            "heavy = sorted(m for m in ('torch', 'open_clip') if m in sys.modules)\n"
            "assert not heavy, heavy\n"
            "from ccs_ray import textspan\n"
            "import ccs_ray.textspan\n"
            "assert callable(textspan) and ccs_ray.textspan is textspan and 'torch' in sys.modules\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr


@pytest.mark.parametrize("command", [["--help"], ["sql", "SELECT count(*) AS n FROM runs"], ["report", "-o", "OUT"]])
def test_cli_commands_that_need_no_engine_import_no_torch_or_ray(command, tmp_path):
    """``ccs-ray --help``, ``sql`` and ``report`` (on a results root) load neither torch, open_clip nor Ray."""
    import subprocess
    import sys

    root = Path(__file__).parent / "fixtures" / "results-0.1.0"
    argv = [str(tmp_path / "report.html") if a == "OUT" else a for a in command]
    argv += ["--results", str(root)] if command[0] != "--help" else []
    code = ("import sys\nfrom ccs_ray.cli import main\n"
            "try:\n    rc = main(sys.argv[1:])\nexcept SystemExit as e:\n    rc = e.code\n"
            "heavy = sorted(m for m in ('torch', 'open_clip', 'ray') if m in sys.modules)\n"
            "print('RC', rc, 'HEAVY', heavy)\n")
    out = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip().splitlines()[-1] == "RC 0 HEAVY []", out.stderr[-2000:]


def test_no_stage_imports_another_stage():
    """What two stages share lives in the engine: a stage's module imports no other stage's module."""
    graph = _graph()
    stages = {f"ccs_ray.stages.{name}" for name in STAGE_NAMES}
    bad = {m: sorted(graph[m] & (stages - {m})) for m in stages if graph[m] & (stages - {m})}
    assert not bad
    graph["ccs_ray.stages.explain"].add("ccs_ray.stages.spans")  # the check sees one
    assert {m for m in stages if graph[m] & (stages - {m})} == {"ccs_ray.stages.explain"}
