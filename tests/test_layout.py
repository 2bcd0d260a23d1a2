"""The package layout by role: no import cycle, and no lower layer importing an upper one.

Every ``import`` of every module counts, including those inside functions (a lazy import only
hides a cycle until the function runs); imports under ``if TYPE_CHECKING:`` are type-only and
do not. The layers: the core (top-level modules) and ``sampling/``, ``models/``, ``rewards/``,
``modalities/``, ``tasks/``, ``datasets/`` and ``evaluation/`` never import the trainer, the
recipes or the CLI. The package's ``__init__`` (the public API) is the one exception.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE_DIR = Path(__file__).resolve().parents[1] / "src" / "maskgrpo"
UPPER = ("trainer", "recipes", "cli")  # what the lower layers must not import
LOWER = ("sampling", "models", "rewards", "modalities", "tasks", "datasets", "evaluation")
# The role folders of the tree; a new folder must be placed in a layer (here and in README).
ROLES = set(UPPER) | set(LOWER)

Graph = dict[str, set[str]]


def _module_name(path: Path, root: Path) -> tuple[str, bool]:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    is_package = parts[-1] == "__init__"
    return ".".join(parts[:-1] if is_package else parts), is_package


def _type_checking_only(node: ast.If) -> bool:
    test = node.test
    name = test.attr if isinstance(test, ast.Attribute) else getattr(test, "id", "")
    return name == "TYPE_CHECKING"


def _imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    found: list[ast.Import | ast.ImportFrom] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _type_checking_only(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def import_graph(root: Path) -> Graph:
    """Module -> the package's modules it imports (``from pkg import sub`` names the submodule)."""
    modules = {}
    for path in sorted(root.rglob("*.py")):
        modules[_module_name(path, root)[0]] = path
    top = root.name
    graph: Graph = {name: set() for name in modules}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        for node in _imports(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                if node.level:
                    base = name.split(".") if is_package else name.split(".")[:-1]
                    base = base[: len(base) - node.level + 1]
                    source = ".".join(base + ([node.module] if node.module else []))
                else:
                    source = node.module or ""
                targets = [
                    f"{source}.{a.name}" if f"{source}.{a.name}" in modules else source
                    for a in node.names
                ]
            for target in targets:
                if target == top or target.startswith(top + "."):
                    while target not in modules:  # `import pkg.sub.name` of a non-module
                        target = target.rsplit(".", 1)[0]
                    graph[name].add(target)
    return graph


def cycles(graph: Graph) -> list[list[str]]:
    """Strongly connected components with more than one module, or a module importing itself."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(node: str) -> None:  # Tarjan (1972)
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                connect(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in graph.get(node, ()):
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return found


def _role(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def layer_violations(graph: Graph) -> list[str]:
    """``module -> target`` for each lower-layer or core module importing an upper layer."""
    bad = []
    for module, targets in sorted(graph.items()):
        if _role(module) in UPPER or module.count(".") == 0:  # upper layers, the public API
            continue
        bad.extend(f"{module} -> {t}" for t in sorted(targets) if _role(t) in UPPER)
    return bad


def test_the_package_has_no_import_cycle() -> None:
    graph = import_graph(PACKAGE_DIR)
    assert len(graph) > 50 and sum(map(len, graph.values())) > 100  # the walk found the tree
    assert cycles(graph) == []


def test_no_lower_layer_imports_the_trainer_the_recipes_or_the_cli() -> None:
    assert layer_violations(import_graph(PACKAGE_DIR)) == []


def test_every_folder_has_a_role() -> None:
    folders = {p.name for p in PACKAGE_DIR.iterdir() if (p / "__init__.py").is_file()}
    assert folders == ROLES - {"cli"}, f"place {sorted(folders - ROLES)} in a layer here"


def private_imports(root: Path) -> list[str]:
    """``module: name`` for each private name (``_x``) one module takes from another, by
    ``from m import _x`` or as ``m._x`` of an imported package module."""
    found = []
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        modules = set()
        for node in _imports(tree):
            if isinstance(node, ast.ImportFrom) and (node.level or root.name in (node.module or "")):
                for alias in node.names:
                    modules.add(alias.asname or alias.name)
                    if alias.name.startswith("_") and not alias.name.startswith("__"):
                        found.append(f"{_module_name(path, root)[0]}: {alias.name}")
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in modules
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
            ):
                found.append(f"{_module_name(path, root)[0]}: {node.value.id}.{node.attr}")
    return found


def test_no_module_takes_a_private_name_of_another() -> None:
    assert private_imports(PACKAGE_DIR) == []


def _write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / "pkg" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root / "pkg"


def test_the_checks_catch_a_lazy_cycle_and_an_upward_import(tmp_path: Path) -> None:
    pkg = _write(
        tmp_path,
        {
            "__init__.py": "from .trainer import loop\n",
            "core.py": "def f():\n    from .sampling import draw\n",
            "sampling/__init__.py": "",
            "sampling/draw.py": "from .. import core\nfrom ..trainer.loop import g\n",
            "trainer/__init__.py": "",
            "trainer/loop.py": "import pkg.sampling\nfrom typing import TYPE_CHECKING\n"
            "if TYPE_CHECKING:\n    from ..recipes import demo\n",
            "recipes/__init__.py": "",
            "recipes/demo.py": "from ..trainer import loop\n",
        },
    )
    graph = import_graph(pkg)
    assert graph["pkg.core"] == {"pkg.sampling.draw"}
    assert graph["pkg.trainer.loop"] == {"pkg.sampling"}  # the type-only import left out
    assert cycles(graph) == [["pkg.core", "pkg.sampling.draw"]]
    assert layer_violations(graph) == ["pkg.sampling.draw -> pkg.trainer.loop"]
    (pkg / "recipes" / "demo.py").write_text("from ..trainer import loop\nloop._step()\n")
    (pkg / "core.py").write_text("from .trainer.loop import _g as g\n")
    assert private_imports(pkg) == ["pkg.core: _g", "pkg.recipes.demo: loop._step"]


@pytest.mark.parametrize("name", ["maskgrpo.image", "maskgrpo.modality", "maskgrpo.demo"])
def test_the_dissolved_modules_are_gone(name: str) -> None:
    path = PACKAGE_DIR.parent / name.replace(".", "/")
    assert not path.with_suffix(".py").exists() and not list(path.glob("**/*.py"))


def _readme_layout() -> dict[str, list[str]]:
    """Folder (``""`` = the package root) -> the file names and patterns README's layout lists."""
    text = (PACKAGE_DIR.parents[1] / "README.md").read_text()
    block = text.split("## Layout", 1)[1].split("```", 2)[1]
    listed: dict[str, list[str]] = {}
    folder = ""
    for line in block.splitlines()[2:]:  # after "src/maskgrpo/"
        if not line.startswith("  "):
            break  # the next tree (configs/)
        words = line.split("#", 1)[0].split()
        if line[2] != " ":  # a new entry at the first level: a folder or root files
            folder = words[0].rstrip("/") if words[0].endswith("/") else ""
            words = words[1:] if folder else words
        listed.setdefault(folder, []).extend(w for w in words if w.endswith((".py", "/")))
    return listed


def test_the_readme_layout_matches_the_tree() -> None:
    listed = _readme_layout()
    folders = {p.name for p in PACKAGE_DIR.iterdir() if (p / "__init__.py").is_file()}
    assert set(listed) - {""} == folders
    for folder, names in listed.items():
        for name in names:
            assert list((PACKAGE_DIR / folder).glob(name.rstrip("/"))), f"{folder}/{name} is gone"
    root = {p.name for p in PACKAGE_DIR.glob("*.py")} - {"__init__.py"}
    assert root == set(listed[""]), "README's layout lists the top-level modules exactly"
