"""`make check-openwebui`: Open WebUI in a real Chromium over `rag serve`, checked on what a user sees (issue 41).

Open WebUI (pinned below) is installed once in its own virtualenv, `.openwebui-venv/` (about 3 GB; never part of
`make test`). `rag serve` and Open WebUI start offline on free loopback ports, Open WebUI with a fresh data folder
and no login, and headless Chromium (Debian's `chromium`, driven by playwright; every request outside Open WebUI's
address is aborted and listed) asks questions about the seed article the way a user would:

- an answered question: the server's checked text on screen, every [n] marker a citation chip naming the article
  (none dropped, no commas left between markers), the sources listing the article's title, each chip opening its
  own passage with the supporting sentence;
- a question whose draft the checks reject: the refusal on screen, no rejected text on the page (after a reload
  too) or in Open WebUI's saved chat, the refusal's closest sentence shown as its own, labelled source;
- after a refusal, and after an off-topic question: the follow-ups shown name nothing the articles lack;
- a question whose draft adds a detail the articles do not state: the answer without it, saying a detail was left
  out, and the detail nowhere on the page or in the saved chat.

What the server meant is read first from its own stream (the same question, greedy decoding: the same reply), so
a rejected draft is known by its words. Screenshots go to `--shots` named `<label><scenario>.png`. Exit status 0
when every check passes, 1 with the failed checks listed, 2 when a server could not start.

    python -m tools.check_openwebui --label after-
    python -m tools.check_openwebui --rag-root /tmp/before-tree --label before-   # another tree's server
    python -m tools.check_openwebui --rag-url http://127.0.0.1:8080               # a server already running
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tools.serving import free_port, wait_healthy

REPO = Path(__file__).resolve().parent.parent
OPENWEBUI_VERSION = "0.12.4"  # the current release when this check was written (PyPI)
TORCH_VERSION = "2.13.0"  # the project's own pin: pip finds the CPU build where the machine provides it
VENV = REPO / ".openwebui-venv"
DEFAULT_SHOTS = REPO / "docs" / "images" / "openwebui"
MODEL = "rag-news"
START_TIMEOUT_S = 900  # Open WebUI's first start runs its migrations; rag serve may build the index first
ANSWER_TIMEOUT_S = 600  # two shared cores: an answer and its checks can take minutes under load
VIEWPORT = {"width": 1280, "height": 800}
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]

# Two figures, two sentences, two markers ([3] and [4] in the seed article's passages).
ANSWERED = ("What will the South Korean government invest in AI, and what did the Ministry of Science say it will "
            "deploy for AI semiconductors?")
REJECTED = "How many employees does Samsung Electronics have?"
OFF_TOPIC = "What is the capital of France?"
# The draft adds a year that no sentence about the Alliance gives ("… by the Korean government in 2021").
TRIMMED = "Who established the Metaverse Alliance?"
TRIMMED_DETAIL = "2021"

MARKERS = re.compile(r"(\s*\[\d+(?:,\s*\d+)*\])+")  # one run of markers, as Open WebUI's citation extension reads
MARKER_IDS = re.compile(r"\d+")
WORD = re.compile(r"[A-Za-z][A-Za-z'-]{3,}")
# Words of a question that say nothing about its topic: a follow-up may use them although no article does.
FUNCTION_WORDS = {"what", "which", "when", "where", "whom", "whose", "many", "much", "does", "have", "with", "about",
                  "from", "that", "this", "there", "their", "will", "would", "could", "should", "else", "articles"}

# One look at a message: its rendered text, the text without its chips, the chips, the follow-ups shown.
MESSAGE_JS = """(id) => {
  const m = document.getElementById('message-' + id);
  const box = m && m.querySelector('#response-content-container');
  if (!box) return null;
  const content = box.firstElementChild;
  const bare = content.cloneNode(true);
  bare.querySelectorAll('button').forEach(b => b.remove());
  return {text: content.innerText, bare: bare.innerText,
          chips: [...content.querySelectorAll('button')].map(b => b.getAttribute('aria-label') || b.innerText),
          followUps: [...m.querySelectorAll('button[aria-label^="Follow up:"]')].map(b => b.innerText.trim()),
          cursor: !!box.querySelector('.animate-cursor-pulse')};
}"""
# The sources under a message once toggled open: "View source: 1 <name>" per source.
SOURCES_JS = """(id) => [...document.querySelectorAll(`button[id^="source-${id}-"]`)].map(
  b => b.querySelector('.truncate') ? b.querySelector('.truncate').innerText.trim() : b.innerText.trim())"""
# The open citation modal: its heading (the source's name), its passages and all its text.
MODAL_JS = """() => {
  const d = [...document.querySelectorAll('[role="dialog"]')].pop();
  if (!d) return null;
  return {text: d.innerText, passages: d.querySelectorAll('.markdown-prose-sm').length,
          heading: (d.querySelector('.font-medium') || d).innerText.trim()};
}"""

SCROLL_MODAL_JS = """() => { const d = [...document.querySelectorAll('[role="dialog"]')].pop();
  d && d.querySelectorAll('.overflow-y-scroll').forEach(e => { e.scrollTop = e.scrollHeight; }); }"""


# ---------------------------------------------------------------- results


@dataclass
class Checks:
    """Every assertion of the run, passed or failed, with what the screen showed."""

    results: list[tuple[str, bool, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def check(self, name: str, ok: bool, detail: str = "") -> bool:
        self.results.append((name, bool(ok), detail))
        print(f"  {'PASS' if ok else 'FAIL'}  {name}" + (f"\n        {detail}" if detail and not ok else ""),
              flush=True)
        return bool(ok)

    def note(self, text: str) -> None:
        self.notes.append(text)
        print(f"  note  {text}", flush=True)

    @property
    def failed(self) -> list[tuple[str, bool, str]]:
        return [r for r in self.results if not r[1]]

    def summary(self) -> str:
        lines = [f"{len(self.results) - len(self.failed)} of {len(self.results)} checks passed"]
        lines += [f"FAILED: {name}: {detail}" for name, _, detail in self.failed]
        return "\n".join(lines)


@dataclass
class Probe:
    """What `rag serve` streams for a question and what its final frame holds."""

    question: str
    streamed: str
    checked: str
    refused: bool
    sources: list[dict[str, Any]]

    @property
    def rejected_draft(self) -> str:
        """The text that streamed but was not kept ("" when the stream was the checked text)."""
        return self.streamed if _plain(self.streamed) != _plain(self.checked) else ""


# ---------------------------------------------------------------- text


def _plain(text: str) -> str:
    """Text without its markers, whitespace collapsed, no space before punctuation: what a reader compares."""
    text = MARKERS.sub("", text)
    text = re.sub(r"\s+", " ", text).strip()
    return re.sub(r"\s+([.,;:!?])", r"\1", text)


def _fragments(draft: str) -> list[str]:
    """The pieces of a rejected draft between its markers, long enough to be its own words."""
    return [p.strip() for p in MARKERS.split(draft) if p and len(p.strip()) >= 12 and not p.strip().startswith("[")]


def _marker_ids(text: str) -> list[int]:
    return [int(n) for run in MARKERS.finditer(text) for n in MARKER_IDS.findall(run.group(0))]


def _absent_words(question: str, corpus_text: str) -> set[str]:
    """The question's words (four letters or more) that no article holds: what a follow-up must not offer."""
    held = corpus_text.lower()
    return {w.lower() for w in WORD.findall(question) if w.lower() not in held} - FUNCTION_WORDS


