"""The layout's rules (docs/architecture.md), checked over the source with ``ast``.

No import cycles (lazy imports inside functions included), no module over 400 lines,
no folder of more than 10 modules, every import through the ``altbeam.`` namespace,
and the direction of imports between the rooms.
"""
from __future__ import annotations

import ast
import pathlib

import pytest

from tests.support.paths import REPO

FOLDERS = ("pipelines", "model", "schemas")
MAX_LINES = 400
MAX_MODULES_PER_FOLDER = 10

# Which rooms a module may import from (prefixes of dotted names under altbeam.).
# model: TensorFlow only, never Beam or pipelines; schemas: nothing of ours.
# pipelines may use the model package only for the TensorFlow-free pixel
# preparation, the SavedModel loader of the contract and the caption gate that reads
# its outputs, and (the feature job alone) the encoder and the feature record format.
ALLOWED_MODEL_IMPORTS = {
    "altbeam.pipelines.features": ("altbeam.model",),
    "altbeam.pipelines": ("altbeam.model.__init__", "altbeam.model.data.pixels",
                          "altbeam.model.serving.saved_model",
                          "altbeam.model.serving.model_fetch",
                          "altbeam.model.serving.caption_status"),
}


def module_name(path: pathlib.Path) -> str:
    rel = path.relative_to(REPO).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts[-1] = "__init__"
    return "altbeam." + ".".join(parts)


def source_modules() -> dict[str, pathlib.Path]:
    return {module_name(p): p for folder in FOLDERS
            for p in sorted((REPO / folder).rglob("*.py"))}


MODULES = source_modules()


def imports_of(path: pathlib.Path) -> list[tuple[str, int]]:
    """Every ``altbeam.…`` (or bare old-style) module a file imports, anywhere in it."""
    tree = ast.parse(path.read_text(), str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.module, node.lineno))
            # "from altbeam.x import module" names a module too
            found += [(f"{node.module}.{a.name}", node.lineno) for a in node.names
                      if f"altbeam.{node.module.removeprefix('altbeam.')}.{a.name}" in MODULES
                      or f"{node.module}.{a.name}.__init__" in MODULES]
    return found


def resolve(name: str) -> str | None:
    if name in MODULES:
        return name
    if f"{name}.__init__" in MODULES:
        return f"{name}.__init__"
    return None


def graph() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {}
    for mod, path in MODULES.items():
        targets = {resolve(name) for name, _ in imports_of(path)}
        edges[mod] = {t for t in targets if t and t != mod}
    return edges


def test_every_import_goes_through_the_altbeam_namespace():
    old_style = [f"{path.relative_to(REPO)}:{line}: {name}"
                 for folder in (*FOLDERS, "tests", "bench", "tools", "deploy")
                 for path in sorted((REPO / folder).rglob("*.py"))
                 for name, line in imports_of(path)
                 if name.split(".")[0] in FOLDERS]
    assert old_style == []


def find_cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Each back edge found by a depth-first walk, as the cycle it closes."""
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = 2

    for mod in sorted(edges):
        if mod not in state:
            visit(mod, [mod])
    return cycles


def test_no_import_cycles():
    assert find_cycles(graph()) == []


def test_a_planted_cycle_is_found():
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


@pytest.mark.parametrize("mod", sorted(MODULES))
def test_module_size(mod):
    lines = len(MODULES[mod].read_text().splitlines())
    assert lines <= MAX_LINES, f"{MODULES[mod].relative_to(REPO)}: {lines} lines"


def test_folder_widths():
    wide = {}
    for folder in FOLDERS:
        for d in [REPO / folder, *(p for p in (REPO / folder).rglob("*") if p.is_dir())]:
            n = len([p for p in d.glob("*.py") if p.name != "__init__.py"])
            if n > MAX_MODULES_PER_FOLDER:
                wide[str(d.relative_to(REPO))] = n
    assert wide == {}


def allowed(src: str, dst: str) -> bool:
    if dst.startswith("altbeam.schemas"):
        return True
    if src.startswith("altbeam.schemas"):
        return False
    if src.startswith("altbeam.model"):
        return dst.startswith("altbeam.model")
    if dst.startswith("altbeam.pipelines"):
        return True
    for prefix, targets in sorted(ALLOWED_MODEL_IMPORTS.items(), key=lambda kv: -len(kv[0])):
        if src.startswith(prefix):
            return any(dst.startswith(t) for t in targets)
    return False


def test_imports_run_the_documented_way():
    wrong = sorted(f"{src} -> {dst}" for src, dsts in graph().items() for dst in dsts
                   if not allowed(src, dst))
    assert wrong == []


def test_model_and_schemas_never_import_beam():
    offenders = [f"{MODULES[m].relative_to(REPO)}: {name}"
                 for m in MODULES if not m.startswith("altbeam.pipelines")
                 for name, _ in imports_of(MODULES[m]) if name.startswith("apache_beam")]
    assert offenders == []


def test_installed_namespace_imports():
    import altbeam.model
    import altbeam.pipelines
    import altbeam.schemas

    for pkg, folder in ((altbeam.pipelines, "pipelines"), (altbeam.model, "model"),
                        (altbeam.schemas, "schemas")):
        assert pathlib.Path(pkg.__file__).resolve().parent == REPO / folder
