"""Fitting the answer-or-refuse decision (rag.answering.decision) on labelled replies, with grouped cross-validation.

    python -m tools.fit_decision collect --split tune --out eval-results/collect/project   # `rag eval` args follow
    python -m tools.fit_decision --project eval-results/collect/project --rgb eval-results/collect/rgb \
        --rgb eval-results/collect/rgb-reject

reads the `results.jsonl` of `rag eval` runs (their verdicts carry every probe), keeps the project questions of the
tune split and RGB queries at positions 50 and above only (positions 0-49 are reserved for an outside check and
are refused here), labels each reply (1: an answerable question's reply holding its gold answer; 0: any reply to
an unanswerable one; wrong replies to answerable questions are left out), and fits a logistic regression over the
standardised probes. Every figure it reports is out-of-fold, from folds grouped by question (an RGB query's normal
and rejection runs fall in one fold); the thresholds are chosen on those out-of-fold probabilities so that at most
`--max-false-refusals` of the right replies are refused, over all tune questions and again over each prompt layout's
own (the seed article's whole document, RGB's retrieved passages), so that the cap holds for each. A second regression
without the judge, the screen, gets the bounds that settle the most tune replies while deciding each one it settles as
the full decision does (both out-of-fold), so that clear replies skip the judge's pass. The fitted model is written
as JSON (rag.answering.decision). `--states` and `--boosting` only report a study (linear probes on the recorded
hidden states;
gradient boosting in the regression's place) and write nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from rag.answering.decision import (
    ANSWER_FEATURE,
    ANSWER_LAYER,
    FEATURES,
    GENERATOR_PROBES,
    LAYOUTS,
    STATE_FEATURE,
    STATE_FEATURES,
    STATE_KIND,
    Decision,
    Screen,
    StateProbe,
    answer_kind,
    banded,
    decision_file,
)
from rag.answering.verification import Recording, recording
from rag.errors import BadInput
from rag.evaluation.metrics import contains_answer, rgb_correct
from rag.evaluation.questions import DEFAULT_QUESTIONS, load_questions
from rag.files import write_text_atomically
from rag.models.names import resolve_generator
from rag.settings import load_settings
from rag.text import strip_markers

# The probes every collection records (`collect`, or `collect --all-probes` which adds the rest)
ALWAYS_RECORDED = tuple(f for f in FEATURES
                        if f not in STATE_FEATURES and (f == "judge_yes" or f not in GENERATOR_PROBES))
RESERVED_RGB = range(0, 50)  # RGB positions kept for an outside check: never fitted on
FOLDS = 5
C = 0.1  # the regularisation, chosen by the same grouped cross-validation on the tune data (docs/results.md)
# The probes the decision combines by default, chosen out-of-fold on the tune data (docs/results.md): the reply
# judge, the refusal sentence and the contrastive probe were measured and left out (no gain in refusals at the cap),
# as were the retrieval probes (they tie the decision to one embedder's scale); the answer prompt's layer output
# (answer_state) took the judge's hidden state's place (it separates better and is read while the prompt is processed).
DEFAULT_FEATURES = ("judge_yes", "sentence_support", "supported_share", "names_found", "adds_information", "focus",
                    "question_coverage", "joint_support", "logprob_min", "logprob_mean", "logprob_key_min",
                    ANSWER_FEATURE)
STATE_C = 0.1  # the state probe's: the best refusal accuracy at the false-refusal cap, out-of-fold (docs/results.md)
TRADE_OFF = (0.05, 0.10, 0.15, 0.20)  # false-refusal caps the report shows the thresholds' outcome at
# A layout gets a threshold pair of its own with at least this many answerable tune questions (at 40 the 0.05 cap is
# two refusals); one with fewer uses the pair chosen over all tune questions.
MIN_LAYOUT_ANSWERABLE = 40
Thresholds = dict[str, tuple[float, float]]  # layout ("" for every other) -> (passed, override)


class FitError(BadInput, ValueError):
    """The labelled replies cannot be used for fitting (missing files, reserved queries, too few of a label)."""


@dataclass
class Reply:
    """One evaluated question of the tune data, as the decision will meet it."""

    group: str  # one question (an RGB query in every condition)
    unanswerable: bool
    right: bool  # the reply holds the gold answer
    checks_passed: bool  # the lexical checks let the reply through (the decision may still refuse it)
    refused: bool  # what the evaluated run did (kept for a reply no probe ran on)
    features: dict[str, float] | None  # None: refused before any probe ran, or not verified (a partial answer)
    states: dict[str, list[float]] = field(default_factory=dict)  # hidden states recorded with `all_probes`
    layout: str = ""  # what the generator read (rag.answering.decision.LAYOUTS, or "none"), as the run recorded it

    @property
    def label(self) -> int | None:
        """1: a right reply to an answerable question; 0: any reply to an unanswerable one; None: neither."""
        if self.features is None:
            return None
        return 0 if self.unanswerable else (1 if self.right else None)


def project_rows(folder: Path, test_ids: set[str]) -> list[Reply]:
    """The tune-split replies of a project evaluation; a test-split question is never fitted on."""
    return [_reply(f"project:{r['id']}", r, contains_answer(strip_markers(r["raw_text"]), r["answers"]))
            for r in _results(folder) if r["id"] not in test_ids]


def rgb_rows(folder: Path) -> list[Reply]:
    """The replies of an RGB evaluation (normal or negative rejection); any reserved position is an error."""
    rows = []
    for result in _results(folder):
        if int(result["id"]) in RESERVED_RGB:
            raise FitError(f"{folder}: RGB query {result['id']} is at a reserved position (0-49): run the "
                           "evaluation with --queries 50-99 to fit on it")
        rows.append(_reply(f"rgb:{result['id']}", result, rgb_correct(strip_markers(result["raw_text"]),
                                                                      result["answers"])))
    return rows


def _results(folder: Path) -> list[dict[str, Any]]:
    path = Path(folder) / "results.jsonl"
    if not path.is_file():
        raise FitError(f"{path}: not found (run `rag eval --out {folder}` first)")
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _reply(group: str, result: dict[str, Any], right: bool) -> Reply:
    """A result as the decision meets it: probed when its verdict carries every probe a run always records (those
    only `all_probes` runs may be there too); a state probe's logit is made from the recorded state when fitting."""
    features = (result.get("verdict") or {}).get("features") or {}
    recorded = {f: float(v) for f, v in features.items() if f in FEATURES and f not in STATE_FEATURES and v is not None}
    usable = bool(features) and all(f in recorded for f in ALWAYS_RECORDED)
    return Reply(group, bool(result["unanswerable"]), right, result.get("refusal_reason") in ("", "verifier"),
                 bool(result["refused"]), recorded if usable else None,
                 (result.get("verdict") or {}).get("states") or {}, (result.get("usage") or {}).get("context", ""))