# ---------------------------------------------------------------- processes


def ensure_openwebui(venv: Path = VENV) -> Path:
    """The `open-webui` command of the pinned release, installed in its own virtualenv on first use."""
    wanted = f"open-webui=={OPENWEBUI_VERSION} torch=={TORCH_VERSION}"
    stamp = venv / ".install-stamp"
    if stamp.exists() and stamp.read_text().strip() == wanted:
        return venv / "bin" / "open-webui"
    print(f"installing {wanted} in {venv} (about 3 GB, once)", flush=True)
    if not (venv / "bin" / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet"]
    subprocess.run([*pip, "--upgrade", "pip"], check=True)
    subprocess.run([*pip, *wanted.split()], check=True)
    stamp.write_text(wanted + "\n")
    return venv / "bin" / "open-webui"


def _start(command: list[str], cwd: Path, env: dict[str, str], log: Path) -> subprocess.Popen:
    with log.open("wb") as out:
        return subprocess.Popen(command, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)


@contextlib.contextmanager
def running(process: subprocess.Popen) -> Iterator[subprocess.Popen]:
    """Stops the process (and its children: its own session) at the end."""
    try:
        yield process
    finally:
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, 15)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, 9)
                process.wait(timeout=30)


def start_rag(root: Path, port: int, log: Path) -> subprocess.Popen:
    """`rag serve` of the tree at `root` (its code, corpus and index folder) with this interpreter."""
    env = dict(os.environ)
    if root.resolve() != REPO:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH", "")]))
    command = [sys.executable, "-m", "rag.cli", "serve", "--host", "127.0.0.1", "--port", str(port)]
    return _start(command, root, env, log)


