"""No unsafe loading anywhere in the package: no pickle (or its relatives), no torch.load without weights_only=True,
no eval/exec builtins, no allow_pickle=True. Read from the syntax tree, so comments and method names do not count."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.unit

UNSAFE_MODULES = {"pickle", "cPickle", "dill", "shelve", "marshal", "joblib", "cloudpickle"}
SOURCES = sorted(p for folder in ("rag", "ui") for p in (REPO / folder).rglob("*.py"))


def unsafe_uses(source: str) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [f"import {a.name}" for a in node.names if a.name.split(".")[0] in UNSAFE_MODULES]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in UNSAFE_MODULES:
            found.append(f"from {node.module} import …")
        elif isinstance(node, ast.Call):
            function = node.func
            keywords = {k.arg: k.value for k in node.keywords}
            if isinstance(function, ast.Name) and function.id in {"eval", "exec"}:
                found.append(f"{function.id}(…) at line {node.lineno}")
            is_torch_load = (isinstance(function, ast.Attribute) and function.attr == "load"
                             and isinstance(function.value, ast.Name) and function.value.id == "torch")
            weights_only = keywords.get("weights_only")
            if is_torch_load and not (isinstance(weights_only, ast.Constant) and weights_only.value is True):
                found.append(f"torch.load without weights_only=True at line {node.lineno}")
            allow = keywords.get("allow_pickle")
            if allow is not None and not (isinstance(allow, ast.Constant) and allow.value is False):
                found.append(f"allow_pickle not False at line {node.lineno}")
    return found


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(REPO)))
def test_no_unsafe_loading(path: Path):
    assert unsafe_uses(path.read_text(encoding="utf-8")) == []


def test_the_scan_finds_what_it_looks_for():
    planted = ("import pickle\nfrom dill import loads\nimport torch\nimport numpy as np\n"
               "torch.load('m.pt')\ntorch.load('m.pt', weights_only=True)\nnp.load('v.npy', allow_pickle=True)\n"
               "eval('1')\nexec('x = 1')\nmodel.eval()\n")
    found = unsafe_uses(planted)
    assert found == ["import pickle", "from dill import …", "torch.load without weights_only=True at line 5",
                     "allow_pickle not False at line 7", "eval(…) at line 8", "exec(…) at line 9"]
