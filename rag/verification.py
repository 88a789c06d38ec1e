"""Whether the articles answer a question: the generator as a yes/no judge, the probes, and the decision they feed.

The lexical checks (rag.citations) see words, not relations: "The South Korean government chairs the Metaverse
Alliance [1]" passes them because the passage names both. The judge asks the generator, after the same kept
document prefix the answer was generated from (so it costs only the question's tokens), whether the passages
state the answer to the question, and reads P(Yes) from the next-token probabilities of "Yes" and "No": one
forward pass, no sampling. Its score adds a little of the reply's best single-sentence support, since an
invented answer is often stitched from two sentences. The weight and the threshold were chosen on the tune
split of the project's question set (README, "What the verifier bought").

Where a fitted decision exists for the generator (rag.decision), the judge's P(Yes) is one probe among several and
the fitted model decides, the lexical checks included as probes; otherwise the checks and this threshold decide.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from rag.decision import Decision, Screen
from rag.generator_types import Generator, Message, Prefix, Usage

JUDGE_RULE = "Do the passages state the answer to this question? Reply Yes or No."
REPLY_JUDGE_RULE = "Proposed answer: {reply}\nDoes a passage state this answer to the question? Reply Yes or No."
QUOTE_RULE = "Copy, word for word, the one sentence of the passages that answers this question."
QUOTE_TOKENS = 32  # enough of a sentence to tell which one it is; the probe reads the sentence, not the quote
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
    answerable: float | None  # the judge's P(Yes); None when the decision's screen settled the reply without it
    sentence_support: float  # the reply's best support by one sentence of a passage (0..1)
    score: float | None  # the threshold rule's score: P(Yes) + SENTENCE_WEIGHT x sentence support
    passed: bool
    usage: Usage
    decided_by: str = "checks"  # "decision" (the fitted model over the probes) or "checks" (lexical checks, threshold)
    probability: float | None = None  # the fitted decision's P(the reply answers from the passages)
    threshold: float | None = None  # what `probability` (decision) or `score` (checks) had to reach; for a reply the
    # decision's screen refused without the judge, the bound its probability fell under
    note: str = ""  # why the checks decided although a decision was expected (a missing, corrupt or foreign file)
    features: dict[str, float] = field(default_factory=dict)  # every probe's value (rag.decision.FEATURES)
    judged: bool = True  # whether the judge ran (the decision's screen settles clear replies without it)
    # recorded for fitting (`all_probes`, `record_states`): the generator's last hidden state at the judge's (and with
    # all_probes the reply judge's) answer position, and the studied layers' outputs where the answer prompt ends
    states: dict[str, list[float]] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {**asdict(self), "usage": self.usage.to_json()}


def judge(generator: Generator, messages: list[Message], prefix: Prefix) -> tuple[float, Usage]:
    """P(Yes) that the passages state the answer; `messages` end with a question part built with JUDGE_RULE."""
    probabilities, usage = generator.option_probabilities(messages, ("Yes", "No"), prefix)
    return probabilities["Yes"], usage


def judge_with_state(generator: Generator, messages: list[Message], prefix: Prefix,
                     ) -> tuple[float, list[float] | None, Usage]:
    """P(Yes), then the generator's last hidden state where it is read: one more token's evaluation, the judge's
    prompt being in the context by then. The decision was fitted on the pair computed this way (llama.cpp's numbers
    for a position differ slightly between a prompt evaluated whole and its last token alone, up to 0.02 in P(Yes)).
    The state is rounded as recorded for fitting, and None where the engine cannot give it."""
    answerable, usage = judge(generator, messages, prefix)
    try:
        state, spent = generator.hidden_state(messages, prefix)
    except NotImplementedError:
        return answerable, None, usage
    usage.evaluated_tokens += spent.evaluated_tokens
    return answerable, [round(float(v), 4) for v in state], usage


def verdict(answerable: float, support: float, threshold: float, usage: Usage) -> Verdict:
    score = answerable + SENTENCE_WEIGHT * support
    return Verdict(round(answerable, 4), round(support, 4), round(score, 4), score >= threshold, usage,
                   threshold=threshold)


def decide(features: dict[str, float], usage: Usage, decision: Decision | None, threshold: float | None,
           lexically_passed: bool, note: str = "") -> Verdict:
    """The verdict on a reply from its probes: the fitted decision's when there is one, else the checks' (a reply
    the lexical checks refused stays refused; one they passed must reach the threshold rule's score)."""
    judged = verdict(features["judge_yes"], features["sentence_support"], threshold or 0.0, usage)
    judged.features = _rounded(features)
    if decision is not None and all(features.get(f) is not None for f in decision.features):
        probability, needed = decision.probability(features), decision.threshold_for(lexically_passed)
        judged.passed, judged.decided_by = probability >= needed, "decision"
        judged.probability, judged.threshold = round(probability, 4), needed
        return judged
    judged.passed = lexically_passed and (threshold is None or judged.passed)
    judged.note = note or ("" if decision is None else "a probe is missing for the fitted decision: the checks decide")
    return judged


def settled(features: dict[str, float | None], screen: Screen) -> Verdict | None:
    """The verdict of the fitted decision's screen when it settles the reply without the judge, else None."""
    if any(features.get(f) is None for f in screen.features):
        return None
    probability = screen.probability(features)
    passed = screen.call(probability)
    if passed is None:
        return None
    return Verdict(None, round(features["sentence_support"], 4), None, passed, Usage(), decided_by="decision",
                   probability=round(probability, 4), threshold=screen.answer_from if passed else screen.refuse_below,
                   features=_rounded({"judge_yes": None, **features}), judged=False)


def _rounded(features: dict[str, float | None]) -> dict[str, float | None]:
    return {k: None if v is None else round(v, 4) for k, v in features.items()}