def openwebui_env(rag_url: str, data_dir: Path, api_key: str) -> dict[str, str]:
    """Open WebUI offline, without a login, with the rag server as its only connection and model."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAG_", "VIRTUAL_ENV", "PYTHON"))}
    env.update({
        "DATA_DIR": str(data_dir), "WEBUI_AUTH": "false", "WEBUI_SECRET_KEY": secrets.token_hex(32),
        "OFFLINE_MODE": "true", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
        "ENABLE_OLLAMA_API": "false", "ENABLE_OPENAI_API": "true", "OPENAI_API_BASE_URL": f"{rag_url}/v1",
        "OPENAI_API_KEY": api_key, "DEFAULT_MODELS": MODEL, "ENABLE_WEB_SEARCH": "false",
        "RAG_EMBEDDING_MODEL": "",  # no local embedding model to load (it would be downloaded)
        "RAG_EMBEDDING_MODEL_AUTO_UPDATE": "false", "RAG_RERANKING_MODEL_AUTO_UPDATE": "false",
        "ENABLE_VERSION_UPDATE_CHECK": "false", "ENABLE_EVALUATION_ARENA_MODELS": "false",
        "ENABLE_COMMUNITY_SHARING": "false", "ENABLE_AUTOCOMPLETE_GENERATION": "false",
        "ENABLE_IMAGE_GENERATION": "false", "ENABLE_CODE_INTERPRETER": "false", "ENABLE_CODE_EXECUTION": "false",
        "ANONYMIZED_TELEMETRY": "false", "DO_NOT_TRACK": "true", "SCARF_NO_ANALYTICS": "true",
        "USER_AGENT": "rag-news check-openwebui",
    })
    return env


def start_openwebui(command: Path, rag_url: str, port: int, data_dir: Path, api_key: str,
                    log: Path) -> subprocess.Popen:
    data_dir.mkdir(parents=True, exist_ok=True)
    serve = [str(command), "serve", "--host", "127.0.0.1", "--port", str(port)]
    return _start(serve, data_dir, openwebui_env(rag_url, data_dir, api_key), log)


# ---------------------------------------------------------------- the rag server's own view


def _headers(api_key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"}


def probe(rag_url: str, question: str, api_key: str) -> Probe:
    """Asks `rag serve` itself, streamed with the unchecked draft (`stream_unchecked`; a server without the option
    streams it anyway): the draft, the checked text and the final frame's fields."""
    body = {"model": MODEL, "stream": True, "stream_unchecked": True,
            "messages": [{"role": "user", "content": question}]}
    pieces: list[str] = []
    final: dict[str, Any] = {}
    with httpx.stream("POST", f"{rag_url}/v1/chat/completions", json=body, headers=_headers(api_key),
                      timeout=ANSWER_TIMEOUT_S) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            frame = json.loads(line[6:])
            for choice in frame.get("choices") or []:
                pieces.append((choice.get("delta") or {}).get("content") or "")
                if choice.get("finish_reason"):
                    final = frame
    streamed = "".join(pieces)
    checked = (final.get("correction") or {}).get("content", streamed)
    return Probe(question, streamed, checked, bool(final.get("refused")), final.get("sources") or [])


