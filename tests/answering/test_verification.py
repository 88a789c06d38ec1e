"""The verifier with the real packaged generator, on hand-made claims about the seed article: claims the article
states pass; claims built from its words in relations it never states are refused, by the lexical checks or by
the generator's judgement."""

from functools import partial

import pytest

from rag.answering.decision import (
    ANSWER_FEATURE,
    ANSWER_LAYER,
    GENERATOR_PROBES,
    STATE_FEATURE,
    STUDY_LAYERS,
    answer_kind,
    reply_kind,
    sentence_support,
)
from rag.answering.flow import answer, check_reply
from rag.answering.prompts import Context
from rag.answering.verification import Recording, recording, threshold_for, verify
from rag.generators.factory import get_generator
from rag.retrieval import get_retriever
from rag.types import Usage

SEED = "south-korea-ai-investment.txt"

SUPPORTED = [
    ("Where did Yoon meet Zuckerberg?", "Yoon met Zuckerberg at the Yongsan Presidential Palace in Seoul [1]."),
    ("How much will South Korea invest in AI semiconductor R&D by 2027?",
     "The ministry will deploy 1.02 trillion won for AI semiconductor research by 2027 [5]."),
    ("By how much did chip exports grow in February?", "Chip exports grew 66.7% year-on-year in February [9]."),
    ("Who is South Korea's science minister?", "The science minister is Lee Jong-ho [6]."),
]
UNSUPPORTED = [  # each uses names and figures of the article in a relation it never states
    ("How much will SK Hynix invest in the semiconductor super cluster?",
     "SK Hynix will invest 622 trillion won in the super cluster [8]."),
    ("How many people work for Samsung Electronics?", "Samsung Electronics employs 16 people [8]."),
    ("Where did Yoon meet Zuckerberg?", "Yoon met Zuckerberg in Busan [1]."),
    ("What does Gartner forecast for the global AI chip market in 2030?",
     "Gartner forecasts the global AI chip market to reach US$86.1 billion in 2030 [7]."),
]


@pytest.mark.unit
def test_thresholds_come_from_the_calibration_or_the_setting():
    assert threshold_for("qwen2.5-coder-1.5b", -1.0) == 0.59  # chosen on the tune split
    assert threshold_for("qwen2.5-coder-0.5b", -1.0) is None  # its judge does not separate: not verified
    assert threshold_for("qwen2.5-coder-0.5b", 0.3) == 0.3 and threshold_for("qwen2.5-coder-1.5b", 0.0) == 0.0


@pytest.fixture(scope="module")
def seed(seed_settings):
    retriever = get_retriever(seed_settings)
    context = Context(retriever.document_passages(SEED), whole_document=True)
    return seed_settings, context, get_generator(seed_settings)


def refused(question: str, reply: str, seed) -> str:
    """Why the pipeline's checks refuse this reply ("" when it stands)."""
    settings, context, generator = seed
    reason, _ = check_reply(reply, question, context.passages, settings)
    if reason:
        return reason
    return "" if verify(reply, question, context, generator, settings).passed else "verifier"


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.parametrize(("question", "reply"), SUPPORTED)
def test_claims_the_article_states_pass(seed, question, reply):
    assert refused(question, reply, seed) == ""


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.parametrize(("question", "reply"), UNSUPPORTED)
def test_claims_it_never_states_are_refused(seed, question, reply):
    assert refused(question, reply, seed)


@pytest.mark.integration
@pytest.mark.slow
def test_both_names_present_relation_absent(seed):
    """"Who chairs the Metaverse Alliance?": the passage names the government and the alliance, so every lexical
    check passes; only the generator's judgement can see that no one is said to chair it."""
    settings, context, generator = seed
    settings = settings.replace(decision_file="none")  # the judge on every reply: no fitted screen settles it first
    question = "Who chairs the Metaverse Alliance?"
    reply = "The South Korean government chairs the Metaverse Alliance [3]."
    reason, checked = check_reply(reply, question, context.passages, settings)
    assert reason == "" and checked.supported_sentences == 1
    verdict = verify(reply, question, context, generator, settings)
    assert not verdict.passed and verdict.score < 0.59  # the 1.5B model's calibrated threshold
    assert verdict.usage.state in ("context", "memory", "disk", "computed")
    answerable = verify("Yoon met Zuckerberg at the Yongsan Presidential Palace [1].",
                        "Where did Yoon meet Zuckerberg?", context, generator, settings)
    assert answerable.answerable > verdict.answerable + 0.1  # the judge tells the two questions apart


