"""The answer-or-refuse decision: its probes on hand-made replies, its file (a corrupt or foreign one is never
used), and, with the real packaged generator, what it decides on near misses and on right answers worded
differently from the passage. Its fitting (tools/fit_decision.py) is tested in tests/tools/test_fit_decision.py."""

from __future__ import annotations

import json
import math

import pytest

from rag.answering.decision import (
    ANSWER_FEATURE,
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
    decision_file,
    holds_focus,
    lexical_probes,
    load_decision,
    quote_probes,
)
from rag.answering.flow import answer
from rag.answering.prompts import Context
from rag.answering.verification import decide, layout_of, settled, verify
from rag.generators.factory import get_generator
from rag.models.registry import GENERATORS
from rag.settings import Settings
from rag.types import Passage, Usage

PACKAGED = decision_file(Settings().generator)


def passage(text: str, number: int = 0) -> Passage:
    return Passage(number, "doc", "A title", text, 0, len(text), (1, 1), scores={"dense_similarity": 0.6})


# ---------------------------------------------------------------- probes


@pytest.mark.unit
def test_focus_asks_for_what_the_wh_word_wants():
    assert holds_focus("When did he last visit?", "He last visited in 2014.")
    assert not holds_focus("When did he last visit?", "He visited Seoul.")
    assert holds_focus("How much will it invest?", "It will invest 909 billion won.")
    assert not holds_focus("How much will it invest?", "It will invest in AI chips.")
    assert holds_focus("Who chairs the alliance?", "Lee Jong-ho chairs it.")
    assert not holds_focus("Who chairs the Metaverse Alliance?", "The Metaverse Alliance is chaired.")
    assert holds_focus("Why did it grow?", "Demand for AI.")  # other questions always hold their focus


@pytest.mark.unit
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


@pytest.mark.unit
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
                    "g", "abc", "llama-cpp", "e").to_dict()
    return {**data, **changes}


def state_probe_json(**changes) -> dict:
    return {"kind": STATE_KIND, "mean": [0.0] * 4, "scale": [1.0] * 4, "coef": [1.0, -1.0, 0.0, 0.0],
            "intercept": 0.5, **changes}


@pytest.mark.unit
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
        Decision.from_dict(decision_json(**changes))


CHEAP = [f for f in FEATURES if f not in GENERATOR_PROBES]


@pytest.mark.unit
def test_the_state_probe_is_read_back_and_scores_a_hidden_state_of_its_size_only():
    data = json.loads(json.dumps(decision_json(features=RECORDED[:-1] + [STATE_FEATURE],
                                               state_probe=state_probe_json())))
    decision = Decision.from_dict(data)
    assert isinstance(decision.state_probe, StateProbe)
    assert decision.state_probe.logit([2.0, 1.0, 9.0, 9.0]) == pytest.approx(1.5)  # 2 - 1 + 0.5
    with pytest.raises(DecisionError, match="a hidden state of 3 values for a probe of 4"):
        decision.state_probe.logit([1.0, 1.0, 1.0])
    assert Decision.from_dict(decision.to_dict()).state_probe == decision.state_probe
    assert (decision.state_probe.feature, decision.state_probe.layer) == (STATE_FEATURE, None)


@pytest.mark.unit
def test_an_answer_state_probe_names_the_layer_it_reads():
    data = decision_json(features=RECORDED[:-1] + [ANSWER_FEATURE], state_probe=state_probe_json(kind="answer@18"))
    probe = Decision.from_dict(json.loads(json.dumps(data))).state_probe
    assert (probe.kind, probe.feature, probe.layer) == ("answer@18", ANSWER_FEATURE, 18)
    assert probe.logit([2.0, 1.0, 9.0, 9.0]) == pytest.approx(1.5)


def screen_json(**changes) -> dict:
    screen = {"features": CHEAP, "mean": [0.0] * len(CHEAP), "scale": [1.0] * len(CHEAP), "coef": [0.5] * len(CHEAP),
              "intercept": 0.0, "refuse_below": 0.2, "answer_from": 0.8}
    return decision_json(screen={**screen, **changes})


@pytest.mark.unit
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
        Decision.from_dict(screen_json(**changes))


@pytest.mark.unit
def test_the_screen_settles_clear_replies_without_the_judge_and_leaves_the_rest_to_it():
    decision = Decision.from_dict(json.loads(json.dumps(screen_json())))  # as read back from its file
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


@pytest.mark.unit
def test_each_prompt_layout_is_held_to_its_own_thresholds():
    data = decision_json(threshold=0.4, override_threshold=0.5, layout_thresholds={"passages": [0.1, 0.2]})
    decision = Decision.from_dict(json.loads(json.dumps(data)))
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


@pytest.mark.unit
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


@pytest.mark.unit
def test_the_packaged_decision_is_for_the_default_generator_and_never_saw_reserved_queries():
    data = json.loads(PACKAGED.read_text())
    decision = Decision.from_dict(data)
    settings = Settings()
    assert decision.generator == settings.generator and decision.engine == "llama-cpp"
    assert decision.generator_sha256 == GENERATORS[settings.generator].sha256
    sources = decision.report["sources"]
    assert sources["rgb_positions"] and min(sources["rgb_positions"]) >= 50
    assert sources["project_splits"] == ["tune"]
    assert decision.report["auc_combined"] >= max(decision.report["auc_alone"].values()) - 0.02


# ---------------------------------------------------------------- with the real generator


@pytest.fixture(scope="module")
def default_seed(seed_settings):
    """The seed article; the packaged decision combines no retrieval probe, so it holds for any embedder."""
    assert not set(Decision.from_dict(json.loads(PACKAGED.read_text())).features) & set(RETRIEVAL_FEATURES)
    return seed_settings


@pytest.mark.integration
@pytest.mark.slow
def test_a_relation_the_article_never_states_is_refused_by_the_decision(default_seed):
    reply = answer("Who chairs the Metaverse Alliance?", settings=default_seed)
    assert reply.refused and reply.verdict["decided_by"] == "decision", reply.to_dict()
    assert reply.verdict["probability"] < reply.verdict["threshold"]


@pytest.mark.integration
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


@pytest.mark.integration
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