def article_titles(rag_url: str, api_key: str) -> list[str]:
    response = httpx.get(f"{rag_url}/v1/articles", headers=_headers(api_key), timeout=60)
    response.raise_for_status()
    return [a["title"] for a in response.json()["data"] if a.get("title")]


def corpus_text(folder: Path) -> str:
    """The articles' words, for telling which words of a question the articles lack."""
    return "\n".join(p.read_text(errors="replace") for p in sorted(folder.rglob("*"))
                     if p.is_file() and p.suffix in (".txt", ".md", ".html"))


# ---------------------------------------------------------------- Open WebUI in the browser


@dataclass
class Session:
    """The browser page on Open WebUI, its address, its user's token and the requests it was kept from."""

    page: Any
    url: str
    outside: list[str]
    token: str = ""

    def api(self, path: str) -> Any:
        response = httpx.get(f"{self.url}{path}", headers=_headers(self.token), timeout=60)
        response.raise_for_status()
        return response.json()


@contextlib.contextmanager
def browser(url: str) -> Iterator[Session]:
    """Headless Debian Chromium on a new page; requests outside Open WebUI's address are aborted and recorded."""
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium")
    if not chromium:
        raise RuntimeError("Debian's chromium is not installed (apt-get install chromium)")
    outside: list[str] = []

    def guard(route: Any) -> None:
        if route.request.url.startswith((url + "/", "data:", "blob:")) or route.request.url == url:
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    with sync_playwright() as p:
        engine = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        context = engine.new_context(viewport=VIEWPORT)
        context.route("**/*", guard)
        page = context.new_page()
        page.set_default_timeout(60_000)
        try:
            yield Session(page, url, outside)
        finally:
            context.close()
            engine.close()


def new_chat(session: Session) -> None:
    """A fresh chat page with the input ready, any welcome dialog closed, the token read."""
    page = session.page
    page.goto(session.url + "/")
    page.locator("#chat-input").wait_for(state="visible", timeout=START_TIMEOUT_S * 1000)
    welcome = page.get_by_role("button", name="Okay, Let's Go!")  # "What's New", once per user
    with contextlib.suppress(Exception):
        welcome.click(timeout=5000)
    session.token = page.evaluate("() => localStorage.token || ''")


def ask(session: Session, question: str) -> tuple[str, str]:
    """Types the question and sends it; waits for the reply and its follow-ups. Returns (chat id, message id)."""
    page = session.page
    new_chat(session)
    page.locator("#chat-input").click()
    page.keyboard.type(question)
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r".*/c/[\w-]+"), timeout=120_000)
    chat_id = page.url.rstrip("/").rsplit("/c/", 1)[1]
    message_id = wait_reply(session, chat_id)
    page.wait_for_function(f"() => !!document.getElementById('message-{message_id}')", timeout=120_000)
    page.wait_for_timeout(1500)  # the last render (chips, sources, follow-ups)
    return chat_id, message_id


def saved_reply(session: Session, chat_id: str) -> dict[str, Any]:
    """The current assistant message of the chat as Open WebUI saved it."""
    history = session.api(f"/api/v1/chats/{chat_id}")["chat"].get("history", {})
    return history.get("messages", {}).get(history.get("currentId") or "", {})


def wait_reply(session: Session, chat_id: str) -> str:
    """Waits until the reply is done and its follow-ups are saved (or a while has passed); its message id."""
    deadline = time.monotonic() + ANSWER_TIMEOUT_S
    done_at = None
    while time.monotonic() < deadline:
        message = saved_reply(session, chat_id)
        if message.get("role") == "assistant" and message.get("done"):
            done_at = done_at or time.monotonic()
            if message.get("followUps") or time.monotonic() - done_at > 20:
                return message["id"]
        time.sleep(1)
    raise TimeoutError(f"Open WebUI's reply in chat {chat_id} was not done in {ANSWER_TIMEOUT_S} s")


