"""docs/configuration.md, generated from the `Settings` dataclass: `python -m tools.settings_table [--check]`.

Each field's type and default come from the dataclass itself, its meaning from the comments beside and above it in
rag/settings.py, and its section from the comment that opens a group of fields. `--check` exits 1 when the page on
disk differs from what the class gives (tests/tools/test_settings_table.py runs the same comparison).
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import io
import sys
import tokenize
import typing
from pathlib import Path

import rag.settings
from rag.files import write_text_atomically
from rag.settings import CONFIG_ENV, DEFAULT_CONFIG_FILE, ENV_PREFIX, Settings

PAGE = Path("docs") / "configuration.md"
INTRO = f"""# Configuration

Every setting, generated from the `Settings` dataclass (rag/settings.py) by `python -m tools.settings_table`; a test
fails when this page and the class differ. Edit the class and its comments, then run the command again.

A setting is given, the later overriding the earlier, by its default below, a `{DEFAULT_CONFIG_FILE}` file in the
working directory (or the file named by `{CONFIG_ENV}`; TOML, `name = value`, sections are flattened), an
environment variable `{ENV_PREFIX}<NAME>` (for example `{ENV_PREFIX}TOP_K=6`), and the command line's flags where
a command has one (`rag ask --k 6`). Booleans accept 1/0, true/false, yes/no, on/off. Paths are relative to the
working directory unless absolute. Measured defaults and what they were chosen on are in rag/calibration.py.
"""


@dataclasses.dataclass
class Entry:
    name: str
    kind: str
    default: str
    meaning: str
    section: str


def _comments(source: str) -> dict[int, str]:
    """Line number -> the comment on that line (without '#')."""
    found = {}
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            found[token.start[0]] = token.string.lstrip("#").strip()
    return found


def entries() -> list[Entry]:
    source = Path(rag.settings.__file__).read_text(encoding="utf-8")
    lines = source.splitlines()
    comments = _comments(source)
    body = next(n for n in ast.parse(source).body if isinstance(n, ast.ClassDef) and n.name == "Settings").body
    hints = typing.get_type_hints(Settings)
    defaults = {f.name: f for f in dataclasses.fields(Settings)}
    found, section = [], ""
    for node in body:
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        above, row = [], node.lineno - 1
        while row >= 1 and lines[row - 1].strip().startswith("#"):
            above.insert(0, comments[row])
            row -= 1
        if above and row >= 1 and not lines[row - 1].strip():  # a comment after a blank line opens a section
            section, above = above[0], above[1:]
        meaning = " ".join([*above, comments.get(node.lineno, "")]).strip()
        name = node.target.id
        found.append(Entry(name, _kind(hints[name]), _default(defaults[name]), meaning, section))
    return found


def _kind(hint: object) -> str:
    return getattr(hint, "__name__", str(hint))


def _default(spec: dataclasses.Field) -> str:
    if spec.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return "(per user cache folder)" if spec.name == "cache_dir" else repr(spec.default_factory())
    value = spec.default
    return f'"{value}"' if isinstance(value, str | Path) else repr(value)


def render() -> str:
    out, section = [INTRO], None
    for entry in entries():
        if entry.section != section:
            section = entry.section
            title = section[:1].upper() + section[1:]
            out.append(f"\n## {title}\n\n| setting | environment | type | default | meaning |\n|---|---|---|---|---|")
        meaning = entry.meaning.replace("|", "\\|")
        default = entry.default.replace("|", "\\|")
        out.append(f"| `{entry.name}` | `{ENV_PREFIX}{entry.name.upper()}` | {entry.kind} | `{default}` | {meaning} |")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.settings_table", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 when the page is out of date")
    parser.add_argument("--out", type=Path, default=PAGE)
    args = parser.parse_args(argv)
    page = render()
    if args.check:
        current = args.out.read_text(encoding="utf-8") if args.out.is_file() else ""
        if current != page:
            print(f"{args.out} is out of date: run python -m tools.settings_table", file=sys.stderr)
            return 1
        return 0
    write_text_atomically(args.out, page)
    print(f"written {args.out} ({len(entries())} settings)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
