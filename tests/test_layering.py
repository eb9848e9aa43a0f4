"""The layers of ``docs/architecture``: every import in ``audit/`` (module level AND inside functions) points
down or sideways, never up; there are no import cycles; the engine pulls in no streamlit or plotly."""
import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

#: Layer of each package or module under audit/ (the longest matching prefix wins). A module may import
#: modules of its own layer or below. A new module gets its line here.
LAYERS = {
    "audit.__version__": 0, "audit.errors": 0, "audit.types": 0, "audit.schema": 0, "audit.config": 0,
    "audit.display": 0, "audit.escaping": 0,
    "audit.io": 1,
    "audit.model": 2, "audit.analysis": 2,
    "audit.policy": 3, "audit.findings": 3, "audit.reviews": 3, "audit.migrate": 3,
    "audit.pipeline": 4, "audit.annotation_audit": 4,
    "audit.folder": 5, "audit.review_sample": 5,
    "audit.report": 6,
    "audit.compare": 4, "audit.compare.folder": 5, "audit.compare.render": 6, "audit.compare.report": 6,
    "audit.compare.gate": 7,
    "audit.gate": 7, "audit.cli": 7, "audit.__main__": 7, "audit": 7,  # "audit": the package's __init__ only
}
LAYER_NAMES = ["types/errors/config", "io", "model/analysis", "policy", "pipeline", "folder", "report", "cli/gate/API"]

#: analysis/ is pure: it sees data only as arguments, so it imports nothing of the engine but these.
ANALYSIS_MAY_IMPORT = ("audit.analysis", "audit.errors", "audit.types")

ENGINE_MODULES = ["audit", "audit.io.manifest", "audit.io.images", "audit.analysis.distribution",
                  "audit.analysis.associations", "audit.analysis.label_noise", "audit.analysis.group_performance",
                  "audit.pipeline", "audit.pipeline.steps", "audit.cli", "audit.policy", "audit.folder", "audit.gate"]


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> set:
    return {_module_name(p) for p in (REPO / "audit").rglob("*.py")}


def _imports(path: Path, module: str | None = None) -> list:
    """``(line, imported module)`` for every import statement anywhere in the file (functions included)."""
    module = module or _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    known = _modules()
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module
            for alias in node.names:
                # `from audit.report import figures` imports the module audit.report.figures
                candidate = f"{source}.{alias.name}"
                if candidate in known:
                    found.append((node.lineno, candidate))
                elif source == "audit" and alias.name == "__version__":
                    found.append((node.lineno, "audit.__version__"))
                else:
                    found.append((node.lineno, source))
    return [(line, name) for line, name in found if name == "audit" or name.startswith("audit.")]


def _layer(module: str):
    if module.startswith("audit.cli_"):  # a subcommand in its own module (COORD: audit/cli_<name>.py)
        return LAYERS["audit.cli"]
    best = None
    for prefix, layer in LAYERS.items():
        if module == prefix or (prefix != "audit" and module.startswith(prefix + ".")):
            if best is None or len(prefix) > len(best[0]):
                best = (prefix, layer)
    return None if best is None else best[1]


def _graph() -> dict:
    return {_module_name(p): _imports(p) for p in sorted((REPO / "audit").rglob("*.py"))}


def test_every_module_has_a_layer():
    assert sorted(m for m in _modules() if _layer(m) is None) == []


def _upward(graph: dict) -> list:
    offenders = []
    for module, imports in graph.items():
        own = _layer(module)
        for line, imported in imports:
            target = _layer(imported)
            if target is None:
                offenders.append(f"{module}:{line} imports unknown {imported}")
            elif target > own:
                offenders.append(f"{module}:{line} ({LAYER_NAMES[own]}) imports {imported} ({LAYER_NAMES[target]})")
    return offenders


def test_imports_point_down_the_layers_including_those_inside_functions():
    assert _upward(_graph()) == []


def test_analysis_is_pure():
    offenders = [f"{module}:{line} imports {imported}" for module, imports in _graph().items()
                 if module.startswith("audit.analysis.") or module == "audit.analysis"
                 for line, imported in imports
                 if not any(imported == p or imported.startswith(p + ".") for p in ANALYSIS_MAY_IMPORT)]
    assert offenders == []


def test_no_import_cycles():
    graph = {module: {name for _, name in imports if name in _graph_keys()} for module, imports in _graph().items()}
    # a package's __init__ runs before any of its modules: importing the package itself is not an edge back
    cycles = []
    state = {}

    def visit(node, stack):
        state[node] = "open"
        for target in sorted(graph.get(node, ())):
            if target == node or node.startswith(target + "."):
                continue
            if state.get(target) == "open":
                cycles.append(" -> ".join(stack[stack.index(target):] + [target]))
            elif target not in state:
                visit(target, stack + [target])
        state[node] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert cycles == []


def _graph_keys() -> set:
    return _modules()


def test_the_layer_test_sees_imports_inside_functions(tmp_path):
    """The walker itself: upward imports hidden in a function body or written relatively are found."""
    fake = tmp_path / "fake.py"
    fake.write_text("from audit.errors import InputError\n\n"
                    "def f():\n    from audit.report import render\n    import audit.pipeline\n"
                    "    from ..folder import load_audit_json\n")
    imports = _imports(fake, "audit.io.fake")
    assert [name for _, name in imports] == ["audit.errors", "audit.report.render", "audit.pipeline", "audit.folder"]
    assert _upward({"audit.io.fake": imports}) == [
        "audit.io.fake:4 (io) imports audit.report.render (report)",
        "audit.io.fake:5 (io) imports audit.pipeline (pipeline)",
        "audit.io.fake:6 (io) imports audit.folder (folder)"]


def test_engine_imports_no_streamlit_or_plotly():
    code = ("import importlib, sys\n"
            f"for name in {ENGINE_MODULES!r}:\n"
            "    importlib.import_module(name)\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('streamlit', 'plotly')))\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_no_streamlit_import_anywhere_under_audit():
    offenders = [f"{module}:{line}" for module, imports in _graph().items() for line, name in imports
                 if name.split(".")[0] == "streamlit"]
    for path in (REPO / "audit").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            offenders += [f"{path}:{node.lineno}" for name in names if name.split(".")[0] == "streamlit"]
    assert offenders == []
