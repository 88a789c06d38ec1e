"""Whether the articles answer a question: the generator as a yes/no judge, the probes, and the decision they feed.

The lexical checks (rag.answering.citations) see words, not relations: "The South Korean government chairs the Metaverse
Alliance [1]" passes them because the passage names both. The judge asks the generator, after the same kept
document prefix the answer was generated from (so it costs only the question's tokens), whether the passages
state the answer to the question, and reads P(Yes) from the next-token probabilities of "Yes" and "No": one
forward pass, no sampling. Its score adds a little of the reply's best single-sentence support, since an
invented answer is often stitched from two sentences. The weight and the threshold were chosen on the tune
split of the project's question set (docs/results.md).

Where a fitted decision exists for the generator (rag.answering.decision), the judge's P(Yes) is one probe of several;
the fitted model decides, the lexical checks included as probes; otherwise the checks and this threshold decide.
`verify` gathers one reply's probes (the cheap ones first, the judge only when the decision's screen cannot settle it)
and returns the Verdict.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from rag.answering.decision import (
    ANSWER_FEATURE,
    GENERATOR_PROBES,
    QUOTE_FEATURES,
    STATE_FEATURE,
    STATE_FEATURES,
    STATE_KIND,
    STUDY_LAYERS,
    Decision,
    Screen,
    StateProbe,
    answer_kind,
    decision_file,
    lexical_probes,
    load_decision,
    quote_probes,
    reply_kind,
    retrieval_probes,
)
from rag.answering.prompts import JUDGE_RULE, QUOTE_RULE, REPLY_JUDGE_RULE, Context, answer_rule, build_prompt
from rag.calibration import CALIBRATED_THRESHOLDS, SENTENCE_WEIGHT
from rag.generators.base import Generator, Message, complete
from rag.loaded import Loaded
from rag.settings import Settings
from rag.types import CheckResult, Prefix, Usage

QUOTE_TOKENS = 32  # enough of a sentence to tell which one it is; the probe reads the sentence, not the quote


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
    features: dict[str, float] = field(default_factory=dict)  # every probe's value (rag.answering.decision.FEATURES)
    judged: bool = True  # whether the judge ran (the decision's screen settles clear replies without it)
    # recorded for fitting (`Recording`): the generator's last hidden state at the judge's (and with
    # all_probes, the reply judge's) answer position, and the studied layers' outputs where the answer prompt ends
    states: dict[str, list[float]] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {**asdict(self), "usage": self.usage.to_dict()}


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
           lexically_passed: bool, note: str = "", layout: str = "") -> Verdict:
    """The verdict on a reply from its probes: the fitted decision's when there is one (at its thresholds for the
    reply's `layout`), else the checks' (a reply the lexical checks refused stays refused; one they passed must reach
    the threshold rule's score)."""
    judged = verdict(features["judge_yes"], features["sentence_support"], threshold or 0.0, usage)
    judged.features = _rounded(features)
    if decision is not None and all(features.get(f) is not None for f in decision.features):
        probability, needed = decision.probability(features), decision.threshold_for(lexically_passed, layout)
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


def reply_layers(generator: Generator, settings: Settings) -> tuple[int, ...]:
    """The layers whose outputs the reply's prompt gives as it is processed: the fitted decision's answer-state
    layer, and every studied layer when the probes are recorded for fitting."""
    return _layers_read(fitted_decision(generator, settings)[0])


def _layers_read(decision: Decision | None) -> tuple[int, ...]:
    probe = decision.state_probe if decision is not None else None
    wanted = set(STUDY_LAYERS) if _mode.on else set()
    return tuple(sorted(wanted | ({probe.layer} if probe is not None and probe.layer is not None else set())))


def studied_reply_layers() -> tuple[int, ...]:
    """The layers whose outputs are read over the reply as it is generated: the studied layers when the probes are
    recorded for fitting, else none (no decision reads them)."""
    return STUDY_LAYERS if _mode.on else ()


@dataclass(frozen=True)
class Recording:
    """What a collection of tune data for fitting records beyond an everyday verdict. Turned on only by the fitting
    tool (`python -m tools.fit_decision collect`), never by a setting: no everyday answer pays for it."""

    all_probes: bool = False  # run every generator probe, not only those the decision reads
    states: bool = False  # run the judge on every reply and record its hidden state and the studied layers' outputs

    @property
    def on(self) -> bool:
        return self.all_probes or self.states


_mode = Recording()


@contextlib.contextmanager
def recording(mode: Recording) -> Iterator[None]:
    """Record for fitting within the block (the process's answers, one at a time, as `rag eval` gives them)."""
    global _mode
    previous, _mode = _mode, mode
    try:
        yield
    finally:
        _mode = previous


def verify(raw: str, question: str, context: Context, generator: Generator, settings: Settings,
           lead: str = "", threshold: float | None = None, checked: CheckResult | None = None,
           lexically_passed: bool = True, reply_usage: Usage | None = None) -> Verdict:
    """Probe a reply (its token log-probabilities and the answer prompt's layer output, read while it was generated;
    lexical and retrieval probes; the judge after the kept document) and decide: by the fitted decision for this
    generator when there is a usable one (its screen first, which settles a clear reply before the judge runs),
    else by the checks and `threshold` (default: the generator's calibrated one). `lead` opens each probe's rule
    (the note that a question is a second part). Without the reply's Usage (a reply written elsewhere) the answer
    prompt's layer outputs are read in a pass over its question part, when the decision can decide it at all."""
    if threshold is None:
        threshold = threshold_for(generator.name, settings.verify_threshold) or 0.0
    reply = reply_usage or Usage()
    features = {**lexical_probes(raw, question, context.passages, checked),
                **retrieval_probes(context.passages),  # a whole document's chunks keep their retrieval scores
                "logprob_min": reply.logprob_min, "logprob_mean": reply.logprob_mean,
                "logprob_key_min": reply.logprob_key_min}
    decision, note = fitted_decision(generator, settings)
    probe = decision.state_probe if decision is not None else None
    answer_states, spent = ({}, 0) if decision is not None and _lacks_probes(decision, features) else (
        answer_layer_states(question, context, generator, settings, lead, reply, _layers_read(decision)))
    if probe is not None and probe.feature == ANSWER_FEATURE:
        features[ANSWER_FEATURE] = _state_logit(probe, ANSWER_FEATURE, answer_states.get(probe.layer))
    recorded = ({answer_kind(n): s for n, s in answer_states.items()} | _reply_states(reply)
                if _mode.on else {})
    screened = settled(features, decision.screen) if decision is not None and decision.screen else None
    if screened is not None:
        screened.usage.evaluated_tokens += spent
        screened.states = recorded
        return screened
    judge_prompt = build_prompt(question, context, settings, lead + JUDGE_RULE)
    wanted = set(GENERATOR_PROBES if _mode.all_probes else decision.features if decision is not None else ())
    wanted |= {"judge_yes", STATE_FEATURE} if _mode.states else set()
    states: dict[str, list[float] | None] = {}
    if STATE_FEATURE in wanted:  # the state the judge's P(Yes) is read from: one more token after the judge
        answerable, state, usage = judge_with_state(generator, *judge_prompt)
        states[STATE_KIND] = state
        features[STATE_FEATURE] = _state_logit(probe, STATE_FEATURE, state)
    else:
        answerable, usage = judge(generator, *judge_prompt)
    features |= generator_probes(raw, question, context, generator, settings, lead, wanted, usage,
                                 features["logprob_mean"], states)
    usage.evaluated_tokens += spent
    verdict = decide({"judge_yes": answerable, **features}, usage, decision, threshold, lexically_passed, note,
                     layout_of(context))
    if _mode.on:  # recorded for fitting (tools.fit_decision); never part of an everyday verdict
        verdict.states = {k: v for k, v in states.items() if v is not None} | recorded
    return verdict


def _reply_states(reply: Usage) -> dict[str, list[float]]:
    """The layer outputs read over the reply (`studied_reply_layers`), named by their kind."""
    return {reply_kind(n, mean=how == "mean"): s for how, rows in reply.reply_states.items() for n, s in rows.items()}


def layout_of(context: Context) -> str:
    """The prompt layout a reply was read in (rag.answering.decision.LAYOUTS), as `rag eval` records it."""
    return "document" if context.whole_document else "passages"


def _state_logit(probe: StateProbe | None, feature: str, state: list[float] | None) -> float | None:
    """The logit of the decision's state probe for `state` when that probe gives `feature` (else None)."""
    return probe.logit(state) if probe is not None and probe.feature == feature and state is not None else None


def _lacks_probes(decision: Decision, features: dict[str, float | None]) -> bool:
    """Whether a probe the decision reads before its generator probes is missing (a reply written elsewhere carries no
    log-probabilities): the checks decide then, so no pass is spent on the answer prompt's layers (a pass that would
    also shift the judge's numbers, its prompt being read after a different context)."""
    return any(features.get(f) is None for f in decision.features if f not in GENERATOR_PROBES + STATE_FEATURES)


def answer_layer_states(question: str, context: Context, generator: Generator, settings: Settings, lead: str,
                        reply_usage: Usage, layers: tuple[int, ...]) -> tuple[dict[int, list[float]], int]:
    """The outputs of `layers` (those `reply_layers` names) where the answer prompt ends, and the tokens evaluated for
    them: those read while the reply was generated cost none; for a reply without them (written elsewhere) a pass
    over the prompt's question part reads them; ({}, 0) where the engine cannot tell."""
    if all(n in reply_usage.layer_states for n in layers):
        return dict(reply_usage.layer_states), 0
    rule = answer_rule(settings, lead)
    try:
        _, spent = generator.hidden_state(*build_prompt(question, context, settings, rule), layers=layers)
    except NotImplementedError:
        return {}, 0
    return spent.layer_states, spent.evaluated_tokens


def generator_probes(raw: str, question: str, context: Context, generator: Generator, settings: Settings, lead: str,
                     wanted: set[str], usage: Usage, reply_mean: float | None, states: dict[str, list[float] | None],
                     ) -> dict[str, float | None]:
    """The probes beside the judge that cost the generator a pass over their own tokens, those in `wanted` only
    (None where the engine cannot score a given text); their cost is added to `usage` and the reply judge's hidden
    state to `states`. The reply judge, the refusal sentence and the quote (up to QUOTE_TOKENS decoded) ride on the
    kept passages' state; the contrastive probe reads the reply after the question alone, so it runs last and the
    next question restores the passages' state from memory. Measured and not kept in the fitted decision
    (docs/studies/)."""
    rule = answer_rule(settings, lead)
    probes: dict[str, float | None] = {}
    try:
        if "reply_judge_yes" in wanted:
            shown = raw.replace("{", "{{").replace("}", "}}")  # build_prompt formats the rule
            probes["reply_judge_yes"], states["reply_judge"], spent = judge_with_state(
                generator, *build_prompt(question, context, settings, lead + REPLY_JUDGE_RULE.format(reply=shown)))
            usage.evaluated_tokens += spent.evaluated_tokens
        if wanted & {"refusal_logprob", "refusal_margin"}:
            messages, prefix = build_prompt(question, context, settings, rule)
            refusal, spent = generator.continuation_logprobs(messages, settings.refusal_text, prefix)
            usage.evaluated_tokens += spent.evaluated_tokens
            probes["refusal_logprob"] = sum(refusal)
            probes["refusal_margin"] = None if reply_mean is None else sum(refusal) / len(refusal) - reply_mean
        if wanted & set(QUOTE_FEATURES):
            messages, prefix = build_prompt(question, context, settings, lead + QUOTE_RULE)
            quote, spent = complete(generator, messages, QUOTE_TOKENS, ["\n"], prefix)
            usage.evaluated_tokens += spent.evaluated_tokens + spent.completion_tokens
            probes |= quote_probes(quote, question, raw, context.passages)
        if "contrastive" in wanted and reply_mean is not None:
            alone, _ = build_prompt(question, Context([]), settings, rule)
            without, spent = generator.continuation_logprobs(alone, raw)
            usage.evaluated_tokens += spent.evaluated_tokens
            probes["contrastive"] = reply_mean - sum(without) / len(without)
    except NotImplementedError:
        pass  # the decision then lacks a probe and the checks decide, saying so
    return probes


_decisions: Loaded[tuple[Decision | None, str]] = Loaded(limit=8)  # as the lru_cache(maxsize=8) it replaces


def fitted_decision(generator: Generator, settings: Settings) -> tuple[Decision | None, str]:
    """The fitted decision for the generator (`decision_file`, default the packaged one), or None and why not."""
    if settings.decision_file == "none":
        return None, "decision_file is none: the checks decide"
    path = Path(settings.decision_file) if settings.decision_file else decision_file(generator.name)
    changed = path.stat().st_mtime_ns if path.is_file() else 0  # a file written anew is read anew
    name, sha256, engine = generator.name, getattr(generator, "model_sha256", ""), generator.engine
    return _decisions.get((path, changed, name, sha256, engine, settings.embedder),
                          lambda: load_decision(path, name, sha256, engine, settings.embedder))

