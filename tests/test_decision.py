"""The answer-or-refuse decision: its probes on hand-made replies, its file (a corrupt or foreign one is never
used), its fitting (grouped cross-validation, never on reserved RGB positions), and, with the real packaged
generator, what it decides on near misses and on right answers worded differently from the passage."""

from __future__ import annotations

import json
import math

import pytest

from rag.answer import answer
from rag.decision import (
    ANSWER_FEATURE,
    ANSWER_LAYER,
    FEATURES,
    GENERATOR_PROBES,
    RETRIEVAL_FEATURES,
    STATE_FEATURE,
    STATE_FEATURES,
    STATE_KIND,
    Decision,
    DecisionError,
    Screen,
    StateProbe,
    answer_kind,
    decision_file,
    holds_focus,
    lexical_probes,
    load_decision,
    quote_probes,
)
from rag.fit_decision import (
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
from rag.generation import get_generator
from rag.generator_types import Usage
from rag.models import GENERATORS
from rag.prompts import Context
from rag.retrieval import Passage
from rag.settings import Settings
from rag.verification import decide, layout_of, settled, verify
from tests.conftest import write

PACKAGED = decision_file(Settings().generator)


def passage(text: str, number: int = 0) -> Passage:
    return Passage(number, "doc", "A title", text, 0, len(text), (1, 1), scores={"dense_similarity": 0.6})


# ---------------------------------------------------------------- probes


def test_focus_asks_for_what_the_wh_word_wants():
    assert holds_focus("When did he last visit?", "He last visited in 2014.")
    assert not holds_focus("When did he last visit?", "He visited Seoul.")
    assert holds_focus("How much will it invest?", "It will invest 909 billion won.")
    assert not holds_focus("How much will it invest?", "It will invest in AI chips.")
    assert holds_focus("Who chairs the alliance?", "Lee Jong-ho chairs it.")
    assert not holds_focus("Who chairs the Metaverse Alliance?", "The Metaverse Alliance is chaired.")
    assert holds_focus("Why did it grow?", "Demand for AI.")  # other questions always hold their focus


def test_lexical_probes_tell_a_stated_answer_from_a_stitched_one():
    passages = [passage("The science minister is Lee Jong-ho. The Metaverse Alliance was founded by the government.")]
    stated = lexical_probes("The science minister is Lee Jong-ho [1].", "Who is the science minister?", passages, None)
    stitched = lexical_probes("The Metaverse Alliance is chaired by Lee Jong-ho [1].",
                              "Who chairs the Metaverse Alliance?", passages, None)
    assert stated["joint_support"] == 1.0 and stated["question_coverage"] == 1.0
    assert stitched["joint_support"] < 0.5 and stitched["question_coverage"] < 0.5
    assert stated["names_found"] == stitched["names_found"] == 1.0
    worded_differently = lexical_probes("Beijing, China hosted the 2008 Summer Olympics [1].",
                                        "Which city hosted the Olympic Games in 2008?",
                                        [passage("The 2008 Summer Olympics were held in Beijing.")], None)
    # "China" is not in the passage: the name rule voids the sentence support; the other probes still see the answer
    assert worded_differently["names_found"] < 1.0 and worded_differently["sentence_support"] == 0.0
    assert worded_differently["joint_support"] > 0.0 and worded_differently["focus"] == 1.0


def test_a_quote_must_be_a_passage_sentence_carrying_the_question_and_the_answer():
    passages = [passage("The science minister is Lee Jong-ho. The Metaverse Alliance was founded by the government.")]
    stated = quote_probes("The science minister is Lee Jong-ho.", "Who is the science minister?",
                          "The science minister is Lee Jong-ho [1].", passages)
    assert stated == {"quote_found": 1.0, "quote_question": 1.0, "quote_joint": 1.0}
    cut_short = quote_probes("The science minister is", "Who is the science minister?", "Lee Jong-ho [1].", passages)
    assert cut_short == stated  # its first words name the sentence; the sentence is what is checked
    # the relation is never stated: the quoted sentence names the alliance but not the reply's answer
    stitched = quote_probes("The Metaverse Alliance was founded by the government.",
                            "Who chairs the Metaverse Alliance?", "Lee Jong-ho chairs the Metaverse Alliance [1].",
                            passages)
    assert stitched["quote_found"] == 1.0 and stitched["quote_joint"] == 0.0
    invented = quote_probes("Lee Jong-ho chairs the Metaverse Alliance.", "Who chairs the Metaverse Alliance?",
                            "Lee Jong-ho [1].", passages)
    assert invented["quote_found"] < 1.0  # no sentence of the passages says it
    assert quote_probes("", "Who?", "Lee [1].", passages) == dict.fromkeys(stated, 0.0)


# ---------------------------------------------------------------- the file


RECORDED = [f for f in FEATURES if f not in STATE_FEATURES]  # a state probe's feature needs the probe in the file


def decision_json(**changes) -> dict:
    data = Decision(RECORDED, [0.0] * len(RECORDED), [1.0] * len(RECORDED), [0.5] * len(RECORDED), -1.0, 0.4,
                    "g", "abc", "llama-cpp", "e").to_json()
    return {**data, **changes}


def state_probe_json(**changes) -> dict:
    return {"kind": STATE_KIND, "mean": [0.0] * 4, "scale": [1.0] * 4, "coef": [1.0, -1.0, 0.0, 0.0],
            "intercept": 0.5, **changes}


@pytest.mark.parametrize(("changes", "message"), [
    ({"format": "pickle"}, "not a rag-decision file"),
    ({"version": 2}, "not a rag-decision file"),
    ({"coef": [1.0]}, "lists of one length"),
    ({"features": ["judge_yes"] * (len(RECORDED) - 1) + ["secret"]}, "unknown feature"),
    ({"intercept": math.nan}, "finite number"),
    ({"threshold": "0.5"}, "finite number"),
    ({"scale": [0.0] * len(RECORDED)}, "scale must be positive"),
    ({"features": RECORDED[:-1] + [STATE_FEATURE]}, "carries no state probe"),
    ({"state_probe": state_probe_json(kind="reply_judge")}, "state probe must be an object of kind"),
    ({"state_probe": state_probe_json(kind="answer@x")}, "state probe must be an object of kind"),
    ({"features": RECORDED[:-1] + [ANSWER_FEATURE], "state_probe": state_probe_json()},
     "reads answer_state but its state probe is of kind judge"),
    ({"features": RECORDED[:-1] + [STATE_FEATURE], "state_probe": state_probe_json(kind="answer@18")},
     "reads judge_state but its state probe is of kind answer@18"),
    ({"features": RECORDED[:-2] + [STATE_FEATURE, ANSWER_FEATURE], "state_probe": state_probe_json()},
     "one state probe at most"),
    ({"state_probe": state_probe_json(coef=[1.0])}, "lists of one length"),
    ({"state_probe": state_probe_json(scale=[1.0, 1.0, 1.0, -1.0])}, "scale must be positive"),
    ({"override_threshold": 0.1}, "0 <= threshold <= override_threshold <= 1"),
    ({"generator_sha256": ""}, "must be named"),
    ({"layout_thresholds": {"pdf": [0.1, 0.2]}}, "keyed by document or passages"),
    ({"layout_thresholds": [[0.1, 0.2]]}, "keyed by document or passages"),
    ({"layout_thresholds": {"passages": [0.3, 0.2]}}, r"layout_thresholds\['passages'\] must be \[threshold"),
    ({"layout_thresholds": {"document": [0.3]}}, r"layout_thresholds\['document'\] must be \[threshold"),
    ({"layout_thresholds": {"document": [0.1, math.inf]}}, r"layout_thresholds\['document'\] must be"),
])
def test_a_malformed_decision_file_is_refused_whole(changes, message):
    with pytest.raises(DecisionError, match=message):
        Decision.from_json(decision_json(**changes))


CHEAP = [f for f in FEATURES if f not in GENERATOR_PROBES]


def test_the_state_probe_is_read_back_and_scores_a_hidden_state_of_its_size_only():
    data = json.loads(json.dumps(decision_json(features=RECORDED[:-1] + [STATE_FEATURE],
                                               state_probe=state_probe_json())))
    decision = Decision.from_json(data)
    assert isinstance(decision.state_probe, StateProbe)
    assert decision.state_probe.logit([2.0, 1.0, 9.0, 9.0]) == pytest.approx(1.5)  # 2 - 1 + 0.5
    with pytest.raises(DecisionError, match="a hidden state of 3 values for a probe of 4"):
        decision.state_probe.logit([1.0, 1.0, 1.0])
    assert Decision.from_json(decision.to_json()).state_probe == decision.state_probe
    assert (decision.state_probe.feature, decision.state_probe.layer) == (STATE_FEATURE, None)


def test_an_answer_state_probe_names_the_layer_it_reads():
    data = decision_json(features=RECORDED[:-1] + [ANSWER_FEATURE], state_probe=state_probe_json(kind="answer@18"))
    probe = Decision.from_json(json.loads(json.dumps(data))).state_probe
    assert (probe.kind, probe.feature, probe.layer) == ("answer@18", ANSWER_FEATURE, 18)
    assert probe.logit([2.0, 1.0, 9.0, 9.0]) == pytest.approx(1.5)


def screen_json(**changes) -> dict:
    screen = {"features": CHEAP, "mean": [0.0] * len(CHEAP), "scale": [1.0] * len(CHEAP), "coef": [0.5] * len(CHEAP),
              "intercept": 0.0, "refuse_below": 0.2, "answer_from": 0.8}
    return decision_json(screen={**screen, **changes})


@pytest.mark.parametrize(("changes", "message"), [
    ({"features": ["judge_yes"], "mean": [0.0], "scale": [1.0], "coef": [1.0]}, "cannot read judge_yes"),
    ({"features": ["focus", "contrastive"], "mean": [0.0] * 2, "scale": [1.0] * 2, "coef": [1.0] * 2},
     "cannot read contrastive"),
    ({"refuse_below": 0.9}, "0 <= refuse_below <= answer_from <= 1"),
    ({"answer_from": math.inf}, "finite number"),
    ({"coef": [1.0]}, "lists of one length"),
])
def test_a_malformed_screen_refuses_the_whole_file(changes, message):
    with pytest.raises(DecisionError, match=message):
        Decision.from_json(screen_json(**changes))


def test_the_screen_settles_clear_replies_without_the_judge_and_leaves_the_rest_to_it():
    decision = Decision.from_json(json.loads(json.dumps(screen_json())))  # as read back from its file
    assert isinstance(decision.screen, Screen) and decision.screen.features == CHEAP
    clear, doubtful, hopeless = dict.fromkeys(CHEAP, 1.0), dict.fromkeys(CHEAP, 0.0), dict.fromkeys(CHEAP, -1.0)
    answered = settled(clear, decision.screen)
    assert answered.passed and not answered.judged and answered.answerable is None and answered.score is None
    assert answered.probability >= answered.threshold == 0.8 and answered.usage.evaluated_tokens == 0
    assert answered.decided_by == "decision" and answered.features["judge_yes"] is None
    refused = settled(hopeless, decision.screen)
    assert not refused.passed and refused.probability < refused.threshold == 0.2
    assert settled(doubtful, decision.screen) is None  # P = 0.5: the judge runs
    assert settled({**clear, "focus": None}, decision.screen) is None  # a probe missing: the judge runs


def test_each_prompt_layout_is_held_to_its_own_thresholds():
    data = decision_json(threshold=0.4, override_threshold=0.5, layout_thresholds={"passages": [0.1, 0.2]})
    decision = Decision.from_json(json.loads(json.dumps(data)))
    assert [decision.threshold_for(passed, "passages") for passed in (True, False)] == [0.1, 0.2]
    assert [decision.threshold_for(passed, "document") for passed in (True, False)] == [0.4, 0.5]  # the pooled pair
    values = {f: 0.0 for f in RECORDED} | {"judge_yes": 1.1}  # P = 1 / (1 + e^0.45) = 0.39: between the pairs
    assert 0.2 < decision.probability(values) < 0.4
    for layout, stands in (("passages", True), ("document", False)):
        verdict = decide(values, Usage(), decision, None, lexically_passed=False, layout=layout)
        assert verdict.decided_by == "decision" and verdict.passed is stands
        assert verdict.threshold == (0.2 if layout == "passages" else 0.5)
    assert layout_of(Context([passage("x")], whole_document=True)) == "document"
    assert layout_of(Context([passage("x")])) == "passages"


def test_loading_says_why_the_checks_decide_instead(tmp_path):
    path = tmp_path / "decision.json"
    assert load_decision(path, "g", "abc", "llama-cpp", "e") == (None, "no fitted decision for g (decision.json): "
                                                                       "the checks decide")
    path.write_text("{not json")
    assert "unusable" in load_decision(path, "g", "abc", "llama-cpp", "e")[1]
    path.write_text(json.dumps(decision_json()))
    decision, note = load_decision(path, "g", "abc", "llama-cpp", "e")
    assert decision is not None and note == ""
    assert 0.0 < decision.probability(dict.fromkeys(FEATURES, 1.0)) < 1.0
    _, note = load_decision(path, "g", "another", "transformers", "e")
    assert "fitted for another generator_sha256, engine (abc, llama-cpp)" in note


def test_the_packaged_decision_is_for_the_default_generator_and_never_saw_reserved_queries():
    data = json.loads(PACKAGED.read_text())
    decision = Decision.from_json(data)
    settings = Settings()
    assert decision.generator == settings.generator and decision.engine == "llama-cpp"
    assert decision.generator_sha256 == GENERATORS[settings.generator].sha256
    sources = decision.report["sources"]
    assert sources["rgb_positions"] and min(sources["rgb_positions"]) >= 50
    assert sources["project_splits"] == ["tune"]
    assert decision.report["auc_combined"] >= max(decision.report["auc_alone"].values()) - 0.02


# ---------------------------------------------------------------- fitting


def results_file(folder, rows) -> None:
    write(folder / "results.jsonl", "".join(json.dumps(r) + "\n" for r in rows))


def result(qid, unanswerable, raw, answers, features=None, reason="", context="document") -> dict:
    return {"id": qid, "unanswerable": unanswerable, "raw_text": raw, "answers": answers, "refused": bool(reason),
            "refusal_reason": reason, "usage": {"context": context},
            "verdict": {"features": features if features is not None else dict.fromkeys(FEATURES, 0.5)}}


def test_fitting_never_reads_reserved_rgb_positions(tmp_path):
    results_file(tmp_path / "rgb", [result(50, False, "Tampa [1].", "Tampa"), result(49, False, "x", "y")])
    with pytest.raises(FitError, match="RGB query 49 is at a reserved position"):
        rgb_rows(tmp_path / "rgb")
    assert main(["--rgb", str(tmp_path / "rgb"), "--out", str(tmp_path / "d.json")]) == 2
    assert not (tmp_path / "d.json").exists()


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


def test_a_hidden_state_probe_is_scored_only_on_questions_it_was_not_fitted_on():
    """The state study's AUCs are out-of-fold: a state that carries the label separates (alone and stacked), one
    of pure noise does not, however many dimensions it has to fit; runs without states are an error."""
    rows = replies_with_states(2, 0.3, 32, noise_dimensions=512)
    report = state_study(rows, ["judge_yes", "focus"], 0.1)
    assert max(report["judge"]["alone"].values()) > 0.8 and report["judge"]["stacked"] > report["probes_alone"] + 0.1
    assert max(report["noise"]["alone"].values()) < 0.65
    with pytest.raises(FitError, match="no hidden states"):
        state_study([Reply(r.group, r.unanswerable, r.right, True, False, r.features) for r in rows], ["focus"], 0.1)


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
    reread = Decision.from_json(json.loads(json.dumps(decision.to_json())))
    state = rows[1].states[kind]
    assert reread.state_probe.logit(state) == pytest.approx(decision.state_probe.logit(state))
    with pytest.raises(FitError, match=f"carry no {kind} state"):
        fit([Reply(r.group, r.unanswerable, r.right, True, False, r.features) for r in rows], 0.05,
            features=["judge_yes", feature])
    with pytest.raises(FitError, match="are both state probes"):
        fit(rows, 0.05, features=["judge_yes", STATE_FEATURE, ANSWER_FEATURE])


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


# ---------------------------------------------------------------- with the real generator


@pytest.fixture(scope="module")
def default_seed(seed_settings):
    """The seed article; the packaged decision combines no retrieval probe, so it holds for any embedder."""
    assert not set(Decision.from_json(json.loads(PACKAGED.read_text())).features) & set(RETRIEVAL_FEATURES)
    return seed_settings


@pytest.mark.slow
def test_a_relation_the_article_never_states_is_refused_by_the_decision(default_seed):
    reply = answer("Who chairs the Metaverse Alliance?", settings=default_seed)
    assert reply.refused and reply.verdict["decided_by"] == "decision", reply.to_json()
    assert reply.verdict["probability"] < reply.verdict["threshold"]


@pytest.mark.slow
def test_a_right_answer_worded_differently_from_the_passage_stands(default_seed, tmp_path):
    text = "The 2008 Summer Olympics were held in Beijing, with 204 national teams taking part."
    settings = default_seed
    generator = get_generator(settings)
    context = Context([passage(text, 0)])
    reply = "Beijing, China hosted the 2008 Summer Olympics [1]."
    judged = verify(reply, "Which city hosted the Olympic Games in 2008?", context, generator, settings,
                    checked=None, lexically_passed=False,
                    reply_usage=Usage(logprob_min=-0.3, logprob_mean=-0.05, logprob_key_min=-0.3))
    assert judged.decided_by == "decision" and judged.passed, judged


@pytest.mark.slow
@pytest.mark.parametrize(("content", "note"), [("{not json", "unusable"), ("foreign", "fitted for another"),
                                               ("none", "decision_file is none")])
def test_a_corrupt_or_foreign_decision_file_leaves_the_checks_to_decide(default_seed, tmp_path, content, note):
    path = tmp_path / "decision.json"
    path.write_text(json.dumps(decision_json()) if content == "foreign" else content)
    reply = answer("When had Zuckerberg last been to South Korea before this trip?",
                   settings=default_seed.replace(decision_file="none" if content == "none" else str(path)))
    assert not reply.refused and "2014" in reply.text
    assert reply.verdict["decided_by"] == "checks" and note in reply.verdict["note"]
