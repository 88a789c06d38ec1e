"""One question's result: the answer, what it is scored as, and its line in results.jsonl."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from rag.answering.citations import closest_sentence, is_bare_label
from rag.answering.flow import NOT_IN_ARTICLES
from rag.evaluation.metrics import (
    answer_found,
    exact_match,
    f1,
    first_relevant_rank,
    passage_relevant,
    rgb_correct,
)
from rag.evaluation.questions import Question
from rag.text import split_sentences, strip_markers, words_kept
from rag.types import Answer, Passage

# ---------------------------------------------------------------- one question's result


@dataclass
class Result:
    question: Question
    answer: Answer
    refused: bool
    top5: list[Passage]  # a separate retrieval at depth 5, for hit@1/3/5

    @property
    def prediction(self) -> str:
        return "" if self.refused else strip_markers(self.answer.text)

    @property
    def found(self) -> bool:
        return not self.refused and answer_found(self.prediction, self.question)

    @property
    def correct(self) -> bool:
        return self.refused if self.question.unanswerable else self.found

    @property
    def refused_right(self) -> bool | None:
        """For an answerable question that was refused: whether the generator's reply held the gold answer (a right
        reply refused, the costly false refusal; False for a wrong reply refused, or a refusal before any reply).
        None otherwise."""
        if self.question.unanswerable or not self.refused:
            return None
        return answer_found(strip_markers(self.answer.raw_text or ""), self.question)

    @property
    def rank(self) -> int | None:
        return first_relevant_rank(self.answer.passages, self.question)

    @property
    def rank_at_5(self) -> int | None:
        return first_relevant_rank(self.top5, self.question)

    @property
    def words_kept(self) -> bool | None:
        """Whether the checked answer keeps the reply's words (None for refusals and extractive answers)."""
        if self.refused or is_bare_label(self.answer.raw_text):
            return None
        kept = " ".join(s for s in split_sentences(self.answer.text) if not s.startswith(NOT_IN_ARTICLES[:20]))
        return words_kept(self.answer.raw_text, kept)  # the notes on what is left out (trimmed or not said) aside

    @property
    def closest_gold(self) -> bool | None:
        """For an answerable question that was refused: whether the "closest in the articles" sentence shown with
        the refusal holds the gold answer (None otherwise)."""
        if self.question.unanswerable or not self.refused or self.answer.refusal_reason == "instruction":
            return None
        return bool(self.answer.closest) and answer_found(self.answer.closest.span_text, self.question)

    @property
    def closest_if_refused_gold(self) -> bool | None:
        """For an answerable question: whether the closest sentence a refusal would show holds the gold answer (the
        one shown, where it was refused). The closest-sentence rule measured over every answerable question, not
        only over the few the decision refuses (None for unanswerable questions and refused instructions)."""
        if self.question.unanswerable or self.answer.refusal_reason == "instruction":
            return None
        closest = self.answer.closest if self.refused else closest_sentence(
            self.answer.rewritten_question or self.question.question, self.answer.passages, self.answer.raw_text)
        return closest is not None and answer_found(closest.span_text, self.question)

    @property
    def cited_gold(self) -> bool | None:
        """Whether the cited passages hold a gold answer (None when nothing is cited or it was refused)."""
        if self.refused or not self.answer.citations:
            return None
        return answer_found("\n".join(c.passage for c in self.answer.citations), self.question)

    @property
    def first_source_gold(self) -> bool | None:
        """For an answerable question: whether the first source shown with the answer holds a gold answer. The page
        lists the cited passages first (the lowest marker first), a refusal shows its closest sentence, and
        otherwise the retrieved passages come in their ranked order: so where the generator cites, its reading of
        the passages is a second ranking stage (None for unanswerable questions)."""
        if self.question.unanswerable:
            return None
        first = min(self.answer.citations, key=lambda c: c.marker, default=None) or self.answer.closest
        if first is not None:
            return answer_found(first.passage, self.question)
        return bool(self.answer.passages) and passage_relevant(self.answer.passages[0], self.question)

    @property
    def both_named(self) -> bool | None:
        """For a query of the conflict condition: whether the answer names both the gold and the fake answer, each
        in a passage it cites (None for other queries)."""
        fake = self.question.extra.get("fake")
        if self.question.extra.get("condition") != "conflict" or not fake:
            return None
        cited = [c.passage for c in self.answer.citations]
        return (not self.refused and rgb_correct(self.prediction, self.question.rgb_answer)
                and rgb_correct(self.prediction, fake) and any(rgb_correct(p, self.question.rgb_answer) for p in cited)
                and any(rgb_correct(p, fake) for p in cited))

    @property
    def fake_given(self) -> bool | None:
        """Whether the answer gives the counterfactual (fake) answer, where the question has one."""
        fake = self.question.extra.get("fake")
        return None if not fake else not self.refused and rgb_correct(self.prediction, fake)

    @property
    def distinct_reports_at_5(self) -> bool:
        """Whether the top 5 passages come from 5 different reports: an edited reprint (a "-copyN" file of the
        RGB copies condition) counts as its original."""
        origins = [re.sub(r"-copy\d+(?=\.\w+$)", "", p.doc_id) for p in self.top5]
        return len(set(origins)) == len(origins)

    def to_dict(self) -> dict[str, Any]:
        golds = self.question.rgb_answer if self.question.rgb_answer is not None else self.question.answers
        return {
            "id": self.question.id, "question": self.question.question, "answers": golds,
            "unanswerable": self.question.unanswerable, "prediction": self.answer.text,
            "raw_text": self.answer.raw_text, "refused": self.refused, "refusal_reason": self.answer.refusal_reason,
            "second_look": self.answer.second_look, "correct": self.correct,
            "exact_match": exact_match(self.prediction, self.question.answers),
            "f1": round(f1(self.prediction, self.question.answers), 4),
            "citations": [{"marker": c.marker, "chunk_id": c.chunk_id} for c in self.answer.citations],
            "cited_gold": self.cited_gold, "unsupported": self.answer.unsupported,
            "retrieved": [p.chunk_id for p in self.answer.passages], "relevant_rank": self.rank,
            "retrieved_at_5": [p.chunk_id for p in self.top5], "relevant_rank_at_5": self.rank_at_5,
            "partial": self.answer.partial, "verdict": self.answer.verdict,
            "closest": self.answer.closest.span_text if self.answer.closest else None,
            "closest_gold": self.closest_gold, "closest_if_refused_gold": self.closest_if_refused_gold,
            "refused_right": self.refused_right,
            "first_source_gold": self.first_source_gold,
            "words_kept": self.words_kept, "latency": self.answer.timings, "usage": self.answer.usage,
            "conflict": self.answer.conflict, "conflict_groups": self.answer.conflict_groups,
            "both_named": self.both_named, "fake_given": self.fake_given, "dates": self.answer.dates,
        }