def matrix(rows: list[Reply], features: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    missing = sorted({f for r in rows for f in features if f not in r.features})
    if missing:
        raise FitError(f"the runs do not record {', '.join(missing)} (collect them with "
                       "`python -m tools.fit_decision collect --all-probes ...`)")
    x = np.array([[r.features[f] for f in features] for r in rows], dtype=float)
    return x, np.array([r.label for r in rows]), np.array([r.group for r in rows])


def out_of_fold(x: np.ndarray, y: np.ndarray, groups: np.ndarray, c: float,
                make: Callable[[], Any] | None = None) -> np.ndarray:
    """Each reply's probability from a model (the regression, or what `make` makes) fitted on the folds that do not
    hold its question."""
    from sklearn.model_selection import StratifiedGroupKFold

    probabilities = np.zeros(len(y))
    for train, held in StratifiedGroupKFold(FOLDS, shuffle=True, random_state=0).split(x, y, groups):
        model = make() if make else _model(c)
        probabilities[held] = model.fit(x[train], y[train]).predict_proba(x[held])[:, 1]
    return probabilities


def _model(c: float):  # noqa: ANN202 - a scikit-learn Pipeline
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=1000))


def outcomes(replies: list[Reply], probabilities: list[float | None], thresholds: Thresholds) -> dict[str, float]:
    """What the decision does to every reply at its layout's thresholds (`stands`); a reply without probes keeps what
    the run did. Rates over all the answerable and unanswerable questions, as `rag eval` counts them."""
    answerable = [(r, p) for r, p in zip(replies, probabilities, strict=True) if not r.unanswerable]
    unanswerable = [(r, p) for r, p in zip(replies, probabilities, strict=True) if r.unanswerable]

    def refused(reply: Reply, probability: float | None) -> bool:
        return reply.refused if probability is None else not stands(reply, probability, thresholds)

    return {"answer_accuracy": round(sum(r.right and not refused(r, p) for r, p in answerable) / len(answerable), 4),
            "false_refusals": round(sum(refused(r, p) for r, p in answerable) / len(answerable), 4),
            "refusal_accuracy": round(sum(refused(r, p) for r, p in unanswerable) / len(unanswerable), 4)}


