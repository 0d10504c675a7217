"""The layout is the architecture: no import cycles, dependencies point one way.

``cli -> daemon | sim -> core -> peer_sampling``. Imports are read from the
source (every ``import`` statement, including those inside functions and
``if TYPE_CHECKING:`` blocks), so a cycle hidden behind a lazy import still fails.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("gossipd", "peer_sampling", "cli")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}


def _resolve(target: str, modules: dict[str, Path]) -> str | None:
    """The project module ``target`` names (a module, or a name inside a package)."""
    while target:
        if target in modules:
            return target
        target = target.rpartition(".")[0]
    return None


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*up, base] if base else up)
                targets = [f"{base}.{a.name}" for a in node.names] + [base]
            for t in targets:
                dep = _resolve(t, modules)
                # A package's __init__ is not a dependency of its own modules.
                if dep is not None and dep != name and not name.startswith(dep + "."):
                    graph[name].add(dep)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = 0

    def visit(v: str) -> None:
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles() -> None:
    assert _cycles(import_graph()) == []


def test_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


# Layer -> the module prefixes it must never import.
FORBIDDEN = {
    "peer_sampling": ("gossipd", "cli"),
    "gossipd.core": ("gossipd.sim", "gossipd.daemon", "gossipd.wire", "gossipd.export", "cli"),
    "gossipd.sim": ("gossipd.daemon", "cli"),
    "gossipd.daemon": ("gossipd.sim", "cli"),
    "gossipd": ("cli",),
}


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_dependencies_point_one_way(layer: str) -> None:
    bad = []
    for module, deps in import_graph().items():
        if module == layer or module.startswith(layer + "."):
            for dep in deps:
                if any(dep == f or dep.startswith(f + ".") for f in FORBIDDEN[layer]):
                    bad.append(f"{module} -> {dep}")
    assert bad == []


def test_core_does_no_io() -> None:
    """The sans-IO core never imports a network, clock or event-loop module."""
    io_modules = {"aiohttp", "asyncio", "time", "socket", "threading.Timer", "urllib", "http"}
    bad = []
    for name, path in _modules().items():
        if name.startswith(("gossipd.core", "peer_sampling")):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    bad += [f"{name}: {a.name}" for a in node.names if a.name.split(".")[0] in io_modules]
                elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in io_modules:
                    bad.append(f"{name}: {node.module}")
    assert bad == []


HEAVY = ("torch", "sklearn", "onnxruntime", "matplotlib")


def _loaded_after(code: str, modules: tuple[str, ...]) -> list[str]:
    """Which of ``modules`` a fresh interpreter has loaded after running ``code``."""
    probe = f"{code}\nimport sys\nprint(' '.join(m for m in {modules!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True)
    return out.stdout.split()


def test_importing_the_cli_loads_no_torch_or_sklearn() -> None:
    assert _loaded_after("import cli.main", HEAVY) == []


def test_quick_cli_commands_load_nothing_heavy() -> None:
    """`gossip --version` and `gossip status|peers|join|crawl|wait --help` answer at once:
    no torch or sklearn, and not even numpy or aiohttp (imported when a request is made)."""
    code = ("from click.testing import CliRunner\nfrom cli.main import cli\n"
            "for args in (['--version'], *([c, '--help'] for c in ('status', 'peers', 'join', 'crawl', 'wait'))):\n"
            "    assert CliRunner().invoke(cli, args).exit_code == 0, args")
    assert _loaded_after(code, (*HEAVY, "numpy", "aiohttp")) == []


def test_the_daemon_binds_before_importing_torch() -> None:
    """gossipd answers /healthz within a second of exec: its command, config and driver
    modules import no torch or scikit-learn (the driver loads them after binding)."""
    assert _loaded_after("import gossipd.daemon.main, gossipd.daemon.driver", HEAVY) == []


def test_simulating_a_builtin_model_loads_no_torch_or_sklearn() -> None:
    """`gossip simulate` with a built-in model (both engines, with every baseline) runs on
    numpy alone: torch would cost more start-up (~1.3 s, ~190 MB) than a 1000-node run itself."""
    code = ("from gossipd.sim.config import SimulationConfig\nfrom gossipd.sim.simulation import simulate\n"
            "for engine in ('batched', 'exact'):\n"
            "    simulate(SimulationConfig(nodes=12, cycles=2, eval_every=2, engine=engine,\n"
            "                              baselines=('centralised', 'local', 'fedavg')))")
    assert _loaded_after(code, ("torch", "sklearn")) == []