def look(session: Session, message_id: str) -> dict[str, Any]:
    """The message as shown, with its sources opened: text, bare text, chips, follow-ups, sources, whole page."""
    page = session.page
    view = page.evaluate(MESSAGE_JS, message_id) or {"text": "", "bare": "", "chips": [], "followUps": []}
    toggle = page.locator(f"#message-{message_id} button[aria-label^='Toggle']")
    if toggle.count() and toggle.first.get_attribute("aria-expanded") != "true":
        toggle.first.click()
        page.wait_for_timeout(300)
    view["sources"] = page.evaluate(SOURCES_JS, message_id)
    view["page"] = page.evaluate("() => document.body.innerText")
    return view


def open_chip(session: Session, message_id: str, index: int) -> dict[str, Any] | None:
    """Clicks the message's `index`-th citation chip and reads the modal it opens (closed again after)."""
    page = session.page
    chips = page.locator(f"#message-{message_id} #response-content-container > div:first-child button")
    if chips.count() <= index:
        return None
    chips.nth(index).click()
    page.wait_for_timeout(500)
    return page.evaluate(MODAL_JS)


def shoot_last_source(run: Run, message_id: str, name: str, to_end: bool = False) -> None:
    """Opens the last source listed under the message for a screenshot (`to_end`: its last passage, where a
    refusal's closest sentence is)."""
    listed = run.session.page.locator(f"button[id^='source-{message_id}-']")
    if listed.count():
        listed.last.click()
        run.session.page.wait_for_timeout(500)
        modal = run.session.page.evaluate(MODAL_JS) or {}
        if to_end:
            run.session.page.evaluate(SCROLL_MODAL_JS)
            run.session.page.wait_for_timeout(300)
        run.checks.note(f"{name}: the last source opens {modal.get('heading')!r} with {modal.get('passages')} "
                        "passage(s)")
        run.shoot(name)
        close_modal(run.session)


def close_modal(session: Session) -> None:
    session.page.keyboard.press("Escape")
    session.page.wait_for_timeout(300)


def shoot(session: Session, shots: Path, name: str) -> None:
    """A screenshot of the viewport, kept small: 64 colours are plenty for Open WebUI's flat page (a third of
    the bytes)."""
    shots.mkdir(parents=True, exist_ok=True)
    path = shots / f"{name}.png"
    session.page.screenshot(path=str(path))
    with contextlib.suppress(ImportError):
        from PIL import Image

        with Image.open(path) as image:
            small = image.convert("RGB").quantize(colors=64, method=Image.Quantize.MEDIANCUT)
        small.save(path, optimize=True)


# ---------------------------------------------------------------- the scenarios


@dataclass
class Run:
    """Everything a scenario needs: the servers, the browser session, what the articles hold, the results."""

    session: Session
    rag_url: str
    api_key: str
    titles: list[str]
    corpus: str
    shots: Path
    label: str
    checks: Checks

    def shoot(self, name: str) -> None:
        shoot(self.session, self.shots, self.label + name)


def check_shown_text(run: Run, what: str, view: dict[str, Any], expected: Probe) -> None:
    shown = _plain(view["bare"])
    run.checks.check(f"{what}: the page shows the server's checked text", shown == _plain(expected.checked),
                     f"shown {shown!r}; checked {_plain(expected.checked)!r}")


def check_markers(run: Run, view: dict[str, Any], saved: dict[str, Any], expected: Probe) -> None:
    """Every marker of the reply a chip naming an article; none dropped; no commas left between markers."""
    content = saved.get("content", "")
    runs = list(MARKERS.finditer(content))
    ids = _marker_ids(content)
    names = _source_names(saved.get("sources") or [])
    run.checks.check("answer: the reply carries [n] markers", bool(ids), f"content {content!r}")
    missing = sorted({n for n in ids if n > len(names)})
    run.checks.check("answer: every [n] marker has a source to link to (none dropped)", not missing,
                     f"markers {ids} but {len(names)} source(s) {names}: {missing} render as nothing")
    run.checks.check("answer: every run of markers is shown as a citation chip", len(view["chips"]) == len(runs),
                     f"{len(runs)} marker runs in {content!r}, {len(view['chips'])} chips {view['chips']}")
    bad_chips = [c for c in view["chips"] if not any(t in c for t in run.titles)]
    run.checks.check("answer: each chip names the article's title", view["chips"] and not bad_chips,
                     f"chips {view['chips']}")
    stray = re.search(r"(^|\s)[,;](\s*[,;.])", view["bare"])
    run.checks.check("answer: no commas left between markers", not stray and not re.search(r"\],\s*\[", content),
                     f"shown {view['bare']!r}")


