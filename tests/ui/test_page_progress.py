"""Indexing progress on the page, in a real Chromium over the real embedder: while added articles are indexed,
Gradio's progress shows the stage, the chunks embedded of those expected and the documents read (the same line as
`rag index`), then the upload's report. A MutationObserver, installed before the upload, records every progress
text shown, so no moment between two polls goes unseen."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import rag  # noqa: F401  - offline environment first
from tests.conftest import SEED_ARTICLE
from tests.ui.test_page import (  # noqa: F401 - app_url, browser_context, page and ui_settings: fixtures, reused
    ARTIFACTS,
    app_url,
    browser_context,
    open_accordion,
    page,
    page_text,
    ui_settings,
)

pytestmark = [pytest.mark.browser, pytest.mark.integration]

# Every text of a progress bar on the page, from the moment it is installed.
WATCH_JS = """() => {
  window.ragProgress = [];
  const look = () => {
    for (const bar of document.querySelectorAll('[data-testid="status-tracker"] .progress-level-inner')) {
      const text = bar.innerText.trim();
      const seen = window.ragProgress;
      if (text && seen[seen.length - 1] !== text) seen.push(text);
    }
  };
  new MutationObserver(look).observe(document.body, {subtree: true, childList: true, characterData: true});
}"""


def test_adding_articles_shows_the_indexing_progress(page, tmp_path: Path) -> None:  # noqa: ANN001, F811
    article = SEED_ARTICLE.read_text(encoding="utf-8")
    files = []
    for n in range(4):  # four new documents of a few chunks each
        files.append(tmp_path / f"briefing-{n}.txt")
        files[-1].write_text(f"Briefing {n} on chip investment\n\nBriefing {n}. {article}", encoding="utf-8")
    open_accordion(page, "add-articles")
    page.evaluate(WATCH_JS)
    page.set_input_files("#upload input[type=file]", [str(f) for f in files])
    page.wait_for_selector("#upload-status .rag-upload", timeout=180_000)
    seen = page.evaluate("() => window.ragProgress")
    page.screenshot(path=str(ARTIFACTS / "upload-progress.png"), full_page=True)
    assert "Added briefing-0.txt" in page.inner_text("#upload-status") and "Traceback" not in page_text(page)
    embedding = [t for t in seen if re.match(r"Embedding \d+/~?\d+ chunks · [0-4]/4 docs", t)]
    assert embedding, seen
    assert any(t.startswith("Writing the index") for t in seen), seen
    assert not page.locator('[data-testid="status-tracker"] .progress-level-inner').count()  # gone when done
