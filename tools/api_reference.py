"""docs/reference.md, the Python API reference, generated from the docstrings of every name `rag` exports:
`python -m tools.api_reference [--check]`.

Each name gets its signature and docstring, a class its public methods and properties too; the `>>>` examples in
the docstrings are shown as code and run as doctests by tests/tools/test_api_reference.py (in `make test`), which
also fails when this page and the docstrings differ. Edit the docstrings, then run the command again.
"""

from __future__ import annotations

import argparse
import doctest
import inspect
import sys
from pathlib import Path
from typing import Any

import rag
from rag.files import write_text_atomically

PAGE = Path("docs") / "reference.md"
INTRO = """# Python API reference

Generated from the docstrings of every name `rag` exports by `python -m tools.api_reference`; the examples run as
doctests in `make test` (with the default settings, in a folder holding the seed article in `corpus/`). How
the pieces fit: [architecture.md](architecture.md); every setting: [configuration.md](configuration.md).

Paths are taken as `str` or `os.PathLike`. Every argument is checked before any work is done: a bad one raises a
`rag.BadInput` (`BadArgument`, `QuestionError`, `SettingsError`, `NotFound`, `TooLarge`) whose message names it and
what it accepts. Results are dataclasses; `to_dict()` gives what `rag ask --json` prints and the API sends.
"""


def public_names() -> list[str]:
    """The exported names, functions first, then classes, each group by name."""
    return sorted(rag.__all__, key=lambda name: (inspect.isclass(getattr(rag, name)), name.lower()))


def members(cls: type) -> list[tuple[str, Any]]:
    """A class's own public methods and properties, in source order (dataclass fields are in its docstring)."""
    return [(name, value) for name, value in vars(cls).items()
            if not name.startswith("_") and (inspect.isfunction(value) or isinstance(value, property))]


def signature(name: str, value: Any) -> str:
    if isinstance(value, property):
        return f"{name}  # property"
    try:
        text = str(inspect.signature(value, eval_str=True))
    except NameError:  # an annotation named only for type checkers
        text = str(inspect.signature(value))
    except (TypeError, ValueError):
        return name
    prefix = "async def " if inspect.iscoroutinefunction(value) else ""
    return f"{prefix}{name}{text}"


def docstring(value: Any) -> str:
    """The docstring with its doctest lines fenced as Python sessions."""
    text = inspect.cleandoc(getattr(value, "__doc__", None) or "")
    out: list[str] = []
    in_example = False
    for line in text.splitlines():
        example = line.startswith((">>>", "...")) or (in_example and line.strip())
        if example and not in_example:
            out.append("```pycon")
        if not example and in_example:
            out.append("```")
        in_example = bool(example)
        out.append(line)
    if in_example:
        out.append("```")
    return "\n".join(out)


def section(name: str) -> str:
    value = getattr(rag, name)
    parts = [f"## `rag.{name}` ({_kind(name)})", "", "```python", signature(name, value),
             "```", "", docstring(value)]
    if inspect.isclass(value) and not issubclass(value, BaseException):
        for member, attribute in members(value):
            parts += ["", f"### `{name}.{member}`", "", "```python", signature(member, attribute), "```", "",
                      docstring(attribute)]
    return "\n".join(parts).rstrip() + "\n"


def _kind(name: str) -> str:
    return "class" if inspect.isclass(getattr(rag, name)) else "function"


def page() -> str:
    contents = "\n".join(f"- [`rag.{name}`](#rag{name.lower()}-{_kind(name)})" for name in public_names())
    return INTRO + "\n" + contents + "\n\n" + "\n".join(section(name) for name in public_names())


def examples() -> list[doctest.DocTest]:
    """The doctests of every exported name and its members (each name needs one: tests check)."""
    finder = doctest.DocTestFinder(recurse=False)
    found: list[doctest.DocTest] = []
    for name in public_names():
        value = getattr(rag, name)
        targets = [(name, value)] + ([(f"{name}.{m}", a) for m, a in members(value)] if inspect.isclass(value) else [])
        for label, target in targets:
            obj = target.fget if isinstance(target, property) else target
            found += [test for test in finder.find(obj, f"rag.{label}", globs={"rag": rag}) if test.examples]
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.api_reference", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when the page differs from the docstrings")
    args = parser.parse_args(argv)
    wanted = page()
    if args.check:
        current = PAGE.read_text(encoding="utf-8") if PAGE.exists() else ""
        if current != wanted:
            print(f"{PAGE} is out of date: run python -m tools.api_reference", file=sys.stderr)
            return 1
        return 0
    write_text_atomically(PAGE, wanted)
    print(f"wrote {PAGE}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