def _source_names(sources: list[dict[str, Any]]) -> list[str]:
    """The names Open WebUI links markers to: one per distinct `metadata.source`, in order (its getSourceIds)."""
    names, seen = [], set()
    for source in sources:
        for index, _ in enumerate(source.get("document") or []):
            metadata = (source.get("metadata") or [{}])[index] if index < len(source.get("metadata") or []) else {}
            key = metadata.get("source") or (source.get("source") or {}).get("id") or "N/A"
            if key not in seen:
                seen.add(key)
                names.append(metadata.get("name") or (source.get("source") or {}).get("name") or key)
    return names


def check_passages(run: Run, message_id: str, expected: Probe, view: dict[str, Any]) -> None:
    """Each chip opens one passage: the cited one, holding its supporting sentence, under the article's title."""
    by_marker = {s.get("marker"): s for s in expected.sources if s.get("marker")}
    if not view["chips"]:  # nothing to click: the passages as the sources list opens them
        shoot_last_source(run, message_id, "answer-passage")
    for index in range(len(view["chips"])):
        modal = open_chip(run.session, message_id, index)
        if index == 0:
            run.shoot("answer-passage")
        close_modal(run.session)
        if modal is None:
            run.checks.check(f"answer: chip {index + 1} opens its passage", False, "no modal opened")
            continue
        marker = _marker_ids(expected.checked)[index] if index < len(_marker_ids(expected.checked)) else None
        sentence = ((by_marker.get(marker) or {}).get("span") or {}).get("text", "")
        run.checks.check(f"answer: chip {index + 1} opens one passage (its own)", modal["passages"] == 1,
                         f"it opens {modal['heading']!r} with {modal['passages']} passages")
        run.checks.check(f"answer: chip {index + 1}'s passage shows its supporting sentence",
                         bool(sentence) and _plain(sentence) in _plain(modal["text"]),
                         f"sentence {sentence!r} for [{marker}]")


def asked(run: Run, question: str, shot: str) -> tuple[Probe, str, str, dict[str, Any]]:
    """The server's own answer to the question (the probe), then the question asked in Open WebUI: the probe, the
    chat and message ids, and the message as it is shown (screenshot `shot`)."""
    expected = probe(run.rag_url, question, run.api_key)
    chat_id, message_id = ask(run.session, question)
    view = look(run.session, message_id)
    run.shoot(shot)
    return expected, chat_id, message_id, view


def scenario_answered(run: Run) -> None:
    print(f"\n(a) answered: {ANSWERED}", flush=True)
    expected, chat_id, message_id, view = asked(run, ANSWERED, "answer")
    run.checks.note(f"the server answers {ANSWERED!r} with {expected.checked!r} (refused: {expected.refused})")
    saved = saved_reply(run.session, chat_id)
    run.checks.note(f"Open WebUI shows {view['text']!r}; chips {view['chips']}; sources {view['sources']}")
    run.checks.check("answer: the server answered (not refused)", not expected.refused, expected.checked)
    check_shown_text(run, "answer", view, expected)
    check_markers(run, view, saved, expected)
    with_title = [s for s in view["sources"] if any(t in s for t in run.titles)]
    run.checks.check("answer: the sources list the article's title", bool(with_title),
                     f"sources shown {view['sources']}; titles {run.titles}")
    check_passages(run, message_id, expected, view)


def check_no_draft(run: Run, where: str, text: str, draft: str) -> None:
    found = [f for f in _fragments(draft) if f in text]
    run.checks.check(f"refusal: no rejected text {where}", not found, f"found {found}")


