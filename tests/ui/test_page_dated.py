"""The page over dated news in a real Chromium (real models): over the disagreeing bridge articles
(tests/data/dated/disagree, copied) the sources show each article's date and outlet, a disagreement is shown in
its own box, the Articles panel lists the articles newest first and filters them, and the ask area's since / until
dates keep the answer to those days (a date that cannot be read is said, and nothing typed is lost).

RAG_SCREENSHOTS=1 also writes docs/images/disagreement.png."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

import rag  # noqa: F401  - offline environment first
from tests.conftest import REPO, make_settings
from tests.ui.test_page import CHROMIUM_ARGS, UI_GENERATOR, ask, open_accordion, open_page, page_text, served_page

pytestmark = [pytest.mark.browser, pytest.mark.integration]

DISAGREE = REPO / "tests" / "data" / "dated" / "disagree"
BRIDGE = "How much will the Harbor Bridge repairs in Norrport cost?"
DOCS_IMAGE = REPO / "docs" / "images" / "disagreement.png"
WRITE_DOCS_IMAGE = os.environ.get("RAG_SCREENSHOTS") == "1"  # read now: conftest clears RAG_* later
NEWEST_FIRST = ["wire-bridge.txt", "ledger-bridge.md", "other-park.md"]
ROWS_JS = "() => [...document.querySelectorAll('#article-list tbody tr')].map(r => r.dataset.doc)"


@pytest.fixture(scope="module")
def app_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("ui-dated")
    shutil.copytree(DISAGREE, tmp / "corpus")
    with pytest.MonkeyPatch.context() as mp:  # the defaults, not a developer's rag.toml or RAG_* variables
        for key in [k for k in os.environ if k.startswith("RAG_") and k != "RAG_TEST_GENERATOR"]:
            mp.delenv(key)
        mp.chdir(REPO)
        settings = make_settings(tmp, generator=UI_GENERATOR, as_of="2024-06-01")
    with served_page(settings) as url:
        yield url


@pytest.fixture(scope="module")
def browser(app_url: str):  # noqa: ANN201 - a playwright Browser
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium")
    if not chromium:
        pytest.skip("Debian's chromium is not installed")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(browser, app_url: str):  # noqa: ANN001, ANN201 - playwright objects
    context = browser.new_context(viewport={"width": 1440, "height": 1000})
    context.route("**/*", lambda route: route.continue_() if route.request.url.startswith(app_url)
                  else route.abort())  # nothing outside the app
    context.set_default_timeout(30_000)
    page = context.new_page()
    open_page(page, app_url)
    try:
        yield page
    finally:
        context.close()


def test_a_disagreement_is_shown_with_dated_sources(page, tmp_path: Path) -> None:  # noqa: ANN001
    seen = ask(page, BRIDGE)
    assert seen["final"] and not seen["final"].startswith("⚠"), seen
    sources = page.inner_text("#sources")
    assert "2024-05-02" in sources and "2024-05-03" in sources, sources
    assert "Coastal Ledger" in sources and "Metro Wire" in sources
    box = page.locator("#sources .rag-conflict")
    assert box.count() == 1, f"no disagreement box; the answer was: {seen['final']}"
    box.wait_for(state="visible")
    said = box.inner_text()
    assert "The articles disagree" in said and "8.2 million" in said and "9.5 million" in said
    assert "2024-05-02" in said and "2024-05-03" in said
    assert "disagree" in seen["final"]  # the answer's own sentence, in the chat
    shot = tmp_path / "disagreement.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 0
    if WRITE_DOCS_IMAGE:
        DOCS_IMAGE.parent.mkdir(exist_ok=True)
        page.screenshot(path=str(DOCS_IMAGE), full_page=True)
        assert DOCS_IMAGE.stat().st_size > 0
    assert "Traceback" not in page_text(page)


def test_the_articles_panel_lists_newest_first_and_filters(page) -> None:  # noqa: ANN001
    open_accordion(page, "articles")
    page.wait_for_selector("#article-list tbody tr")
    assert page.evaluate(ROWS_JS) == NEWEST_FIRST
    first = page.locator('#article-list tr[data-doc="wire-bridge.txt"]')
    assert first.locator(".rag-published").inner_text() == "2024-05-03"
    assert first.locator(".rag-outlet").inner_text() == "Metro Wire"

    page.fill("#filter-since input, #filter-since textarea", "2024-05-01")
    page.press("#filter-since input, #filter-since textarea", "Enter")
    page.wait_for_function(f"() => ({ROWS_JS})().length === 2")
    assert page.evaluate(ROWS_JS) == NEWEST_FIRST[:2] and "(of 3)" in page.inner_text("#article-list")

    page.fill("#filter-text input, #filter-text textarea", "ledger")
    page.wait_for_function(f"() => ({ROWS_JS})().length === 1")
    assert page.evaluate(ROWS_JS) == ["ledger-bridge.md"]

    page.fill("#filter-since input, #filter-since textarea", "not a date")
    page.press("#filter-since input, #filter-since textarea", "Enter")
    page.wait_for_selector("#article-list .rag-rejected")
    assert "since" in page.inner_text("#article-list")


def test_since_and_until_keep_the_answer_to_those_days(page) -> None:  # noqa: ANN001
    page.fill("#since input, #since textarea", "garbage")
    seen_bad = page.locator('[data-testid="bot"]').count()
    page.fill("#question textarea", BRIDGE)
    page.click("#ask")
    page.wait_for_function(f"() => document.querySelectorAll('[data-testid=\"bot\"]').length > {seen_bad} && "
                           "[...document.querySelectorAll('[data-testid=\"bot\"]')].pop().innerText.includes('since')")
    message = page.locator('[data-testid="bot"]').last.inner_text()
    assert "Check the dates" in message and "'garbage' is not a date" in message
    assert page.input_value("#question textarea") == BRIDGE  # nothing typed is lost
    assert page.input_value("#since input, #since textarea") == "garbage"

    page.fill("#since input, #since textarea", "2024-05-03")
    seen = ask(page, BRIDGE)
    assert "9.5 million" in seen["final"] and "8.2 million" not in seen["final"], seen
    sources = page.inner_text("#sources")
    assert "2024-05-03" in sources and "2024-05-02" not in sources and "Coastal Ledger" not in sources
    assert "published on or after 2024-05-03" in sources
