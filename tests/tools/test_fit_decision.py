"""Fitting the answer-or-refuse decision (tools/fit_decision.py): labels from evaluation results (never reserved RGB
positions nor test questions), grouped cross-validation, the false-refusal cap per prompt layout, the screen, and
the hidden-state and model studies, on made-up replies (no model)."""

from __future__ import annotations

import json

import pytest

from rag.answering.decision import (
    ANSWER_FEATURE,
    ANSWER_LAYER,
    FEATURES,
    GENERATOR_PROBES,
    RETRIEVAL_FEATURES,
    STATE_FEATURE,
    STATE_FEATURES,
    STATE_KIND,
    Decision,
    answer_kind,
)
from tests.conftest import write
from tools.fit_decision import (
    DEFAULT_FEATURES,
    FitError,
    Reply,
    boosting_study,
    fit,
    main,
    project_rows,
    rgb_rows,
    state_study,
)

RECORDED = [f for f in FEATURES if f not in STATE_FEATURES]  # as in tests/answering/test_decision.py


def results_file(folder, rows) -> None:
    write(folder / "results.jsonl", "".join(json.dumps(r) + "\n" for r in rows))


def result(qid, unanswerable, raw, answers, features=None, reason="", context="document") -> dict:
    return {"id": qid, "unanswerable": unanswerable, "raw_text": raw, "answers": answers, "refused": bool(reason),
            "refusal_reason": reason, "usage": {"context": context},
            "verdict": {"features": features if features is not None else dict.fromkeys(FEATURES, 0.5)}}


@pytest.mark.unit
def test_fitting_never_reads_reserved_rgb_positions(tmp_path):
    results_file(tmp_path / "rgb", [result(50, False, "Tampa [1].", "Tampa"), result(49, False, "x", "y")])
    with pytest.raises(FitError, match="RGB query 49 is at a reserved position"):
        rgb_rows(tmp_path / "rgb")
    assert main(["--rgb", str(tmp_path / "rgb"), "--out", str(tmp_path / "d.json")]) == 2
    assert not (tmp_path / "d.json").exists()


@pytest.mark.unit
def test_labels_leave_out_test_questions_wrong_replies_and_replies_without_probes(tmp_path):
    results_file(tmp_path / "p", [
        result("q1", False, "It was 2014 [1].", ["2014"]),  # right: 1
        result("q2", False, "It was 2015 [1].", ["2014"]),  # wrong reply to an answerable question: no label
        result("q3", True, "Lee chairs it [1].", [], reason="unsupported"),  # any reply to an unanswerable one: 0
        result("q4", True, "x", [], features={}, reason="low-relevance", context="none"),  # refused before the probes
        result("q5", False, "It was 2014 [1].", ["2014"]),  # in the test split: never read
    ])
    rows = project_rows(tmp_path / "p", {"q5"})
    assert [(r.group, r.label, r.checks_passed, r.layout) for r in rows] == [
        ("project:q1", 1, True, "document"), ("project:q2", None, True, "document"),
        ("project:q3", 0, False, "document"), ("project:q4", None, False, "none")]


@pytest.mark.unit
def test_the_threshold_keeps_false_refusals_under_the_cap_out_of_fold():
    import random

    rng = random.Random(0)
    rows = [Reply(f"q{n}", label == 0, label == 1, n % 3 > 0, False,
                  {f: rng.gauss(label * (1.0 if f == "judge_yes" else 0.0), 1.0) for f in RECORDED},
                  {answer_kind(ANSWER_LAYER): [rng.gauss(0.0, 1.0) for _ in range(8)]})
            for n in range(200) for label in (n % 2,)]
    decision, report = fit(rows, max_false_refusals=0.05)
    assert report["out_of_fold_at_thresholds"]["false_refusals"] <= 0.05
    assert 0 <= decision.threshold <= decision.override_threshold <= 1
    assert report["auc_alone"]["judge_yes"] > 0.65 > report["auc_alone"]["focus"]
    assert report["auc_combined"] > 0.65 and decision.features == list(DEFAULT_FEATURES)
    assert not set(decision.features) & set(RETRIEVAL_FEATURES)  # by default: no tie to the embedder's scale