def stands(reply: Reply, probability: float, thresholds: Thresholds) -> bool:
    """Whether the decision lets a reply through: at its layout's pair (else the pair under ""), the first when the
    checks passed it, the second when they refused it."""
    passed, override = thresholds.get(reply.layout, thresholds[""])
    return probability >= (passed if reply.checks_passed else override)


def _probabilities(replies: list[Reply], held_out: Iterator[float], model: Any, features: list[str],
                   ) -> list[float | None]:
    """Each reply's probability: out-of-fold for the labelled ones (in their order), from the model fitted on all of
    them for a wrong reply to an answerable question (it has no label), None for a reply without probes."""
    probabilities: list[float | None] = []
    for reply in replies:
        if reply.label is not None:
            probabilities.append(float(next(held_out)))
        elif reply.features is None:
            probabilities.append(None)
        else:
            probabilities.append(float(model.predict_proba(np.array([[reply.features[f] for f in features]]))[0, 1]))
    return probabilities


def choose_thresholds(replies: list[Reply], probabilities: list[float | None], max_false_refusals: float,
                      ) -> tuple[float, float, dict[str, float]]:
    """The two thresholds that refuse the most unanswerable questions with at most `max_false_refusals` of the
    answerable ones refused (then the most right answers), over a grid of 0.02 steps."""
    grid = np.round(np.arange(0.0, 1.0001, 0.02), 2)
    best = None
    for passed in grid:
        for override in grid[grid >= passed]:
            rates = outcomes(replies, probabilities, {"": (float(passed), float(override))})
            if rates["false_refusals"] <= max_false_refusals:
                key = (rates["refusal_accuracy"], rates["answer_accuracy"], -override, -passed)
                if best is None or key > best[0]:
                    best = (key, float(passed), float(override), rates)
    if best is None:
        raise FitError(f"no thresholds keep false refusals at or under {max_false_refusals}")
    return best[1], best[2], best[3]


def choose_layout_thresholds(replies: list[Reply], probabilities: list[float | None], max_false_refusals: float,
                             by_layout: bool = True) -> tuple[Thresholds, dict[str, float]]:
    """The pair chosen over all replies (under "") and, with `by_layout`, one chosen over each layout's own replies
    that has MIN_LAYOUT_ANSWERABLE answerable questions, each at the cap; and what they do to all the replies."""
    thresholds: Thresholds = {"": choose_thresholds(replies, probabilities, max_false_refusals)[:2]}
    for layout in LAYOUTS if by_layout else ():
        rows, values = _of_layout(layout, replies, probabilities)
        if sum(not r.unanswerable for r in rows) >= MIN_LAYOUT_ANSWERABLE:
            thresholds[layout] = choose_thresholds(rows, values, max_false_refusals)[:2]
    return thresholds, outcomes(replies, probabilities, thresholds)


def _of_layout(layout: str, replies: list[Reply], probabilities: list[float | None],
               ) -> tuple[list[Reply], list[float | None]]:
    """The replies read in `layout` and their probabilities."""
    own = [(r, p) for r, p in zip(replies, probabilities, strict=True) if r.layout == layout]
    return [r for r, _ in own], [p for _, p in own]


def layout_report(replies: list[Reply], probabilities: list[float | None], thresholds: Thresholds,
                  ) -> dict[str, Any]:
    """Each layout's tune outcome at its own pair and at the pair chosen over all replies (out-of-fold)."""
    report = {}
    for layout in LAYOUTS:
        rows, values = _of_layout(layout, replies, probabilities)
        if rows:
            report[layout] = {"questions": len(rows), "thresholds": list(thresholds.get(layout, thresholds[""])),
                              "out_of_fold": outcomes(rows, values, thresholds),
                              "at_the_pooled_pair": outcomes(rows, values, {"": thresholds[""]})}
    return report