def _saved_contents(session: Session, chat_id: str) -> str:
    """Every message's content in Open WebUI's saved chat (its API), the user's questions left out."""
    chat = session.api(f"/api/v1/chats/{chat_id}")["chat"]
    messages = list(chat.get("history", {}).get("messages", {}).values()) + list(chat.get("messages") or [])
    return "\n".join(str(m.get("content", "")) for m in messages if m.get("role") == "assistant")


def _saved_in_database(data_dir: Path | None, chat_id: str) -> str:
    """The assistant contents of the chat in Open WebUI's own sqlite database ("" when it cannot be read)."""
    import sqlite3

    if data_dir is None or not (data_dir / "webui.db").exists():
        return ""
    with contextlib.closing(sqlite3.connect(f"file:{data_dir / 'webui.db'}?mode=ro", uri=True)) as db:
        row = db.execute("SELECT chat FROM chat WHERE id = ?", (chat_id,)).fetchone()
    if not row:
        return ""
    messages = json.loads(row[0]).get("history", {}).get("messages", {}).values()
    return "\n".join(str(m.get("content", "")) for m in messages if m.get("role") == "assistant")


def check_follow_ups(run: Run, what: str, question: str, follow_ups: list[str]) -> None:
    absent = _absent_words(question, run.corpus)
    off = [f for f in follow_ups if absent & {w.lower() for w in WORD.findall(f)}]
    run.checks.note(f"{what}: follow-ups shown {follow_ups}")
    run.checks.check(f"{what}: no follow-up names what the articles lack ({sorted(absent)})", not off,
                     f"offered {off}")


def scenario_rejected(run: Run, data_dir: Path | None) -> None:
    print(f"\n(b) rejected draft: {REJECTED}", flush=True)
    expected, chat_id, message_id, view = asked(run, REJECTED, "refusal")
    draft = expected.rejected_draft
    run.checks.note(f"the server streams {expected.streamed!r} and keeps {expected.checked!r}")
    run.checks.check("refusal: the server refuses the question", expected.refused, expected.checked)
    check_shown_text(run, "refusal", view, expected)
    check_no_draft(run, "on the page", view["page"], draft)
    closest = [s for s in view["sources"] if s.lower().startswith("closest in the articles")]
    run.checks.check("refusal: the closest sentence is its own source, labelled 'Closest in the articles'",
                     bool(closest), f"sources shown {view['sources']}")
    check_follow_ups(run, "refusal", REJECTED, view["followUps"])
    shoot_last_source(run, message_id, "refusal-source", to_end=True)
    run.session.page.reload()
    run.session.page.wait_for_function(f"() => !!document.getElementById('message-{message_id}')")
    run.session.page.wait_for_timeout(1500)
    again = look(run.session, message_id)
    check_shown_text(run, "refusal after a reload", again, expected)
    check_no_draft(run, "on the page after a reload", again["page"], draft)
    check_no_draft(run, "in Open WebUI's saved chat (API)", _saved_contents(run.session, chat_id), draft)
    check_no_draft(run, "in Open WebUI's database", _saved_in_database(data_dir, chat_id), draft)


def scenario_trimmed(run: Run) -> None:
    print(f"\n(d) one detail trimmed: {TRIMMED}", flush=True)
    expected, chat_id, _, view = asked(run, TRIMMED, "trimmed")
    run.checks.note(f"the server streams {expected.streamed!r} and keeps {expected.checked!r}")
    run.checks.check("trimmed: the draft held the detail the articles do not state",
                     TRIMMED_DETAIL in expected.streamed, expected.streamed)
    run.checks.check("trimmed: answered without the detail (not refused)",
                     not expected.refused and TRIMMED_DETAIL not in expected.checked, expected.checked)
    # Not compared word for word with the probe's text: Open WebUI's request is the second generation of this
    # prompt, read partly from the kept prefix, and may differ by a word ("South Korean" for "Korean").
    run.checks.check("trimmed: the page says a detail was left out", "left out" in view["bare"], view["bare"])
    saved = _saved_contents(run.session, chat_id)
    run.checks.check("trimmed: the detail is nowhere on the page or in the saved chat",
                     TRIMMED_DETAIL not in view["page"] and TRIMMED_DETAIL not in saved, saved)


