"""The package map holds: no import cycle between packages, validation only reads artifacts, runners never import
build code, backend folders do not import each other, and no code outside backends/ and data/ decides by a file
suffix. Imports are read from the source (every ``import``, including those inside functions and under
``if TYPE_CHECKING:``)."""
from __future__ import annotations

import ast
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

import sa_deploy

PACKAGE_ROOT = Path(sa_deploy.__file__).resolve().parent

# what validate/ and the runners must not import: exporters, converters, the quantizer, benchmark builders
BUILD_MODULES = ("sa_deploy.exporters.onnx", "sa_deploy.exporters.simplify", "sa_deploy.exporters.fp16",
                 "sa_deploy.calibration", "sa_deploy.bench", "sa_deploy.rewrite")
BACKEND_BUILD_PARTS = ("export", "build", "calibrator", "w8a8", "image", "lint", "convert")


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE_ROOT.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path) -> set[str]:
    """Absolute names of the sa_deploy modules ``path`` imports (``from a import b`` yields a and a.b)."""
    tree = ast.parse(path.read_text())
    skip: set[int] = set()  # TYPE_CHECKING imports count too: a cycle through annotations is still a cycle
    this = module_name(path).split(".")
    package = this if path.name == "__init__.py" else this[:-1]
    found: set[str] = set()
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in skip:
            continue
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names)
    return {m for m in found if m == "sa_deploy" or m.startswith("sa_deploy.")}


_RAW = {module_name(p): imports_of(p) for p in sorted(PACKAGE_ROOT.rglob("*.py"))}
# keep module names only (``from sa_deploy import __version__`` also yields "sa_deploy.__version__")
MODULES = {mod: {d for d in deps if d in _RAW} for mod, deps in _RAW.items()}


def package_of(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2])


def _matches(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def _backend_build(module: str) -> bool:
    parts = module.split(".")
    return len(parts) >= 4 and parts[1] == "backends" and parts[3] in BACKEND_BUILD_PARTS


def test_no_import_cycle_between_packages():
    graph: dict[str, set[str]] = {}
    for mod, deps in MODULES.items():
        src = package_of(mod)
        graph.setdefault(src, set()).update(
            package_of(d) for d in deps if package_of(d) not in (src, "sa_deploy"))
    # depth-first search for a back edge
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt):] + [nxt]
                pytest.fail("import cycle between packages: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)


def test_validate_only_reads_artifacts():
    bad = {mod: sorted(d for d in deps if _matches(d, BUILD_MODULES) or _backend_build(d))
           for mod, deps in MODULES.items() if mod.startswith("sa_deploy.validate")}
    assert not {m: d for m, d in bad.items() if d}, "validate/ imports build code"


def test_runners_do_not_import_build_code():
    runners = [m for m in MODULES if m.startswith("sa_deploy.backends.") and m.endswith(".runner")]
    assert len(runners) >= 4
    bad = {mod: sorted(d for d in MODULES[mod] if _matches(d, BUILD_MODULES) or _backend_build(d))
           for mod in runners}
    assert not {m: d for m, d in bad.items() if d}, "a runner imports build code"


def test_backend_folders_do_not_import_each_other():
    def folder(module: str) -> str | None:
        parts = module.split(".")
        return parts[2] if len(parts) >= 3 and parts[1] == "backends" and \
            (PACKAGE_ROOT / "backends" / parts[2]).is_dir() else None

    bad = []
    for mod, deps in MODULES.items():
        own = folder(mod)
        if own:
            bad += [(mod, d) for d in deps if folder(d) not in (None, own)]
    assert not bad, f"backend folders import each other: {bad}"


def test_the_walker_sees_function_level_imports():
    # api.py imports the quantizer inside a function: the walker must see it, or the tests above prove nothing
    assert "sa_deploy.calibration.int8" in MODULES["sa_deploy.api"]


def test_ruff_passes():
    """The lint configuration in pyproject.toml holds for the package, the tests and the scripts."""
    if importlib.util.find_spec("ruff") is None:
        pytest.skip("ruff not installed (it is in the dev extra)")
    root = PACKAGE_ROOT.parent
    proc = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "sa_deploy", "tests", "scripts"],
                          cwd=root, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:]


# suffix dispatch: deciding what to do with an artifact by its file suffix belongs to the backend managers (and to
# data/ for image layouts); everywhere else asks the registry (backends.backend_for / find_backend / output_backend)
SUFFIX_DISPATCH_ALLOWED = {
    "sa_deploy.cli.out_path": "the --out rule: a path ending in the suffix a command writes names a file (issue 26)",
}
ARTIFACT_SUFFIX_LITERALS = (".onnx", ".xml", ".bin", ".mlpackage", ".engine", ".plan", ".pte", ".tflite")


def _mentions_artifact_suffix(text: str) -> bool:
    return any(f"'{s}'" in text or f'"{s}"' in text for s in ARTIFACT_SUFFIX_LITERALS)


def suffix_dispatch(path: Path) -> list[str]:
    """Lines of ``path`` that decide by an artifact's suffix: a comparison, membership test or lookup on
    ``.suffix`` against artifact suffixes (written there or in a module-level name), or ``.endswith`` with one."""
    tree = ast.parse(path.read_text())
    named = {t.id: ast.unparse(node.value) for node in tree.body if isinstance(node, (ast.Assign, ast.AnnAssign))
             for t in (node.targets if isinstance(node, ast.Assign) else [node.target]) if isinstance(t, ast.Name)
             and node.value is not None}

    def artifact_like(node: ast.AST) -> bool:
        text = ast.unparse(node)
        return _mentions_artifact_suffix(text) or (isinstance(node, ast.Name) and
                                                    _mentions_artifact_suffix(named.get(node.id, "")))

    def on_suffix(node: ast.AST) -> bool:
        return isinstance(node, ast.Attribute) and node.attr == "suffix"

    found = []
    for node in ast.walk(tree):
        hit = False
        if isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
            hit = any(on_suffix(o) for o in operands) and any(artifact_like(o) for o in operands if not on_suffix(o))
        elif isinstance(node, ast.Subscript):
            hit = on_suffix(node.slice) and artifact_like(node.value)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            if node.func.attr == "get":
                hit = any(on_suffix(a) for a in node.args) and artifact_like(node.func.value)
            elif node.func.attr == "endswith":
                hit = any(artifact_like(a) for a in node.args)
        if hit:
            found.append(f"{path.name}:{node.lineno}: {ast.unparse(node)[:100]}")
    return found


def test_no_suffix_dispatch_outside_backends_and_data():
    bad = []
    for path in sorted(PACKAGE_ROOT.rglob("*.py")):
        mod = module_name(path)
        if mod.startswith(("sa_deploy.backends", "sa_deploy.data")) or mod in SUFFIX_DISPATCH_ALLOWED:
            continue
        bad += suffix_dispatch(path)
    assert not bad, "suffix dispatch outside backends/ and data/ (ask the backend registry):\n" + "\n".join(bad)


def test_the_suffix_walker_sees_dispatch(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text("KNOWN = {'.xml': 1}\n\ndef f(p, d):\n    if p.suffix == '.onnx':\n        pass\n"
                      "    KNOWN.get(p.suffix)\n    x = p.suffix in KNOWN\n    y = p.suffix == '.json'\n"
                      "    return p.name.endswith(('.engine', '.plan'))\n")
    assert len(suffix_dispatch(sample)) == 4  # not the '.json' comparison: a report file, not an artifact