def fit(replies: list[Reply], max_false_refusals: float, features: list[str] | None = None, c: float = C,
        state_c: float = STATE_C, layer: int = ANSWER_LAYER, by_layout: bool = True,
        ) -> tuple[Decision, dict[str, Any]]:
    """The decision over `features` (default: DEFAULT_FEATURES) fitted on every labelled reply,
    and its out-of-fold report (each probe alone, the chosen ones together, and what the chosen thresholds do to
    every tune question and to each layout's). With judge_state or answer_state (on `layer`) among them, the state
    probe is fitted first and stacked (`_stacked`). `by_layout=False` keeps one threshold pair for every layout."""
    from sklearn.metrics import roc_auc_score

    _check_labels(replies)
    features, probe, states, replies = _with_state(list(features or DEFAULT_FEATURES), replies, state_c, layer)
    rows = [r for r in replies if r.label is not None]
    candidates = [f for f in FEATURES if (f in ALWAYS_RECORDED or all(f in r.features for r in rows)) and
                  (f not in STATE_FEATURES or (probe is not None and f == probe.feature))]
    x, y, groups = matrix(rows, candidates)
    alone = {f: round(float(roc_auc_score(y, out_of_fold(x[:, [i]], y, groups, c))), 4)
             for i, f in enumerate(candidates)}
    x = x[:, [candidates.index(f) for f in features]]
    combined = _stacked(x[:, :-1], states, y, groups, c, state_c) if probe else out_of_fold(x, y, groups, c)
    model = _model(c).fit(x, y)
    probabilities = _probabilities(replies, iter(combined), model, features)
    thresholds, rates = choose_layout_thresholds(replies, probabilities, max_false_refusals, by_layout)
    screen, screened = fit_screen(replies, rows, probabilities, features, thresholds, c)
    scaler, regression = model[0], model[1]
    report = {"rows": len(y), "right": int(y.sum()), "unanswerable": int((y == 0).sum()), "folds": FOLDS,
              "grouped_by": "question", "auc_alone": alone, "auc_combined": round(float(roc_auc_score(y, combined)), 4),
              "max_false_refusals": max_false_refusals, "questions": len(replies),
              "out_of_fold_at_thresholds": rates,
              "layouts": layout_report(replies, probabilities, thresholds),
              "trade_off": {str(cap): _trade(*choose_layout_thresholds(replies, probabilities, cap, by_layout))
                            for cap in TRADE_OFF},
              "combined": features,
              "coefficients": dict(zip(features, map(float, np.round(regression.coef_[0], 4)), strict=True))}
    passed, override = thresholds[""]
    decision = Decision(list(features), [float(v) for v in scaler.mean_], [float(v) for v in scaler.scale_],
                        [float(v) for v in regression.coef_[0]], float(regression.intercept_[0]), passed,
                        generator="", generator_sha256="", engine="", embedder="", override_threshold=override,
                        report={**report, "screen": screened}, screen=screen, state_probe=probe,
                        layout_thresholds={k: list(v) for k, v in thresholds.items() if k})
    return decision, decision.report


def _trade(thresholds: Thresholds, rates: dict[str, float]) -> dict[str, Any]:
    return {"thresholds": {k or "pooled": list(v) for k, v in thresholds.items()}, **rates}


def fit_state_probe(replies: list[Reply], state_c: float, kind: str = STATE_KIND,
                    ) -> tuple[StateProbe, np.ndarray, list[Reply]]:
    """The state probe on the recorded state `kind`, fitted on every labelled reply. Returns the probe, the labelled
    replies' states and the replies with the probe's feature added: each labelled reply's out-of-fold logit (what the
    decision's regression is fitted on, as stacking does) and every other probed reply's logit from the fitted probe."""
    missing = [r.group for r in replies if r.features is not None and not r.states.get(kind)]
    if missing:
        raise FitError(f"{len(missing)} probed replies carry no {kind} state (collect the runs with "
                       "`python -m tools.fit_decision collect [--all-probes] ...`)")
    rows = [r for r in replies if r.label is not None]
    states = np.array([r.states[kind] for r in rows], dtype=float)
    y, groups = np.array([r.label for r in rows]), np.array([r.group for r in rows])
    held_out = iter(_logit(out_of_fold(states, y, groups, state_c)))
    model = _model(state_c).fit(states, y)
    probe = StateProbe(kind, [float(v) for v in model[0].mean_], [float(v) for v in model[0].scale_],
                       [float(v) for v in model[1].coef_[0]], float(model[1].intercept_[0]))

    def with_state(reply: Reply) -> Reply:
        if reply.features is None:
            return reply
        value = next(held_out) if reply.label is not None else probe.logit(reply.states[kind])
        return replace(reply, features={**reply.features, probe.feature: float(value)})

    return probe, states, [with_state(r) for r in replies]


