"""docs/configuration.md is the table `python -m tools.settings_table` generates from the `Settings` dataclass."""

from __future__ import annotations

import dataclasses

import pytest

from rag.settings import Settings
from tests.conftest import REPO
from tools.settings_table import PAGE, entries, render

pytestmark = pytest.mark.unit


def test_the_configuration_page_is_the_table_the_settings_class_gives():
    on_disk = (REPO / PAGE).read_text(encoding="utf-8")
    assert on_disk == render(), "docs/configuration.md is out of date: run python -m tools.settings_table"


def test_every_setting_has_a_row_with_a_meaning_type_and_default():
    rows = {entry.name: entry for entry in entries()}
    assert list(rows) == [f.name for f in dataclasses.fields(Settings)]
    assert all(entry.meaning and entry.kind and entry.default and entry.section for entry in rows.values()), [
        name for name, entry in rows.items() if not entry.meaning]
    assert rows["top_k"].default == "4" and rows["top_k"].kind == "int"
    assert rows["decision_file"].meaning.startswith("the fitted answer-or-refuse decision")


def test_a_changed_default_makes_the_page_out_of_date(tmp_path):
    from tools.settings_table import main

    page = tmp_path / "configuration.md"
    assert main(["--out", str(page)]) == 0
    assert main(["--check", "--out", str(page)]) == 0
    page.write_text(page.read_text(encoding="utf-8").replace("| `4` |", "| `5` |", 1), encoding="utf-8")
    assert main(["--check", "--out", str(page)]) == 1
