"""Layers point down: every import in src/corrmark (module level and inside functions, relative and absolute) goes to
the importing module's own layer or a lower one.

``LAYERS`` is the table of ``corrmark/__init__.py``'s docstring (a test keeps the two equal). The modules are read with
``ast``, never imported, so an upward import is caught even on a code path no test runs.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

SOURCE_ROOT = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SOURCE_ROOT / "corrmark"

# layer -> modules (relative to corrmark; "corrmark" is the package's own __init__), lowest layer first
LAYERS = {
    "foundation": ("errors", "registry", "config", "device", "io", "provenance", "preprocess", "cache", "checkpoints",
                   "formats", "bundled"),
    "ops": ("ops",),
    "backbones": ("backbones",),
    "data": ("data",),
    "models": ("models",),
    "losses": ("losses",),
    "viz": ("viz",),
    "eval": ("eval",),
    "train": ("train",),
    "application": ("corrmark", "api", "zoo", "propagate", "demo", "bench"),
    "cli": ("cli", "__main__"),
}
RANK = {layer: rank for rank, layer in enumerate(LAYERS)}


def dotted(name: str) -> str:
    return "corrmark" if name == "corrmark" else f"corrmark.{name}"


def layer_of(module: str) -> str | None:
    """The layer of a dotted module name: its longest listed prefix (the package itself only by exact name)."""
    best, best_length = None, -1
    for layer, names in LAYERS.items():
        for name in map(dotted, names):
            matches = module == name or (name != "corrmark" and module.startswith(name + "."))
            if matches and len(name) > best_length:
                best, best_length = layer, len(name)
    return best


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SOURCE_ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_module(name: str) -> bool:
    path = SOURCE_ROOT.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def imported_modules(source: str, module: str, is_package: bool) -> list[tuple[int, str]]:
    """(line, module) of every corrmark import in ``source``, the module of ``from X import name`` being ``X.name``
    when that is a module."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[:len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                found.append((node.lineno, f"{target}.{alias.name}" if is_module(f"{target}.{alias.name}") else target))
    return [(line, name) for line, name in found if name == "corrmark" or name.startswith("corrmark.")]


def upward_imports(source: str, module: str, is_package: bool, file: str) -> list[str]:
    """One line per import of a higher layer: file, line, both modules and both layers."""
    own = layer_of(module)
    problems = []
    for line, target in imported_modules(source, module, is_package):
        imported = layer_of(target)
        if imported is not None and own is not None and RANK[imported] > RANK[own]:
            problems.append(f"{file}:{line}: {module} ({own}) imports {target} ({imported}), a higher layer")
    return sorted(set(problems))


def source_modules() -> list[tuple[Path, str]]:
    return [(path, module_name(path)) for path in sorted(PACKAGE.rglob("*.py"))]


def test_no_module_imports_a_higher_layer():
    problems = []
    for path, module in source_modules():
        problems += upward_imports(path.read_text(), module, path.name == "__init__.py",
                                   str(path.relative_to(SOURCE_ROOT.parent)))
    assert not problems, "imports that point up a layer:\n" + "\n".join(problems)


def test_every_module_has_a_layer_and_every_listed_module_exists():
    unassigned = [module for _, module in source_modules() if layer_of(module) is None]
    assert not unassigned, f"modules in no layer (add them to LAYERS and the corrmark docstring): {unassigned}"
    stale = [name for names in LAYERS.values() for name in names if not is_module(dotted(name))]
    assert not stale, f"LAYERS lists modules that do not exist: {stale}"


def test_the_checker_catches_upward_imports():
    """Inside a function, relative, absolute, and ``from package import submodule``: each is named with its line."""
    source = ("import corrmark.errors\n"
              "from ..ops import pixel_grid\n"
              "def build():\n"
              "    from ..train.runner import Experiment\n"
              "    import corrmark.cli\n"
              "    from .. import zoo\n")
    problems = upward_imports(source, "corrmark.models.fake", False, "src/corrmark/models/fake.py")
    assert problems == [
        "src/corrmark/models/fake.py:4: corrmark.models.fake (models) imports corrmark.train.runner (train), "
        "a higher layer",
        "src/corrmark/models/fake.py:5: corrmark.models.fake (models) imports corrmark.cli (cli), a higher layer",
        "src/corrmark/models/fake.py:6: corrmark.models.fake (models) imports corrmark.zoo (application), "
        "a higher layer",
    ]
    # the package's __init__ resolves "." to itself; a name that is not a module stays the package
    assert imported_modules("from . import registry, UnknownNameError\n", "corrmark", True) == [
        (1, "corrmark.registry"), (1, "corrmark")]


def test_layer_of_uses_the_longest_listed_name():
    assert layer_of("corrmark") == "application"
    assert layer_of("corrmark.models.sfnet") == "models"
    assert layer_of("corrmark.cli.commands_matching") == "cli"
    assert layer_of("corrmark.checkpoints") == "foundation"
    assert layer_of("corrmarkish") is None


def test_the_package_docstring_lists_the_same_layers():
    docstring = ast.get_docstring(ast.parse((PACKAGE / "__init__.py").read_text()))
    rows = re.findall(r"^(\d+)\s+(\w+)\s+(.+)$", docstring, flags=re.M)
    documented = {name: tuple(part.split(" (")[0].strip() for part in modules.split(","))
                  for _, name, modules in rows}
    assert [int(rank) for rank, _, _ in rows] == list(range(len(rows)))
    assert documented == LAYERS
