"""Answer or refuse: cheap probes of a reply and the fitted model that weighs them into one decision.

Every probe rides on work already done: the judge's P(Yes) costs only the question's tokens after the kept
document, the reply's token log-probabilities are read from the engine's logits while it generates, a middle
layer's output where the answer prompt ends is read while that prompt is processed (a fitted linear probe scores
it: `answer_state`), and the lexical and retrieval probes are arithmetic on the passages. A logistic regression
(scikit-learn) fitted on labelled replies (the tune split and RGB positions 50-99 only) weighs them; it is saved as
JSON with the hash of the generator it was fitted for, and any other generator, engine or embedder falls back to
the lexical checks with the threshold rule (rag.answering.verification), saying so in the verdict. The judge costs
a pass of the generator over the question's tokens (as do the measured-only probes that read the reply, the
refusal sentence or a decoded quote, and the judge's own hidden state), so a second regression without them (the
screen) settles the clear replies first.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rag.answering.citations import claim_support, names, support
from rag.calibration import ANSWER_LAYER
from rag.errors import BadInput
from rag.text import key_terms, normalize_text, sentence_spans, split_sentences, strip_markers
from rag.types import CheckResult, Passage

FORMAT = "rag-decision"
VERSION = 1
DECISIONS = Path(__file__).parent / "decisions"
# What each probe measures (docs/results.md); the order is the model's.
FEATURES = {
    "judge_yes": "the generator's P(Yes) that the passages state the answer (one pass over the question's tokens)",
    "sentence_support": "the reply's best support by one sentence of a passage (names, numbers, key words)",
    "supported_share": "share of the reply's sentences the citation check found supported by a cited passage",
    "names_found": "share of the reply's names (capitalised words) that occur in the passages",
    "adds_information": "1 when the reply says more than the question (a new figure for a how-much question)",
    "focus": "1 when the reply holds what the question's wh-word asks for (a year for when, a figure for how much)",
    "question_coverage": "share of the question's key words in the passage sentence that best supports the reply",
    "joint_support": "the best sentence's smaller share of the question's key words and of the reply's new terms "
                     "(one sentence that states both what is asked and the answer, as a quote would)",
    "logprob_min": "the lowest log-probability of the reply's tokens",
    "logprob_mean": "the mean log-probability of the reply's tokens",
    "logprob_key_min": "the lowest log-probability of the reply's tokens holding a digit or a capital letter",
    "reply_judge_yes": "the generator's P(Yes) that a passage states the reply's answer (the reply shown to it)",
    "refusal_logprob": "the log-probability of the refusal sentence as the reply, after the question",
    "refusal_margin": "the refusal sentence's mean token log-probability less the reply's",
    "contrastive": "the reply's mean token log-probability with the passages less without them",
    "quote_found": "how much of the generator's decoded quote (the passage sentence it says answers the question) "
                   "one sentence of the passages holds: 1 when it copied a sentence, low when it wrote its own",
    "quote_question": "share of the question's key words in the sentence the generator quoted",
    "quote_joint": "joint support of the quoted sentence: the smaller share of the question's key words and of the "
                   "reply's new terms it holds (the quote must carry both what is asked and the answer)",
    "judge_state": "a linear probe on the generator's last hidden state where the judge answers (its logit)",
    "answer_state": "a linear probe on a middle layer's output at the answer prompt's last position, where the reply "
                    "begins (its logit; read while the prompt is processed, so it costs no pass)",
    "best_relevance": "the best passage's similarity to the question",
    "relevance_gap": "the first passage's similarity minus the second's",
}
RETRIEVAL_FEATURES = ("best_relevance", "relevance_gap")  # their scale is the embedder's
# The probes that cost the generator a pass over their own tokens (the rest are arithmetic or read while generating)
GENERATOR_PROBES = ("judge_yes", "reply_judge_yes", "refusal_logprob", "refusal_margin", "contrastive", "judge_state",
                    "quote_found", "quote_question", "quote_joint")
QUOTE_FEATURES = ("quote_found", "quote_question", "quote_joint")  # read from one decoded quote
STATE_FEATURE, STATE_KIND = "judge_state", "judge"  # the probe read from the judge's hidden state, and that state
# The probe read from a middle layer where the reply begins (its layer: rag.calibration.ANSWER_LAYER, chosen among
# STUDY_LAYERS, the layers whose outputs there and at the judge are recorded for fitting)
ANSWER_FEATURE = "answer_state"
STUDY_LAYERS = (10, 14, 16, 18, 20, 22)
STATE_FEATURES = (STATE_FEATURE, ANSWER_FEATURE)  # a decision stacks at most one of them
# What the generator reads (rag.answering.prompts.Context): the seed article's whole document from its kept state,
# or retrieved passages from many articles. A decision may hold a threshold pair of its own for each
# (`layout_thresholds`).
LAYOUTS = ("document", "passages")
_ANSWER_KIND = re.compile(r"answer@(\d{1,3})")


def answer_kind(layer: int) -> str:
    """The name of the state a probe on `layer`'s output at the answer prompt's last position reads."""
    return f"answer@{layer}"


def reply_kind(layer: int, mean: bool = False) -> str:
    """The name of a recorded state read over the reply: `layer`'s output where the reply's last evaluated token is,
    or its mean over the reply's tokens (studied with `python -m tools.fit_decision --states`; no probe reads them)."""
    return f"{'replymean' if mean else 'reply'}@{layer}"