@pytest.mark.integration
@pytest.mark.slow
def test_sentence_support_sees_a_claim_stitched_from_two_sentences(seed):
    _, context, _ = seed
    assert sentence_support("Chip exports grew 66.7% in February [9].", context.passages) >= 0.75  # "grew"
    # 622 trillion won and SK Hynix are in neighbouring sentences, never in one
    assert sentence_support("SK Hynix will invest 622 trillion won [8].", context.passages) == 0.0


@pytest.mark.integration
@pytest.mark.slow
def test_every_generator_probe_rides_on_the_kept_document_and_leaves_the_answer_alone(seed):
    """Recording all probes (how the tune runs are collected) each probe that costs a pass runs after the kept document,
    paying only its own tokens; the contrastive probe reads the reply without the passages last, and the next
    question still finds the document's state kept. The answers are those given without the probes."""
    settings, _, generator = seed
    settings = settings.replace(decision_file="none")
    question, follow_up = "Where did Yoon meet Zuckerberg?", "Who is South Korea's science minister?"
    with recording(Recording(all_probes=True)):
        probed = answer(question, settings=settings)
    features, usage = probed.verdict["features"], probed.verdict["usage"]
    assert all(isinstance(features[f], float) for f in GENERATOR_PROBES if f != STATE_FEATURE), features
    assert features[STATE_FEATURE] is None  # no fitted state probe with decision_file none: the state is recorded
    assert {k: len(v) for k, v in probed.verdict["states"].items()} == {
        "judge": 1536, "reply_judge": 1536, **{kind(n): 1536 for n in STUDY_LAYERS for kind in
                                               (answer_kind, reply_kind, partial(reply_kind, mean=True))}}
    assert 0 <= features["reply_judge_yes"] <= 1 and features["refusal_logprob"] < 0
    assert usage["state"] in ("context", "memory", "disk") and usage["evaluated_tokens"] < usage["prompt_tokens"] / 3
    after = answer(follow_up, settings=settings)
    assert after.usage["calls"][0]["state"] == "memory"  # restored, not read afresh
    assert generator.usage.reply_states == {}  # an everyday answer reads no layer over its reply (recording does)
    assert probed.text == answer(question, settings=settings).text and "Yongsan" in probed.text
    assert after.text == answer(follow_up, settings=settings).text


@pytest.mark.integration
@pytest.mark.slow
def test_the_fitted_decision_reads_the_answer_prompts_middle_layer_through_its_probe(seed, tmp_path):
    """The packaged decision's state probe scores a middle layer's output where the answer prompt ends: read while
    the reply's prompt is processed in an everyday answer (no pass of its own), and, for a reply written elsewhere,
    in a pass over the question part. A verdict carries the probe's logit, not the state itself."""
    import json

    from rag.answering.decision import decision_file

    settings, context, generator = seed
    data = json.loads(decision_file(generator.name).read_text())
    assert ANSWER_FEATURE in data["features"] and data["state_probe"]["kind"] == answer_kind(ANSWER_LAYER)
    assert len(data["state_probe"]["coef"]) == 1536 and ANSWER_FEATURE in data["screen"]["features"]
    path = tmp_path / "no-screen.json"
    path.write_text(json.dumps({**data, "screen": None}))  # the full decision on every reply
    settings = settings.replace(decision_file=str(path))

    def given(reply: str, question: str):  # a reply with its log-probabilities but no layer outputs
        usage = Usage(logprob_min=-0.2, logprob_mean=-0.05, logprob_key_min=-0.2)
        return verify(reply, question, context, generator, settings, reply_usage=usage)

    stated = given("Yoon met Zuckerberg at the Yongsan Presidential Palace [1].", "Where did Yoon meet Zuckerberg?")
    assert stated.decided_by == "decision" and isinstance(stated.features[ANSWER_FEATURE], float)
    assert stated.usage.evaluated_tokens > 0 and stated.states == {} and "states" in stated.to_dict()
    unscored = verify("Yoon met Zuckerberg at the Yongsan Presidential Palace [1].", "Where did Yoon meet Zuckerberg?",
                      context, generator, settings)  # no log-probabilities: the checks decide, no pass for the layer
    assert unscored.decided_by == "checks" and unscored.features[ANSWER_FEATURE] is None
    near_miss = given("The South Korean government chairs the Metaverse Alliance [3].",
                      "Who chairs the Metaverse Alliance?")
    assert near_miss.features[ANSWER_FEATURE] < stated.features[ANSWER_FEATURE]
    answered = answer("Where did Yoon meet Zuckerberg?", settings=settings)
    assert answered.verdict["decided_by"] == "decision" and STATE_FEATURE not in answered.verdict["features"]
    assert answered.verdict["features"][ANSWER_FEATURE] == pytest.approx(stated.features[ANSWER_FEATURE], abs=0.3)
