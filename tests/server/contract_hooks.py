"""Schemathesis hooks of the API's contract run (tests/server/test_contract.py and `make check-contract`, both through
tests/server/schemathesis.toml).

They shape the *positive* cases, and only those, by the three rules of the API that JSON Schema cannot state, so
that a case that the schema and these rules call valid is one the server must accept (the schema's descriptions
say the same):

- the last message of a chat is the user's question, whose text holds something besides white space and fits the
  question's limit (JSON Schema cannot single out an array's last item);
- `since` is not after `until` (JSON Schema cannot compare two fields);
- an upload is a readable article (JSON Schema cannot say what a file holds): one small PDF with a title and a
  sentence, the same bytes every time (after the first it is a duplicate, so no case rebuilds the index twice).

They run just before a case is sent, in every phase. A JSON body is changed in place (schemathesis checks it
against the schema again: it stays valid); the upload's file is put in the request instead of the generated one,
since schemathesis takes any body holding bytes that a hook changed for an invalid one. Negative cases are sent as
generated: the server must refuse every one of them.
"""

from __future__ import annotations

import io
import re
from functools import cache
from typing import Any

import schemathesis
from schemathesis import Case, HookContext

FALLBACK_QUESTION = "Who won the 2022 FIFA World Cup final?"  # far from every article: refused without generating


@schemathesis.hook
def before_call(context: HookContext, case: Case, kwargs: dict[str, Any]) -> None:
    if case.meta is None or not case.meta.generation.mode.is_positive:
        return
    label = case.operation.label
    if label == "POST /v1/articles":
        kwargs["files"] = [("files", ("contract-article.pdf", article_pdf(), "application/pdf"))]
    elif isinstance(case.body, dict) and label in ("POST /v1/chat/completions", "POST /v1/retrieve"):
        _dates_in_order(case.body)
        if label == "POST /v1/chat/completions" and isinstance(case.body.get("messages"), list):
            _question_last(case.body["messages"], _question_rule(case))


def _question_rule(case: Case) -> tuple[str, int]:
    """The question's pattern and limit, as the schema states them for /v1/retrieve's query."""
    query = case.operation.schema.raw_schema["components"]["schemas"]["RetrieveRequest"]["properties"]["query"]
    return query["pattern"], query["maxLength"]


def _dates_in_order(body: dict[str, Any]) -> None:
    since, until = body.get("since"), body.get("until")
    if isinstance(since, str) and isinstance(until, str) and since and until and since > until:
        body["since"], body["until"] = until, since


def _question_last(messages: list[dict[str, Any]], rule: tuple[str, int]) -> None:
    pattern, limit = rule
    last = messages[-1]
    last["role"] = "user"
    content = last.get("content")
    parts = content if isinstance(content, list) else []
    text = content if isinstance(content, str) else "\n".join(str(p.get("text", "")) for p in parts)
    if not isinstance(text, str) or not re.search(pattern, text) or len(text) > limit:
        last["content"] = FALLBACK_QUESTION


@cache
def article_pdf() -> bytes:
    """A one-page PDF article (reportlab, invariant: the same bytes on every call and run)."""
    from reportlab.pdfgen import canvas

    out = io.BytesIO()
    pdf = canvas.Canvas(out, invariant=1)
    pdf.setTitle("Contract test article")
    pdf.drawString(72, 720, "Contract test article")
    pdf.drawString(72, 700, "The Norrport ferry carried 1,240 passengers on its first day of service.")
    pdf.save()
    return out.getvalue()
