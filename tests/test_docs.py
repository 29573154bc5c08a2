"""Keep docs/API.md true: the names it mentions import, and its signatures match the code.

docs/API.md writes signatures by hand in blocks fenced as ```python signatures```: one entry per callable, starting
at the line's first column with the full dotted name (``corrmark.module.name(params) -> result``), continued on
indented lines. Each entry is parsed as a Python ``def`` and compared with ``inspect.signature``: parameter names,
order and kinds, whether each has a default, and the default's value when both sides are literals (dataclass
``default_factory`` values are produced and compared too). Methods are written without ``self``.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"
API = DOCS / "API.md"
NAME = re.compile(r"(?<![\w./-])corrmark(?:\.[A-Za-z_]\w*)+")


def resolve(dotted: str):
    """The object a dotted name stands for: the longest importable module prefix, then attributes.
    Returns (object, parent) where parent is the object the last attribute was read from."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
            break
        except ModuleNotFoundError as error:
            if error.name is None or not ".".join(parts[:cut]).startswith(error.name):
                raise
    else:  # pragma: no cover
        raise ImportError(dotted)
    parent = None
    for attribute in parts[cut:]:
        parent, obj = obj, getattr(obj, attribute)
    return obj, parent


def signature_entries(text: str) -> list[str]:
    entries = []
    for block in re.findall(r"^```python signatures\n(.*?)^```", text, flags=re.S | re.M):
        for line in block.splitlines():
            if line.startswith("corrmark."):
                entries.append(line.strip())
            elif line.strip() and not line.lstrip().startswith("#"):
                assert line[0].isspace() and entries, f"stray line in a signatures block: {line!r}"
                entries[-1] += " " + line.strip()
    return entries


def parse_entry(entry: str) -> tuple[str, ast.arguments]:
    name, _, rest = entry.partition("(")
    depth, end = 1, None
    for index, char in enumerate(rest):
        depth += {"(": 1, "[": 1, "{": 1, ")": -1, "]": -1, "}": -1}.get(char, 0)
        if depth == 0:
            end = index
            break
    assert end is not None, f"unbalanced parentheses in {entry!r}"
    function = ast.parse(f"def _documented({rest[:end]}): pass").body[0]
    return name, function.args


def documented_parameters(arguments: ast.arguments) -> list[tuple[str, str, object]]:
    """(name, kind, default node or None) in signature order."""
    positional = arguments.posonlyargs + arguments.args
    defaults = [None] * (len(positional) - len(arguments.defaults)) + list(arguments.defaults)
    rows = [(arg.arg, "POSITIONAL_ONLY" if arg in arguments.posonlyargs else "POSITIONAL_OR_KEYWORD", default)
            for arg, default in zip(positional, defaults)]
    if arguments.vararg:
        rows.append((arguments.vararg.arg, "VAR_POSITIONAL", None))
    rows += [(arg.arg, "KEYWORD_ONLY", default) for arg, default in zip(arguments.kwonlyargs, arguments.kw_defaults)]
    if arguments.kwarg:
        rows.append((arguments.kwarg.arg, "VAR_KEYWORD", None))
    return rows


def actual_parameters(obj, parent) -> list[inspect.Parameter]:
    parameters = list(inspect.signature(obj).parameters.values())
    is_method = inspect.isclass(parent) and inspect.isfunction(obj) and not isinstance(
        inspect.getattr_static(parent, obj.__name__, None), staticmethod)
    if is_method and parameters and parameters[0].name in ("self", "cls"):
        parameters = parameters[1:]
    return parameters


def actual_default(obj, parameter: inspect.Parameter):
    if inspect.isclass(obj) and dataclasses.is_dataclass(obj):
        for item in dataclasses.fields(obj):
            if item.name == parameter.name and item.default_factory is not dataclasses.MISSING:
                return item.default_factory()
    return parameter.default


ENTRIES = signature_entries(API.read_text())


def test_the_api_page_has_signatures():
    assert len(ENTRIES) > 40


@pytest.mark.parametrize("entry", ENTRIES, ids=[entry.partition("(")[0] for entry in ENTRIES])
def test_documented_signature_matches_the_code(entry):
    name, arguments = parse_entry(entry)
    obj, parent = resolve(name)
    documented = documented_parameters(arguments)
    actual = actual_parameters(obj, parent)
    assert [(n, k) for n, k, _ in documented] == [(p.name, p.kind.name) for p in actual], (
        f"{name}: docs/API.md says ({', '.join(n for n, _, _ in documented)}), "
        f"the code has ({', '.join(p.name for p in actual)})")
    for (parameter_name, _, default_node), parameter in zip(documented, actual):
        has_default = parameter.default is not inspect.Parameter.empty
        assert (default_node is not None) == has_default, f"{name}: default of '{parameter_name}' documented wrongly"
        if default_node is None:
            continue
        try:
            written = ast.literal_eval(default_node)
        except ValueError:
            continue  # not a literal (e.g. a constant's name): names are checked, values are not
        assert written == actual_default(obj, parameter), (
            f"{name}: '{parameter_name}' defaults to {actual_default(obj, parameter)!r}, docs/API.md says {written!r}")


@pytest.mark.parametrize("page", ["API.md", "TUTORIAL.md"])
def test_every_corrmark_name_in_the_docs_imports(page):
    names = sorted(set(NAME.findall((DOCS / page).read_text())))
    assert names
    broken = []
    for name in names:
        try:
            resolve(name)
        except (ImportError, AttributeError) as error:
            broken.append(f"{name} ({type(error).__name__}: {error})")
    assert not broken, f"docs/{page} names that do not exist: {broken}"


def test_the_api_page_covers_the_public_names():
    import corrmark
    import corrmark.errors
    from corrmark.eval import PCKProtocol
    from corrmark.models import LANDMARK_MODELS

    text = API.read_text()
    missing = [name for name in corrmark.__all__ if name not in text]
    missing += [f"matcher `{name}`" for name in corrmark.available_matchers() if f"`{name}`" not in text]
    missing += [f"landmark model `{name}`" for name in LANDMARK_MODELS if f"`{name}`" not in text]
    missing += [f"corrmark.errors.{name}" for name, value in vars(corrmark.errors).items()
                if inspect.isclass(value) and issubclass(value, corrmark.errors.CorrmarkError)
                and f"corrmark.errors.{name}" not in text]
    missing += [f"PCKProtocol field `{item.name}`" for item in dataclasses.fields(PCKProtocol)
                if f"`{item.name}`" not in text]
    assert not missing, f"docs/API.md does not mention: {missing}"


def test_a_renamed_parameter_would_fail():
    # the checker itself: a wrong name and a wrong default are both caught
    name, arguments = parse_entry('corrmark.load_matcher(name, checkpoint=None, device="cpu", **options)')
    obj, parent = resolve(name)
    assert [n for n, _, _ in documented_parameters(arguments)] == [p.name for p in actual_parameters(obj, parent)]
    _, renamed = parse_entry('corrmark.load_matcher(model, checkpoint=None, device="cpu", **options)')
    assert [n for n, _, _ in documented_parameters(renamed)] != [p.name for p in actual_parameters(obj, parent)]
    method, method_parent = resolve("corrmark.Matcher.transfer_keypoints")
    assert [p.name for p in actual_parameters(method, method_parent)] == ["source", "target", "points"]