@pytest.mark.unit
def test_the_false_refusal_cap_holds_for_each_layout_not_only_over_all_of_them():
    import random

    rng = random.Random(2)

    def reply(n: int, layout: str, lean: float) -> Reply:  # a passages reply's probes all read `lean` lower
        label = n % 2
        return Reply(f"{layout}{n}", label == 0, label == 1, True, False,
                     {f: rng.gauss(label * (1.5 if f == "judge_yes" else 0.0) + lean, 1.0) for f in RECORDED},
                     layout=layout)

    rows = [reply(n, "document", 0.0) for n in range(300)] + [reply(n, "passages", -1.0) for n in range(120)]
    features = ["judge_yes", "sentence_support"]
    decision, report = fit(rows, max_false_refusals=0.05, features=features)
    layouts = report["layouts"]
    assert layouts["passages"]["at_the_pooled_pair"]["false_refusals"] > 0.05  # one pair over all: too many here
    for layout in ("document", "passages"):
        assert layouts[layout]["out_of_fold"]["false_refusals"] <= 0.05
        assert decision.layout_thresholds[layout] == layouts[layout]["thresholds"]
    assert decision.threshold_for(True, "passages") < decision.threshold_for(True, "document")
    assert report["out_of_fold_at_thresholds"]["false_refusals"] <= 0.05
    one_pair, single = fit(rows, max_false_refusals=0.05, features=features, by_layout=False)
    assert one_pair.layout_thresholds == {} and "passages" not in single["trade_off"]["0.05"]["thresholds"]
    few = rows[:300] + [reply(n, "passages", -1.0) for n in range(60)]  # 30 answerable: too few for a pair
    assert "passages" not in fit(few, max_false_refusals=0.05, features=features)[0].layout_thresholds


@pytest.mark.unit
def test_the_screen_decides_every_tune_reply_it_settles_as_the_full_decision_does():
    import random

    rng = random.Random(1)
    rows = [Reply(f"q{n}", label == 0, label == 1, True, False,
                  {f: rng.gauss(label * (1.5 if f in ("judge_yes", "sentence_support") else 0.0), 1.0)
                   for f in RECORDED})
            for n in range(300) for label in (n % 2,)]
    decision, report = fit(rows, max_false_refusals=0.05, features=[f for f in RECORDED if f not in RETRIEVAL_FEATURES])
    screen = report["screen"]
    assert decision.screen is not None and not set(GENERATOR_PROBES) & set(decision.screen.features)
    bounds = (decision.screen.refuse_below, decision.screen.answer_from)
    assert bounds == (screen["refuse_below"], screen["answer_from"])
    assert 0.1 < screen["settled_without_judge"] < 1.0  # sentence_support alone settles the clearest replies
    assert screen["out_of_fold"] == report["out_of_fold_at_thresholds"]  # it agrees wherever it settles
    judge_only = [Reply(r.group, r.unanswerable, r.right, True, False, {**r.features, "sentence_support": 0.0})
                  for r in rows]
    _, nothing_else = fit(judge_only, max_false_refusals=0.05, features=["judge_yes", "sentence_support"])
    assert nothing_else["screen"]["settled_without_judge"] < screen["settled_without_judge"]


def replies_with_states(seed: int, judge_lean: float, dimensions: int, noise_dimensions: int = 0,
                        kind: str = STATE_KIND) -> list[Reply]:
    """200 labelled replies whose state `kind`'s first value leans with the label (the rest noise), their probes
    noise but for `judge_lean` on judge_yes, and optionally a second state of pure noise."""
    import random

    import numpy as np

    rng, noise = random.Random(seed), np.random.default_rng(seed)
    rows = []
    for n in range(200):
        label = n % 2
        telling = noise.normal(size=dimensions)
        telling[0] += 2.0 * label
        states = {kind: telling.tolist()} | ({"noise": noise.normal(size=noise_dimensions).tolist()}
                                                   if noise_dimensions else {})
        rows.append(Reply(f"q{n}", label == 0, label == 1, True, False,
                          {f: rng.gauss(judge_lean * label if f == "judge_yes" else 0.0, 1.0) for f in RECORDED},
                          states))
    return rows


@pytest.mark.unit
def test_a_hidden_state_probe_is_scored_only_on_questions_it_was_not_fitted_on():
    """The state study's AUCs are out-of-fold: a state that carries the label separates (alone and stacked), one
    of pure noise does not, however many dimensions it has to fit; runs without states are an error."""
    rows = replies_with_states(2, 0.3, 32, noise_dimensions=512)
    report = state_study(rows, ["judge_yes", "focus"], 0.1)
    assert max(report["judge"]["alone"].values()) > 0.8 and report["judge"]["stacked"] > report["probes_alone"] + 0.1
    assert max(report["noise"]["alone"].values()) < 0.65
    with pytest.raises(FitError, match="no hidden states"):
        state_study([Reply(r.group, r.unanswerable, r.right, True, False, r.features) for r in rows], ["focus"], 0.1)


@pytest.mark.unit
def test_a_second_state_is_measured_by_what_it_adds_to_the_decisions_own():
    """The state study stacks each other recorded state beside the packaged decision's (answer@18), each with a probe
    of its own, and fits one probe on the two joined: a state with evidence of its own (noise independent of
    answer@18's) adds to it either way, pure noise adds nothing."""
    import numpy as np

    noise = np.random.default_rng(5)
    rows = replies_with_states(3, 0.0, 16, noise_dimensions=256, kind="answer@18")
    for n, row in enumerate(rows):
        own = noise.normal(size=16)
        own[0] += 1.5 * (n % 2)
        row.states["reply@18"] = own.tolist()
    report = state_study(rows, ["judge_yes", "focus"], 0.1)
    alone = report["answer@18"]["stacked"]
    assert "stacked_with_answer@18" not in report["answer@18"]
    assert report["reply@18"]["stacked_with_answer@18"] > max(alone, report["reply@18"]["stacked"]) + 0.02
    assert report["noise"]["stacked_with_answer@18"] < alone + 0.02
    assert report["reply@18"]["joined_with_answer@18"]["stacked"] > alone + 0.02  # one probe on the two joined


