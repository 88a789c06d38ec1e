"""The test tiers (tests/conftest.py): every test is `unit` or `integration`, a collection with a test of neither
(or both) is refused, and a unit test that starts a process or makes or loads a model is stopped and failed."""

from __future__ import annotations

import os
import subprocess
import sys
import types

import pytest

import tests.conftest as conftest
from rag.generators import factory
from rag.loaded import Loaded
from rag.models import embedders
from tests.conftest import TierViolation, UnitGuard, tier_problems

pytestmark = pytest.mark.unit


class Item:
    """What the tier check reads of a collected test: its id and its marks."""

    def __init__(self, nodeid: str, *marks: pytest.MarkDecorator) -> None:
        self.nodeid, self.marks = nodeid, [mark.mark for mark in marks]

    def iter_markers(self):  # noqa: ANN201 - pytest's Mark objects
        return iter(self.marks)


def test_every_collected_test_has_exactly_one_tier(request: pytest.FixtureRequest) -> None:
    assert request.session.items and tier_problems(request.session.items) == []
    assert {mark.name for mark in request.node.iter_markers()} >= {"unit"}


def test_a_collection_with_a_test_of_no_tier_or_both_is_refused(request: pytest.FixtureRequest) -> None:
    hook = request.config.pluginmanager.hook.pytest_collection_modifyitems
    assert conftest.pytest_collection_modifyitems in [impl.function for impl in hook.get_hookimpls()]
    items = [Item("t.py::fine", pytest.mark.unit), Item("t.py::none"), Item("t.py::slow_only", pytest.mark.slow),
             Item("t.py::both", pytest.mark.unit, pytest.mark.integration),
             Item("t.py::slow_unit", pytest.mark.slow, pytest.mark.unit),
             Item("t.py::slow_integration", pytest.mark.slow, pytest.mark.integration)]
    assert tier_problems(items) == ["t.py::none: no tier", "t.py::slow_only: no tier",
                                    "t.py::both: unit and integration", "t.py::slow_unit: unit, but slow"]
    with pytest.raises(pytest.UsageError, match=r"exactly one tier(.|\n)*t\.py::none: no tier"):
        conftest.pytest_collection_modifyitems(request.config, items)


def test_a_unit_test_that_starts_a_process_is_stopped() -> None:
    guard = UnitGuard()
    guard.arm()
    try:
        with pytest.raises(TierViolation, match=r"a unit test started a process \(subprocess.Popen\): mark it integ"):
            subprocess.run([sys.executable, "-c", "pass"], check=True)
        with pytest.raises(TierViolation, match=r"started a process \(os.system\)"):
            os.system("true")
    finally:
        guard.disarm()
    assert guard.problems() == [f"a unit test started a process or server ({what}): mark it integration"
                                for what in ("subprocess.Popen", "os.system")]


def test_a_unit_test_that_makes_or_loads_a_model_or_imports_an_engine_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    """Read from rag's own per-process caches (rag.models.embedders, rag.generators.factory: empty stand-ins here,
    filled as get_embedder and get_generator fill them) and from sys.modules."""
    monkeypatch.setattr(embedders, "_cache", Loaded())
    monkeypatch.setattr(factory, "_generators", Loaded())
    unloaded = types.SimpleNamespace(_model=None)
    embedders._cache.get(("embedder", "stand-in"), lambda: unloaded)
    guard = UnitGuard(engines=("rag_tiers_stand_in_engine",))
    guard.arm()
    guard.disarm()
    assert guard.problems() == []
    factory._generators.get(("generator", "stand-in"), lambda: types.SimpleNamespace(_llm=object()))
    unloaded._model = object()  # its weights loaded
    monkeypatch.setitem(sys.modules, "rag_tiers_stand_in_engine", types.ModuleType("rag_tiers_stand_in_engine"))
    assert guard.problems() == [
        "a unit test loaded a model (('embedder', 'stand-in')): mark it integration",
        "a unit test made a model (('generator', 'stand-in'), loaded): mark it integration",
        "a unit test imported model engines (rag_tiers_stand_in_engine): mark it integration"]