_WHEN = re.compile(r"^\s*(?:when|in what year|what year|what date|since when|by when|which year|"
                   r"in which (?:year|month)|what month)\b", re.IGNORECASE)
_QUANTITY_QUESTION = re.compile(  # the quantity questions a reply must bring a new number to
    r"^\s*(?:by )?(?:how (?:much|many|big|large)|what (?:percentage|share|proportion|amount))\b", re.IGNORECASE)
_QUANTITY = re.compile(r"^\s*(?:by )?(?:how (?:much|many|long|big|large|fast|old)|what (?:percentage|share|"
                       r"proportion|amount|number|size)|what was the (?:growth|rate))\b", re.IGNORECASE)
_WHO = re.compile(r"^\s*(?:who|whom|whose|which (?:person|individual|minister|company|companies|country|"
                  r"countries|city|organi[sz]ation|firm|ministry))\b", re.IGNORECASE)
_YEAR_OR_DATE = re.compile(r"\b(?:1[89]\d\d|20\d\d|January|February|March|April|May|June|July|August|September|"
                           r"October|November|December|yesterday|today|last (?:week|month|year)|this (?:week|"
                           r"month|year)|ago)\b", re.IGNORECASE)


class DecisionError(BadInput, ValueError):
    """A decision file that cannot be used (unreadable, malformed, or for another model): the checks decide."""


# ---------------------------------------------------------------- probes


def lexical_probes(reply: str, question: str, passages: list[Passage], checked: CheckResult | None) -> dict[str, float]:
    """The probes read from the reply's words against the question and the passages (no model)."""
    claims, sentences = _claims(reply), _sentences(passages)
    claims = claims or [strip_markers(reply)]
    best = max(sentences, key=lambda s: max((claim_support(c, s), support(c, s)) for c in claims), default="")
    reply_names = set().union(*(names(c) for c in claims))
    passage_words = set().union(*(key_terms(p.text)[1] for p in passages)) if passages else set()
    asked_words, new_numbers, new_words = new_terms(question, claims)
    judged = (checked.supported_sentences + len(checked.unsupported)) if checked else 0
    return {
        "sentence_support": _best_support(claims, sentences),
        "supported_share": checked.supported_sentences / judged if judged else 0.0,
        "names_found": len(reply_names & passage_words) / len(reply_names) if reply_names else 1.0,
        "adds_information": float(adds_information(question, reply)),
        "focus": float(holds_focus(question, strip_markers(reply))),
        "question_coverage": coverage(asked_words, key_terms(best)[1]),
        "joint_support": max((joint_support(asked_words, new_numbers, new_words, s) for s in sentences),
                             default=0.0),
    }


