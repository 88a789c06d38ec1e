"""The unchecked draft on the page, in a real Chromium over real models: while a reply streams it sits in a box
labelled "Draft — checking against the articles…" (greyed and italic), and the checked answer or the refusal
replaces it; a reply the checks reject leaves no trace of itself. A MutationObserver, installed before asking,
records every state of the reply's bubble, so no moment between two polls goes unseen.

RAG_SCREENSHOTS=1 also writes docs/images/checking-draft.png."""

from __future__ import annotations

import os
import re
import shutil
import time

import pytest

import rag  # noqa: F401  - offline environment first
from tests.conftest import REPO, SEED_ARTICLE
from tests.ui.test_page import (  # noqa: F401 - app_url, browser_context, page and ui_settings: fixtures, reused
    ANSWER_TIMEOUT_S,
    ARTIFACTS,
    SNAPSHOT_JS,
    STATUS,
    app_url,
    browser_context,
    page,
    page_text,
    ui_settings,
)
from ui.render import DRAFT_LABEL

pytestmark = [pytest.mark.browser, pytest.mark.integration]

REFUSED = "How many employees does Samsung Electronics have?"  # the seed article does not say; the draft invents
ANSWERED = "Who did Zuckerberg meet in Seoul?"
REFUSAL = "The articles do not say."
DOCS_IMAGE = REPO / "docs" / "images" / "checking-draft.png"
WRITE_DOCS_IMAGE = os.environ.get("RAG_SCREENSHOTS") == "1"  # read now: conftest clears RAG_* later
# Every change of the last bot bubble, from the moment it is installed: its text and, while there is one, the
# draft box's label, text and look.
WATCH_JS = """() => {
  window.ragSeen = [];
  const look = () => {
    const bots = document.querySelectorAll('[data-testid="bot"]');
    const last = bots.length ? bots[bots.length - 1] : null;
    if (!last) return;
    const box = last.querySelector('.rag-draft');
    const label = box && box.querySelector('.rag-draft-label');
    const body = box && box.querySelector('.rag-draft-text');
    const state = {text: last.innerText.trim(), draft: box ? box.innerText.trim() : null,
                   label: label ? label.innerText.trim() : null, body: body ? body.innerText.trim() : null,
                   italic: !!body && getComputedStyle(body).fontStyle === 'italic',
                   opacity: body ? parseFloat(getComputedStyle(body).opacity) : 1,
                   finalItalic: !box && getComputedStyle(last).fontStyle === 'italic'};
    const seen = window.ragSeen;
    if (!seen.length || JSON.stringify(seen[seen.length - 1]) !== JSON.stringify(state)) seen.push(state);
  };
  new MutationObserver(look).observe(document.body, {subtree: true, childList: true, characterData: true});
}"""


def ask_watched(page, question: str, screenshot: str = "") -> tuple[str, list[dict]]:  # noqa: ANN001, F811 - a Page
    """Ask through the page with the observer on; the final bubble's text and every state the bubble went through.
    With `screenshot`, the page is captured there each time the draft has grown: the last one holds it whole."""
    page.evaluate(WATCH_JS)
    page.fill("#question textarea", question)
    page.click("#ask")
    deadline = time.monotonic() + ANSWER_TIMEOUT_S
    done, shot = f"#sources .rag-final[data-question=\"{question}\"]", ""
    while not page.locator(done).count():
        # read without waiting: the draft can be replaced by the answer between two calls
        text = "".join(page.locator("#chat .rag-draft-text").all_inner_texts())
        if screenshot and len(text) > len(shot):
            shot = text
            page.screenshot(path=screenshot, clip={"x": 0, "y": 0, "width": 1440, "height": 720})
        assert time.monotonic() < deadline, f"no final answer after {ANSWER_TIMEOUT_S} s"
        time.sleep(0.05)
    time.sleep(0.5)  # chat and sources come in the same update; let the chat finish rendering it
    return page.evaluate(SNAPSHOT_JS)["text"], page.evaluate("() => window.ragSeen")


def drafts_marked(seen: list[dict], final: str) -> str:
    """Check that every state of the bubble was empty, a status line, a draft wholly inside its labelled, greyed
    and italic box, or the final text; return the longest draft shown."""
    drafts = [state["body"] for state in seen if state["draft"] is not None]
    assert drafts and max(drafts, key=len), f"no draft was seen streaming: {seen}"
    draft = max(drafts, key=len)
    for state in seen:
        if state["draft"] is not None:
            assert state["text"] == state["draft"], state  # nothing of the reply outside the box
            assert state["label"] == DRAFT_LABEL and state["italic"] and state["opacity"] < 1, state
        else:
            assert state["text"] in ("", final) or state["text"].startswith(STATUS), state  # "": being drawn
            assert not state["finalItalic"], state
    return draft


def test_a_rejected_draft_is_marked_while_checked_then_replaced_by_the_refusal(page) -> None:  # noqa: ANN001, F811
    shot = ARTIFACTS / "checking-draft.png"
    shot.unlink(missing_ok=True)
    final, seen = ask_watched(page, REFUSED, screenshot=str(shot))
    draft = drafts_marked(seen, final)
    assert final == REFUSAL and draft != REFUSAL, seen  # the checks rejected what the draft said
    assert page.locator("#sources .rag-refusal").count() == 1
    shown = page_text(page)
    assert page.locator(".rag-draft").count() == 0 and re.sub(r"\s*\[\d+\]", "", draft) not in shown, shown
    invented = [f for f in re.findall(r"\d[\d,.]*\d", draft) if f not in SEED_ARTICLE.read_text(encoding="utf-8")]
    assert invented and not [f for f in invented if f in shown], (invented, shown)  # "10,000" nowhere
    assert "Draft" not in page.inner_text("#chat")
    if WRITE_DOCS_IMAGE and shot.exists():
        DOCS_IMAGE.parent.mkdir(exist_ok=True)
        shutil.copy(shot, DOCS_IMAGE)


def test_an_accepted_answer_replaces_its_draft_unmarked(page) -> None:  # noqa: ANN001, F811
    final, seen = ask_watched(page, ANSWERED)
    drafts_marked(seen, final)
    assert final and final != REFUSAL and not final.startswith("⚠"), seen
    assert page.locator("#sources .rag-cited").count() >= 1
    assert page.locator(".rag-draft").count() == 0 and "Draft" not in page.inner_text("#chat")