def _with_state(features: list[str], replies: list[Reply], state_c: float, layer: int = ANSWER_LAYER,
                ) -> tuple[list[str], StateProbe | None, np.ndarray | None, list[Reply]]:
    """With judge_state or answer_state (on `layer`) among `features`: its column moved last (it is stacked), the
    state probe fitted and the replies carrying its logit (fit_state_probe); otherwise everything as it was, without
    a probe or states."""
    stacked = [f for f in STATE_FEATURES if f in features]
    if len(stacked) > 1:
        raise FitError(f"--features: {' and '.join(stacked)} are both state probes; a decision stacks one")
    if not stacked:
        return features, None, None, replies
    kind = STATE_KIND if stacked[0] == STATE_FEATURE else answer_kind(layer)
    probe, states, replies = fit_state_probe(replies, state_c, kind)
    return [f for f in features if f != stacked[0]] + stacked, probe, states, replies


def _check_labels(replies: list[Reply]) -> None:
    labels = [r.label for r in replies if r.label is not None]
    right, unanswerable = labels.count(1), labels.count(0)
    if min(right, unanswerable) < 2 * FOLDS:
        probed = sum(r.features is not None for r in replies)
        raise FitError(f"too few replies of one label to fit ({right} right, {unanswerable} unanswerable; "
                       f"{len(replies) - probed} of {len(replies)} replies carry no usable probes: a run must record "
                       f"every probe in {', '.join(ALWAYS_RECORDED)})")


def fit_screen(replies: list[Reply], rows: list[Reply], probabilities: list[float | None], features: list[str],
               thresholds: Thresholds, c: float) -> tuple[Screen | None, dict[str, Any]]:
    """The decision without the judge (rag.answering.decision.Screen) and the bounds that let it settle the most tune
    replies without the judge while deciding every one it settles as the full decision does (both out-of-fold);
    None when the judge is not among the features."""
    from sklearn.metrics import roc_auc_score

    cheap = [f for f in features if f not in GENERATOR_PROBES]
    if cheap == features or not cheap:
        return None, {}
    x, y, groups = matrix(rows, cheap)
    model = _model(c).fit(x, y)
    held_out = out_of_fold(x, y, groups, c)
    screened = _probabilities(replies, iter(held_out), model, cheap)
    full = [None if p is None else stands(r, p, thresholds) for r, p in zip(replies, probabilities, strict=True)]
    grid = [float(v) for v in np.round(np.arange(0.0, 1.0001, 0.02), 2)]
    best = None
    for below in grid:
        for above in (v for v in grid if v >= below):
            settled = [None if s is None else banded(s, below, above) for s in screened]
            if all(s is None or s == f for s, f in zip(settled, full, strict=True)):  # agrees wherever it settles
                share = sum(s is not None for s in settled) / sum(s is not None for s in screened)
                if best is None or share > best[0]:
                    effective = [p if s is None else float(s) for p, s in zip(probabilities, settled, strict=True)]
                    best = (share, below, above, outcomes(replies, effective, thresholds))
    if best is None:  # every band disagrees somewhere: the judge runs on every reply
        return None, {"settled_without_judge": 0.0}
    share, below, above, outcome = best
    scaler, regression = model[0], model[1]
    screen = Screen(cheap, [float(v) for v in scaler.mean_], [float(v) for v in scaler.scale_],
                    [float(v) for v in regression.coef_[0]], float(regression.intercept_[0]), below, above)
    return screen, {"features": cheap, "auc": round(float(roc_auc_score(y, held_out)), 4), "refuse_below": below,
                    "answer_from": above, "settled_without_judge": round(share, 4), "out_of_fold": outcome}