def sentence_support(reply: str, passages: list[Passage]) -> float:
    """The best support any one sentence of any passage gives to any sentence of the reply (names, numbers and
    key words, as the citation check counts them), so that a claim stitched from two sentences scores lower."""
    return _best_support(_claims(reply), _sentences(passages))


def _claims(reply: str) -> list[str]:
    """The reply's sentences that hold a number or a key word, without their markers."""
    return [c for c in (strip_markers(s) for s in split_sentences(reply)) if any(key_terms(c))]


def _sentences(passages: list[Passage]) -> list[str]:
    return list(dict.fromkeys(normalize_text(p.text[a:b]) for p in passages for a, b in sentence_spans(p.text)))


def _best_support(claims: list[str], sentences: list[str]) -> float:
    return max((claim_support(c, s) for c in claims for s in sentences), default=0.0)


def new_terms(question: str, claims: list[str]) -> tuple[set[str], set[str], set[str]]:
    """The question's key words, and the claims' numbers and key words that the question does not hold (the
    answer they give)."""
    asked_numbers, asked_words = key_terms(question)
    new_numbers = set().union(*(key_terms(c)[0] for c in claims)) - asked_numbers
    new_words = set().union(*(key_terms(c)[1] for c in claims)) - asked_words
    return asked_words, new_numbers, new_words


def coverage(wanted: set[str], have: set[str]) -> float:
    return len(wanted & have) / len(wanted) if wanted else 0.0


def joint_support(asked_words: set[str], new_numbers: set[str], new_words: set[str], sentence: str) -> float:
    """How well one sentence states both the question's subject and the reply's answer: the smaller of the shares
    of the question's key words and of the reply's new numbers and words (those not in the question) it holds."""
    numbers, words = key_terms(sentence)
    if new_numbers - numbers:
        return 0.0
    answered = coverage(new_words, words) if new_words else float(bool(new_numbers))
    return min(coverage(asked_words, words), answered)


def adds_information(question: str, reply: str) -> bool:
    """Whether a reply says more than its question: a new number or key word, and a new number when the
    question asks for a quantity ("How much did Meta commit?" is not answered by "Meta committed to invest")."""
    question_numbers, question_words = key_terms(question)
    numbers, words = key_terms(strip_markers(reply))
    if _QUANTITY_QUESTION.match(question):
        return bool(numbers - question_numbers)
    return bool(numbers - question_numbers or words - question_words)


def holds_focus(question: str, reply: str) -> bool:
    """Whether the reply holds what the question's wh-word asks for: a date or year for "when", a figure for
    "how much / how many", a name not in the question for "who"; other questions always do."""
    if _WHEN.match(question):
        return bool(_YEAR_OR_DATE.search(reply) or key_terms(reply)[0] - key_terms(question)[0])
    if _QUANTITY.match(question):
        return bool(key_terms(reply)[0] - key_terms(question)[0]) or bool(re.search(
            r"\b(?:one|two|three|four|five|six|seven|eight|nine|ten|dozen|hundred|thousand|million|billion)\b",
            reply, re.IGNORECASE))
    if _WHO.match(question):  # `names` skips a sentence's first word, which here may be the name asked for
        return bool(names("X " + reply) - key_terms(question)[1])
    return True


