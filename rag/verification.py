"""Whether the articles answer a question: the generator as a yes/no judge, with sentence-level support of the reply.

The lexical checks (rag.citations) see words, not relations: "The South Korean government chairs the Metaverse
Alliance [1]" passes them because the passage names both. The judge asks the generator, after the same kept
document prefix the answer was generated from (so it costs only the question's tokens), whether the passages
state the answer to the question, and reads P(Yes) from the next-token probabilities of "Yes" and "No": one
forward pass, no sampling. Its score adds a little of the reply's best single-sentence support, since an
invented answer is often stitched from two sentences. The weight and the threshold were chosen on the tune
split of the project's question set (README, "What the verifier bought").
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from rag.citations import claim_support
from rag.generation import Generator, Message, Prefix, Usage
from rag.retrieval import Passage
from rag.text import key_terms, normalize_text, sentence_spans, split_sentences, strip_markers

JUDGE_RULE = "Do the passages state the answer to this question? Reply Yes or No."
SENTENCE_WEIGHT = 0.1  # chosen on the tune split: the judge alone separates worse (README)
# Chosen on the tune split, per generator. The 0.5B model's judge barely separates (AUC 0.63 on the tune split,
# P(Yes) never above 0.25), so it has none: its answers are not verified unless a threshold is set.
CALIBRATED_THRESHOLDS = {"qwen2.5-coder-1.5b": 0.59}


def threshold_for(generator: str, setting: float) -> float | None:
    """The `verify_threshold` setting when it is set (0 or more), else the generator's calibrated threshold,
    else None: a generator without one is not verified."""
    return setting if setting >= 0 else CALIBRATED_THRESHOLDS.get(generator)


@dataclass
class Verdict:
    answerable: float  # the judge's P(Yes)
    sentence_support: float  # the reply's best support by one sentence of a passage (0..1)
    score: float
    passed: bool
    usage: Usage

    def to_json(self) -> dict:
        return {**asdict(self), "usage": self.usage.to_json()}


def judge(generator: Generator, messages: list[Message], prefix: Prefix) -> tuple[float, Usage]:
    """P(Yes) that the passages state the answer; `messages` end with a question part built with JUDGE_RULE."""
    probabilities, usage = generator.option_probabilities(messages, ("Yes", "No"), prefix)
    return probabilities["Yes"], usage


def sentence_support(reply: str, passages: list[Passage]) -> float:
    """The best support any one sentence of any passage gives to any sentence of the reply (names, numbers and
    key words, as the citation check counts them), so that a claim stitched from two sentences scores lower."""
    claims = [strip_markers(s) for s in split_sentences(reply)]
    claims = [c for c in claims if any(key_terms(c))]
    sentences = {normalize_text(p.text[start:end]) for p in passages for start, end in sentence_spans(p.text)}
    return max((claim_support(c, s) for c in claims for s in sentences), default=0.0)


def verdict(answerable: float, support: float, threshold: float, usage: Usage) -> Verdict:
    score = answerable + SENTENCE_WEIGHT * support
    return Verdict(round(answerable, 4), round(support, 4), round(score, 4), score >= threshold, usage)