def scenario_off_topic(run: Run) -> None:
    print(f"\n(c) off-topic: {OFF_TOPIC}", flush=True)
    expected, _, _, view = asked(run, OFF_TOPIC, "off-topic")
    run.checks.note(f"the server replies {expected.checked!r} (refused: {expected.refused})")
    run.checks.check("off-topic: refused", expected.refused, expected.checked)
    check_shown_text(run, "off-topic", view, expected)
    check_follow_ups(run, "off-topic refusal", OFF_TOPIC, view["followUps"])


# ---------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shots", type=Path, default=DEFAULT_SHOTS, help="where screenshots go")
    parser.add_argument("--label", default="", help="prefix of the screenshots' names (before-, after-)")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--rag-url", default="", help="use this running rag serve (http://HOST:PORT) instead")
    where.add_argument("--rag-root", type=Path, default=REPO, help="start rag serve from this tree (default: here)")
    parser.add_argument("--corpus", type=Path, default=None,
                        help="the server's articles, for the follow-up check (default: <rag-root>/corpus)")
    parser.add_argument("--venv", type=Path, default=VENV, help="Open WebUI's own virtualenv")
    return parser.parse_args(argv)


def scenarios(run: Run, data_dir: Path | None) -> None:
    for scenario in (scenario_answered, lambda r: scenario_rejected(r, data_dir), scenario_off_topic,
                     scenario_trimmed):
        try:
            scenario(run)
        except Exception as error:  # noqa: BLE001 - one scenario's failure is reported, the others still run
            run.checks.check("scenario ran to the end", False, f"{type(error).__name__}: {error}")
            with contextlib.suppress(Exception):
                run.shoot("error")


def check(args: argparse.Namespace, work: Path, checks: Checks) -> None:
    """Starts what is needed, drives Open WebUI through the scenarios, stops everything."""
    command = ensure_openwebui(args.venv)
    api_key = (os.environ.get("RAG_API_KEYS", "").split(",")[0] or "none").strip()
    with contextlib.ExitStack() as stack:
        rag_url = args.rag_url.rstrip("/")
        if not rag_url:
            port, log = free_port(), work / "rag-serve.log"
            server = stack.enter_context(running(start_rag(args.rag_root, port, log)))
            rag_url = f"http://127.0.0.1:{port}"
            print(f"rag serve from {args.rag_root} on {rag_url} (log {log})", flush=True)
            wait_healthy(f"{rag_url}/health", server, log, "rag serve", START_TIMEOUT_S)
        ui_port, ui_log, data_dir = free_port(), work / "open-webui.log", work / "open-webui-data"
        print(f"Open WebUI {OPENWEBUI_VERSION} on http://127.0.0.1:{ui_port} (data {data_dir}, log {ui_log})",
              flush=True)
        ui = stack.enter_context(running(start_openwebui(command, rag_url, ui_port, data_dir, api_key, ui_log)))
        ui_url = f"http://127.0.0.1:{ui_port}"
        wait_healthy(f"{ui_url}/health", ui, ui_log, "Open WebUI", START_TIMEOUT_S)
        session = stack.enter_context(browser(ui_url))
        corpus = args.corpus or (args.rag_root / "corpus")
        run = Run(session, rag_url, api_key, article_titles(rag_url, api_key), corpus_text(corpus), args.shots,
                  args.label, checks)
        scenarios(run, data_dir)
        if session.outside:
            checks.note(f"requests outside Open WebUI, aborted: {sorted(set(session.outside))}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    checks = Checks()
    with tempfile.TemporaryDirectory(prefix="check-openwebui-") as work:
        try:
            check(args, Path(work), checks)
        except (RuntimeError, TimeoutError, subprocess.CalledProcessError, httpx.HTTPError) as error:
            print(f"\ncould not run the check: {error}", file=sys.stderr)
            return 2
    print(f"\nOpen WebUI {OPENWEBUI_VERSION}, {time.monotonic() - started:.0f} s, screenshots in {args.shots}")
    print(checks.summary())
    return 1 if checks.failed else 0


if __name__ == "__main__":
    sys.exit(main())