def quote_probes(quote: str, question: str, reply: str, passages: list[Passage]) -> dict[str, float]:
    """The decoded quote checked against the passages: the sentence that holds the most of its terms is taken as
    the one quoted (the quote may be cut short: its first words name the sentence), then that sentence must carry
    the question's key words and the reply's answer (its terms not in the question)."""
    sentences = _sentences(passages)
    numbers, words = key_terms(strip_markers(quote))
    if not sentences or not numbers | words:
        return dict.fromkeys(QUOTE_FEATURES, 0.0)
    shares = [len((numbers | words) & (n | w)) / len(numbers | words) for n, w in map(key_terms, sentences)]
    best = max(range(len(sentences)), key=shares.__getitem__)
    asked_words, new_numbers, new_words = new_terms(question, _claims(reply) or [strip_markers(reply)])
    return {"quote_found": shares[best], "quote_question": coverage(asked_words, key_terms(sentences[best])[1]),
            "quote_joint": joint_support(asked_words, new_numbers, new_words, sentences[best])}


def retrieval_probes(passages: list[Passage]) -> dict[str, float]:
    """The best passage's similarity and its lead over the second (chunks not retrieved count 0)."""
    relevances = sorted((p.relevance for p in passages), reverse=True) + [0.0, 0.0]
    return {"best_relevance": relevances[0], "relevance_gap": relevances[0] - relevances[1]}


# ---------------------------------------------------------------- the fitted model


def _logistic(model: Decision | Screen, values: dict[str, float]) -> float:
    z = model.intercept + sum(c * (values[f] - m) / s for f, m, s, c in
                              zip(model.features, model.mean, model.scale, model.coef, strict=True))
    return 1.0 / (1.0 + math.exp(-max(-50.0, min(50.0, z))))


def _checked_model(data: dict[str, Any], thresholds: tuple[str, str]) -> dict[str, Any]:
    """The regression's fields of `data`, checked: a file of another shape is a DecisionError, never half-used."""
    fields = {k: data.get(k) for k in ("features", "mean", "scale", "coef")}
    if not all(isinstance(v, list) for v in fields.values()) or len({len(v) for v in fields.values()}) != 1:
        raise DecisionError("features, mean, scale and coef must be lists of one length")
    unknown = [f for f in fields["features"] if f not in FEATURES]
    if unknown:
        raise DecisionError(f"unknown feature(s): {', '.join(map(str, unknown))}")
    numbers = fields["mean"] + fields["scale"] + fields["coef"] + [data.get(k) for k in ("intercept", *thresholds)]
    if not all(map(_finite, numbers)):
        named = ", ".join(("coefficient", "mean", "scale", "intercept", *thresholds))
        raise DecisionError(f"every {named} must be a finite number")
    if thresholds and not 0 <= data[thresholds[0]] <= data[thresholds[1]] <= 1:
        raise DecisionError(f"the thresholds must satisfy 0 <= {thresholds[0]} <= {thresholds[1]} <= 1")
    if any(s <= 0 for s in fields["scale"]):
        raise DecisionError("every scale must be positive")
    return {**fields, "intercept": float(data["intercept"]), **{k: float(data[k]) for k in thresholds}}


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _checked_layouts(data: Any) -> dict[str, list[float]]:
    """`layout_thresholds`: each named layout's pair [threshold, override_threshold], checked as the pooled pair."""
    if not isinstance(data, dict) or not set(data) <= set(LAYOUTS):
        raise DecisionError(f"layout_thresholds must be an object keyed by {' or '.join(LAYOUTS)}")
    pairs = {}
    for layout, pair in data.items():
        if not (isinstance(pair, list) and len(pair) == 2 and all(map(_finite, pair)) and 0 <= pair[0] <= pair[1] <= 1):
            raise DecisionError(f"layout_thresholds[{layout!r}] must be [threshold, override_threshold] with "
                                "0 <= threshold <= override_threshold <= 1")
        pairs[layout] = [float(v) for v in pair]
    return pairs


def banded(probability: float, refuse_below: float, answer_from: float) -> bool | None:
    """A screen's call on a reply: True (answer) from `answer_from`, False (refuse) under `refuse_below`, None (the
    judge decides) in between."""
    return True if probability >= answer_from else False if probability < refuse_below else None