STATE_CS = (1e-3, 1e-2, 1e-1, 1.0)  # the regularisations the state study tries


def state_study(replies: list[Reply], features: list[str], c: float, state_cs: tuple[float, ...] = STATE_CS,
                ) -> dict[str, Any]:
    """Out-of-fold AUC of a linear probe on each recorded hidden state, alone (per regularisation) and stacked with
    the decision's probes: in each fold the state probe is fitted on the training questions, its scores for them
    come from an inner grouped cross-validation, and the decision's regression is fitted on the probes plus that
    score; nothing is scored by a model that saw its question."""
    from sklearn.metrics import roc_auc_score

    rows = [r for r in replies if r.label is not None]
    kinds = sorted(set.intersection(*(set(r.states) for r in rows))) if rows else []
    if not kinds:
        raise FitError("no hidden states in these runs: collect them with `python -m tools.fit_decision collect`")
    x, y, groups = matrix(rows, features)
    probes_alone = round(float(roc_auc_score(y, out_of_fold(x, y, groups, c))), 4)
    report: dict[str, Any] = {"rows": len(y), "probes_alone": probes_alone}
    decisions = answer_kind(ANSWER_LAYER)  # the packaged decision's state: what another state must add to
    for kind in kinds:
        states = np.array([r.states[kind] for r in rows], dtype=float)
        alone, best = _alone_by_c(states, y, groups, state_cs)
        report[kind] = {"alone": alone, "stacked": round(float(roc_auc_score(y, _stacked(x, states, y, groups, c,
                                                                                      best))), 4)}
        if kind != decisions and decisions in kinds:  # two probes stacked, and one probe on the two states joined
            both = [np.array([r.states[decisions] for r in rows], dtype=float), states]
            report[kind][f"stacked_with_{decisions}"] = round(float(roc_auc_score(
                y, _stacked(x, both, y, groups, c, (STATE_C, best)))), 4)
            joined = np.hstack(both)
            joined_alone, joined_c = _alone_by_c(joined, y, groups, state_cs)
            report[kind][f"joined_with_{decisions}"] = {"alone": joined_alone, "stacked": round(float(roc_auc_score(
                y, _stacked(x, joined, y, groups, c, joined_c))), 4)}
    return report


def _alone_by_c(states: np.ndarray, y: np.ndarray, groups: np.ndarray, state_cs: tuple[float, ...],
                ) -> tuple[dict[str, float], float]:
    """Out-of-fold AUC of a probe on `states` alone for each regularisation, and the regularisation that did best."""
    from sklearn.metrics import roc_auc_score

    alone = {str(sc): round(float(roc_auc_score(y, out_of_fold(states, y, groups, sc))), 4) for sc in state_cs}
    return alone, max(state_cs, key=lambda sc: alone[str(sc)])


def _stacked(x: np.ndarray, states: np.ndarray | list[np.ndarray], y: np.ndarray, groups: np.ndarray, c: float,
             state_c: float | tuple[float, ...], final: Callable[[], Any] | None = None) -> np.ndarray:
    """Out-of-fold probabilities of the regression over `x` and the state probe's logit (or each of several states'
    probes, `state_c` then one regularisation each), nested (state_study); `final` makes another model in the
    regression's place (boosting_study)."""
    from sklearn.model_selection import StratifiedGroupKFold

    several = list(states) if isinstance(states, list) else [states]
    cs = state_c if isinstance(state_c, tuple) else (state_c,) * len(several)
    probabilities = np.zeros(len(y))
    for train, held in StratifiedGroupKFold(FOLDS, shuffle=True, random_state=0).split(x, y, groups):
        inner = [_logit(out_of_fold(s[train], y[train], groups[train], sc)) for s, sc in zip(several, cs, strict=True)]
        probes = [_model(sc).fit(s[train], y[train]) for s, sc in zip(several, cs, strict=True)]
        model = (final() if final else _model(c)).fit(np.column_stack([x[train], *inner]), y[train])
        held_scores = [_logit(p.predict_proba(s[held])[:, 1]) for p, s in zip(probes, several, strict=True)]
        probabilities[held] = model.predict_proba(np.column_stack([x[held], *held_scores]))[:, 1]
    return probabilities