@pytest.mark.unit
@pytest.mark.parametrize(("feature", "kind"), [(STATE_FEATURE, STATE_KIND), (ANSWER_FEATURE, "answer@18")])
def test_a_fitted_state_probe_is_stacked_last_and_saved_with_the_decision(feature, kind):
    rows = replies_with_states(3, 0.0, 16, kind=kind)
    decision, report = fit(rows, 0.05, features=["judge_yes", feature, "focus"])
    assert decision.features == ["judge_yes", "focus", feature] and len(decision.state_probe.coef) == 16
    assert decision.state_probe.kind == kind and report["auc_alone"][feature] > 0.8
    assert report["auc_combined"] > 0.8  # out-of-fold, nested
    # the judge's state costs a pass, so only the full decision reads it; the answer prompt's is free
    assert decision.screen is None or (feature in decision.screen.features) == (feature == ANSWER_FEATURE)
    decision.generator, decision.generator_sha256, decision.engine, decision.embedder = "g", "abc", "llama-cpp", "e"
    reread = Decision.from_dict(json.loads(json.dumps(decision.to_dict())))
    state = rows[1].states[kind]
    assert reread.state_probe.logit(state) == pytest.approx(decision.state_probe.logit(state))
    with pytest.raises(FitError, match=f"carry no {kind} state"):
        fit([Reply(r.group, r.unanswerable, r.right, True, False, r.features) for r in rows], 0.05,
            features=["judge_yes", feature])
    with pytest.raises(FitError, match="are both state probes"):
        fit(rows, 0.05, features=["judge_yes", STATE_FEATURE, ANSWER_FEATURE])


@pytest.mark.integration  # scikit-learn's boosting: joblib starts `lscpu` (a process) to count the cores
def test_the_model_study_scores_boosting_and_the_regression_out_of_fold_on_the_same_folds():
    """A label that is an interaction of two probes (either high, not both) defeats a linear regression and not
    boosting; a label that no probe carries leaves both near chance (nothing is scored by a model that saw it); with
    the state among the probes it is stacked last, as the decision does."""
    import random

    one = ((2, 0.1, 100, 10),)  # one boosting setting: the study's loop is the same for five
    rng = random.Random(4)
    probes = [{f: rng.gauss(0.0, 1.0) for f in RECORDED} for _ in range(200)]
    labels = [int((features["judge_yes"] > 0) != (features["focus"] > 0)) for features in probes]
    crossed = [Reply(f"q{n}", label == 0, label == 1, True, False, features)
               for n, (features, label) in enumerate(zip(probes, labels, strict=True))]
    report = boosting_study(crossed, ["judge_yes", "focus"], 0.1, settings=one)
    (boosted,) = [v for k, v in report.items() if k.startswith("boosting")]
    assert report["logistic regression"]["auc"] < 0.65 < 0.8 < boosted["auc"]
    assert report["logistic regression"]["false_refusals"] <= 0.05 and boosted["false_refusals"] <= 0.05
    chance = [Reply(r.group, n % 2 == 0, n % 2 == 1, True, False, r.features) for n, r in enumerate(crossed)]
    assert all(v["auc"] < 0.65 for v in boosting_study(chance, ["judge_yes", "focus"], 0.1, settings=one).values()
               if isinstance(v, dict))
    stacked = boosting_study(replies_with_states(5, 0.0, 16), ["judge_yes", STATE_FEATURE, "focus"], 0.1, settings=one)
    assert stacked["features"] == ["judge_yes", "focus", STATE_FEATURE] and stacked["logistic regression"]["auc"] > 0.8


@pytest.mark.unit
def test_recording_for_fitting_is_on_only_inside_the_collection_and_never_a_setting():
    import dataclasses

    from rag.answering import verification
    from rag.settings import Settings

    assert not {"all_probes", "record_states"} & {f.name for f in dataclasses.fields(Settings)}
    assert not verification._mode.on
    with verification.recording(verification.Recording(states=True)):
        assert verification._mode.on and not verification._mode.all_probes
        with pytest.raises(RuntimeError), verification.recording(verification.Recording(all_probes=True)):
            assert verification._mode.all_probes
            raise RuntimeError("a run that fails leaves the mode it found")
        assert verification._mode.states and not verification._mode.all_probes
    assert not verification._mode.on


@pytest.mark.unit
def test_collect_passes_the_rest_of_its_arguments_to_rag_eval(tmp_path, capsys):
    from tools.fit_decision import collect

    assert collect(["--all-probes", "--questions", str(tmp_path / "missing.jsonl")]) == 2  # rag eval's bad input
    assert "missing.jsonl" in capsys.readouterr().err