@dataclass
class Screen:
    """The decision without the judge, tried first: a reply it scores at `answer_from` or above is answered and
    one under `refuse_below` refused, neither paying the judge's pass; in between the judge runs and the
    decision decides. Both bounds were chosen on out-of-fold probabilities so that every tune reply the screen
    settles is decided as the decision alone decides it (tools.fit_decision)."""

    features: list[str]
    mean: list[float]
    scale: list[float]
    coef: list[float]
    intercept: float
    refuse_below: float
    answer_from: float

    def probability(self, values: dict[str, float]) -> float:
        return _logistic(self, values)

    def call(self, probability: float) -> bool | None:
        return banded(probability, self.refuse_below, self.answer_from)

    @classmethod
    def from_dict(cls, data: Any) -> Screen:
        if not isinstance(data, dict):
            raise DecisionError("the screen must be an object")
        screen = cls(**_checked_model(data, ("refuse_below", "answer_from")))
        costly = [f for f in screen.features if f in GENERATOR_PROBES]
        if costly:
            raise DecisionError(f"the screen cannot read {', '.join(costly)}: it decides before the generator's "
                                "probes run")
        return screen


@dataclass
class StateProbe:
    """A logistic regression over one of the generator's states, each value standardised: the last hidden state
    where the judge answers (kind "judge", after the kept document and the judge's question; its logit is the
    decision's `judge_state`), or a layer's output at the answer prompt's last position (kind "answer@18": the
    decision's `answer_state`). Fitted with the decision (tools.fit_decision)."""

    kind: str
    mean: list[float]
    scale: list[float]
    coef: list[float]
    intercept: float

    @property
    def feature(self) -> str:
        """The decision's probe this state probe gives."""
        return STATE_FEATURE if self.kind == STATE_KIND else ANSWER_FEATURE

    @property
    def layer(self) -> int | None:
        """The layer an answer-state probe reads (None for the judge's last hidden state)."""
        matched = _ANSWER_KIND.fullmatch(self.kind)
        return int(matched.group(1)) if matched else None

    def logit(self, state: list[float]) -> float:
        if len(state) != len(self.coef):
            raise DecisionError(f"a hidden state of {len(state)} values for a probe of {len(self.coef)}")
        return float(((np.asarray(state) - self.mean) / self.scale) @ np.asarray(self.coef) + self.intercept)

    @classmethod
    def from_dict(cls, data: Any) -> StateProbe:
        kind = data.get("kind") if isinstance(data, dict) else None
        if not isinstance(kind, str) or not (kind == STATE_KIND or _ANSWER_KIND.fullmatch(kind)):
            raise DecisionError(f"the state probe must be an object of kind {STATE_KIND} or "
                                f"{answer_kind(ANSWER_LAYER)} (another layer's number in place of {ANSWER_LAYER})")
        model = _checked_model({**data, "features": [STATE_FEATURE] * len(data.get("coef") or [])}, ())
        return cls(kind, model["mean"], model["scale"], model["coef"], model["intercept"])