# Gradient boosting settings the model study tries against the regression: (depth, learning rate, trees, leaf size)
BOOSTING = ((2, 0.05, 100, 20), (3, 0.05, 100, 20), (2, 0.1, 200, 20), (None, 0.05, 100, 20), (2, 0.03, 300, 10))


def boosting_study(replies: list[Reply], features: list[str], c: float, state_c: float = STATE_C,
                   max_false_refusals: float = 0.05, settings: tuple[tuple, ...] = BOOSTING) -> dict[str, Any]:
    """The decision's regression against gradient boosting (scikit-learn's HistGradientBoostingClassifier) on the
    same probes and the same nested folds: each model's out-of-fold AUC and what thresholds chosen on its out-of-fold
    probabilities do to the tune questions at the false-refusal cap."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.metrics import roc_auc_score

    _check_labels(replies)
    features, _, states, replies = _with_state(features, replies, state_c)
    rows = [r for r in replies if r.label is not None]
    x, y, groups = matrix(rows, features)

    def outcome(make: Callable[[], Any]) -> dict[str, Any]:
        held_out = (_stacked(x[:, :-1], states, y, groups, c, state_c, make) if states is not None
                    else out_of_fold(x, y, groups, c, make))
        probabilities = _probabilities(replies, iter(held_out), make().fit(x, y), features)
        passed, override, rates = choose_thresholds(replies, probabilities, max_false_refusals)
        return {"auc": round(float(roc_auc_score(y, held_out)), 4), "thresholds": [passed, override], **rates}

    report: dict[str, Any] = {"rows": len(y), "features": features, "max_false_refusals": max_false_refusals,
                              "logistic regression": outcome(lambda: _model(c))}
    for depth, rate, trees, leaf in settings:
        report[f"boosting: depth {depth}, rate {rate}, {trees} trees, leaves of {leaf}+"] = outcome(
            lambda d=depth, r=rate, t=trees, m=leaf: HistGradientBoostingClassifier(
                max_depth=d, learning_rate=r, max_iter=t, min_samples_leaf=m, random_state=0))
    return report


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def collect(argv: list[str]) -> int:
    """`rag eval` with the verdicts recording what fitting reads (every reply judged, its hidden state and the studied
    layers' outputs; with --all-probes every generator probe too). The rest of the arguments are `rag eval`'s."""
    from rag.cli import main as rag_main

    parser = argparse.ArgumentParser(prog="python -m tools.fit_decision collect", description=collect.__doc__,
                                     allow_abbrev=False)
    parser.add_argument("--all-probes", action="store_true", help="run every generator probe, not only those the "
                        "decision reads (the measured-only probes cost a pass each)")
    args, eval_args = parser.parse_known_args(argv)
    with recording(Recording(all_probes=args.all_probes, states=not args.all_probes)):
        return rag_main(["eval", *eval_args])


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["collect"]:
        return collect(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m tools.fit_decision", description=__doc__.split("\n")[0])
    parser.add_argument("--project", type=Path, action="append", default=[], help="a `rag eval` output folder")
    parser.add_argument("--rgb", type=Path, action="append", default=[],
                        help="a `rag eval --benchmark rgb --queries 50-99 [--reject ...]` output folder")
    parser.add_argument("--questions", type=Path, help="the project's question set (for its test split)")
    parser.add_argument("--max-false-refusals", type=float, default=0.05)
    parser.add_argument("--features", help=f"comma-separated probes to combine (default: "
                        f"{', '.join(DEFAULT_FEATURES)}); of: {', '.join(FEATURES)}")
    parser.add_argument("--c", type=float, default=C, help=f"the regression's inverse regularisation (default {C})")
    parser.add_argument("--out", type=Path, help="where to write the decision (default: the packaged file)")
    parser.add_argument("--states", action="store_true", help="only report how well linear probes on the recorded "
                        "hidden states separate (alone and stacked with the probes); write nothing")
    parser.add_argument("--one-pair", action="store_true", help="one threshold pair for every prompt layout (the "
                        "default also chooses one per layout with enough tune questions)")
    parser.add_argument("--boosting", action="store_true", help="only compare the regression with gradient boosting "
                        "on the same probes and folds (out-of-fold AUC and outcome at the cap); write nothing")
    args = parser.parse_args(argv)
    settings = load_settings()
    try:
        questions = load_questions(args.questions or settings.corpus_dir / DEFAULT_QUESTIONS)
        test_ids = {q.id for q in questions if q.split == "test"}
        rows = [r for f in args.project for r in project_rows(f, test_ids)] + [r for f in args.rgb for r in rgb_rows(f)]
        chosen = args.features.split(",") if args.features else None
        unknown = [f for f in chosen or [] if f not in FEATURES]
        if unknown:
            raise FitError(f"--features: unknown probe(s) {', '.join(unknown)}")
        if args.states:
            probes = [f for f in chosen or DEFAULT_FEATURES if f not in STATE_FEATURES]
            print(json.dumps(state_study(rows, probes, args.c), indent=2))
            return 0
        if args.boosting:
            print(json.dumps(boosting_study(rows, chosen or list(DEFAULT_FEATURES), args.c,
                                            max_false_refusals=args.max_false_refusals), indent=2))
            return 0
        decision, report = fit(rows, args.max_false_refusals, chosen, args.c, by_layout=not args.one_pair)
        report["sources"] = {"project": [str(f) for f in args.project], "rgb": [str(f) for f in args.rgb],
                             "project_splits": ["tune"] if args.project else [],
                             "rgb_positions": sorted({int(r.group.split(":")[1]) for r in rows
                                                      if r.group.startswith("rgb:")})}
    except FitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    source = resolve_generator(settings.generator)
    decision.generator, decision.engine, decision.embedder = source.name, "llama-cpp", settings.embedder
    decision.generator_sha256 = source.spec.sha256 if source.spec else ""
    out = args.out or decision_file(source.name)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomically(out, json.dumps(decision.to_dict(), indent=2) + "\n")
    print(render(report, decision))
    print(f"\nwritten to {out}")
    return 0


def render(report: dict[str, Any], decision: Decision) -> str:
    lines = [f"{report['rows']} replies ({report['right']} right, {report['unanswerable']} to unanswerable questions), "
             f"{report['folds']} folds grouped by {report['grouped_by']}", "", "| probe | AUC alone (out-of-fold) |",
             "| --- | --- |"]
    lines += [f"| {f} | {auc:.3f} |" for f, auc in report["auc_alone"].items()]
    lines += [f"| **combined: {', '.join(report['combined'])}** | **{report['auc_combined']:.3f}** |", "",
              f"thresholds over all tune questions {decision.threshold:.2f} (replies the checks passed) and "
              f"{decision.override_threshold:.2f} (replies they refused); out-of-fold over the {report['questions']} "
              f"tune questions at the decision's thresholds: {_rates(report['out_of_fold_at_thresholds'])}", ""]
    lines += [f"{layout} ({at['questions']} questions): thresholds {at['thresholds'][0]:.2f} / "
              f"{at['thresholds'][1]:.2f}: {_rates(at['out_of_fold'])}; at the pair over all: "
              f"{_rates(at['at_the_pooled_pair'])}" for layout, at in report.get("layouts", {}).items()]
    lines += [*_screen_line(report.get("screen") or {}), "",
              "| false refusals at most | thresholds | answer accuracy | refusal accuracy | false refusals |",
              "| --- | --- | --- | --- | --- |"]
    lines += [f"| {cap} | {', '.join(f'{k} {t} / {o}' for k, (t, o) in r['thresholds'].items())} | "
              f"{r['answer_accuracy']:.3f} | {r['refusal_accuracy']:.3f} | {r['false_refusals']:.3f} |"
              for cap, r in report["trade_off"].items()]
    return "\n".join(lines)


def _rates(rates: dict[str, float]) -> str:
    return (f"answer accuracy {rates['answer_accuracy']:.3f}, refusal accuracy {rates['refusal_accuracy']:.3f}, "
            f"false refusals {rates['false_refusals']:.3f}")


def _screen_line(screen: dict[str, Any]) -> list[str]:
    if not screen.get("features"):
        return ["", "no screen: the judge runs on every reply"]
    return ["", f"screen without the judge (AUC {screen['auc']:.3f}): refuses under {screen['refuse_below']:.2f}, "
                f"answers from {screen['answer_from']:.2f}, settling {screen['settled_without_judge']:.3f} of the "
                "probed tune replies, each as the full decision does (out-of-fold)"]


if __name__ == "__main__":
    sys.exit(main())