@dataclass
class Decision:
    """A logistic regression over standardised probes: P(the reply answers from the passages). A reply stands at
    `threshold` or above when the lexical checks passed it, and only at `override_threshold` or above when they
    refused it (a name worded differently from the passage, a reply that repeats the question); a layout named in
    `layout_thresholds` (the whole document, or retrieved passages) has a pair of its own, each chosen on its own
    tune questions. An optional `screen` settles the clear cases before the judge runs."""

    features: list[str]
    mean: list[float]
    scale: list[float]
    coef: list[float]
    intercept: float
    threshold: float
    generator: str
    generator_sha256: str
    engine: str
    embedder: str
    override_threshold: float = 1.0
    report: dict[str, Any] = field(default_factory=dict)  # how it was fitted and how it scored (cross-validated)
    screen: Screen | None = None
    state_probe: StateProbe | None = None  # present when `features` reads judge_state or answer_state (its kind)
    layout_thresholds: dict[str, list[float]] = field(default_factory=dict)  # layout -> [threshold, override]

    def threshold_for(self, checks_passed: bool, layout: str = "") -> float:
        """What the probability must reach for a reply read in `layout` (the pooled pair for a layout without one)."""
        passed, override = self.layout_thresholds.get(layout, (self.threshold, self.override_threshold))
        return passed if checks_passed else override

    def probability(self, values: dict[str, float]) -> float:
        return _logistic(self, values)

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "version": VERSION, **asdict(self)}

    @classmethod
    def from_dict(cls, data: Any) -> Decision:
        """Checked field by field: a file of another shape is a DecisionError, never half-used."""
        if not isinstance(data, dict) or data.get("format") != FORMAT or data.get("version") != VERSION:
            raise DecisionError(f"not a {FORMAT} file of version {VERSION}")
        model = _checked_model(data, ("threshold", "override_threshold"))
        texts = {k: data.get(k) for k in ("generator", "generator_sha256", "engine", "embedder")}
        if not all(isinstance(v, str) and v for v in texts.values()):
            raise DecisionError("generator, generator_sha256, engine and embedder must be named")
        screen = Screen.from_dict(data["screen"]) if data.get("screen") is not None else None
        probe = StateProbe.from_dict(data["state_probe"]) if data.get("state_probe") is not None else None
        stacked = [f for f in STATE_FEATURES if f in model["features"]]
        if len(stacked) > 1:
            raise DecisionError(f"the decision reads {' and '.join(stacked)}: one state probe at most")
        if stacked and probe is None:
            raise DecisionError(f"the decision reads {stacked[0]} but carries no state probe")
        if stacked and probe.feature != stacked[0]:
            raise DecisionError(f"the decision reads {stacked[0]} but its state probe is of kind {probe.kind}")
        layouts = _checked_layouts(data.get("layout_thresholds") or {})
        return cls(**model, **texts, report=data.get("report") if isinstance(data.get("report"), dict) else {},
                   screen=screen, state_probe=probe, layout_thresholds=layouts)


def decision_file(generator: str) -> Path:
    return DECISIONS / f"{re.sub(r'[^A-Za-z0-9._-]+', '-', generator)}.json"


def load_decision(path: Path, generator: str, generator_sha256: str, engine: str, embedder: str,
                  ) -> tuple[Decision | None, str]:
    """The fitted decision for this generator, engine and embedder, or None and why the checks decide instead."""
    if not path.is_file():
        return None, f"no fitted decision for {generator} ({path.name}): the checks decide"
    try:
        decision = Decision.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, DecisionError) as exc:
        return None, f"the decision file {path.name} is unusable ({exc}): the checks decide"
    wanted = {"generator_sha256": generator_sha256, "engine": engine}
    if set(decision.features) & set(RETRIEVAL_FEATURES):  # similarities are on the embedder's own scale
        wanted["embedder"] = embedder
    foreign = [k for k, v in wanted.items() if getattr(decision, k) != v]
    if foreign:
        return None, (f"the decision file {path.name} was fitted for another {', '.join(foreign)} "
                      f"({', '.join(str(getattr(decision, k)) for k in foreign)}): the checks decide")
    return decision, ""


__all__ = ["ANSWER_FEATURE", "ANSWER_LAYER", "FEATURES", "GENERATOR_PROBES", "LAYOUTS", "QUOTE_FEATURES",
           "RETRIEVAL_FEATURES",
           "STATE_FEATURE", "STATE_FEATURES", "STATE_KIND", "STUDY_LAYERS",
           "Decision", "DecisionError", "Screen", "StateProbe",
           "adds_information", "answer_kind", "banded", "decision_file", "holds_focus", "lexical_probes",
           "load_decision", "quote_probes", "reply_kind", "retrieval_probes"]
