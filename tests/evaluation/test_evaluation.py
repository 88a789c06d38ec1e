"""Evaluation: metric functions, question loading, outputs, the `rag eval` command and the quality gate."""

from __future__ import annotations

import json

import pytest

from rag.cli import main
from rag.evaluation.metrics import (
    contains_answer,
    detect_refusal,
    exact_match,
    f1,
    normalize_answer,
    passage_relevant,
    rgb_correct,
)
from rag.evaluation.questions import EvaluationError, Question, load_questions, select_split
from rag.evaluation.report import write_outputs
from rag.evaluation.result import Result
from rag.evaluation.rgb import load_rgb, prepare_rgb, rgb_questions, rgb_snippets, write_rgb_corpus
from rag.evaluation.runner import QAEvaluator, compute_metrics, relevance_ranges, retrieval_metrics
from rag.retrieval import calibration
from rag.settings import Settings
from rag.types import Answer, Citation, Passage
from tests.conftest import (
    DEFAULT_EMBEDDER,
    REPO,
    SEED_CORPUS,
    TEST_GENERATOR,
    cache_with_models,
    make_settings,
    write,
)

# Quality gate: the test split of the project question set (corpus/eval/questions.jsonl: 93 of its 280 questions,
# never tuned or fitted on) over the seed corpus in the default configuration (qwen2.5-coder-1.5b, EmbeddingGemma,
# k=4, whole article from its kept state, the fitted decision at its whole-document thresholds, and its screen). The
# floors sit just under what `rag eval` measured there (README, "Refusing what the articles do not say"):
# answer_accuracy 0.854 (35/41), retrieval_hit_at_k 1.000 (41/41), refusal_accuracy 0.519 (27/52). Each floor allows
# one question less (llama.cpp's greedy output can change with the machine and the thread count). Every reply must
# keep its words (words_altered 0). Move these when a default changes.
MIN_ANSWER_ACCURACY = 0.82
MIN_RETRIEVAL_HIT_AT_K = 0.97
MIN_REFUSAL_ACCURACY = 0.50

QUESTIONS = REPO / "corpus" / "eval" / "questions.jsonl"
RGB_DATA = REPO.parent / "shared" / "benchmarks" / "rgb" / "en_fact.json"
METRIC_KEYS = {
    "answer_accuracy", "exact_match", "f1", "retrieval_hit_at_k", "mrr", "retrieval_hit_at_1", "retrieval_hit_at_3",
    "retrieval_hit_at_5", "mrr_at_5", "refusal_accuracy", "false_refusal_rate", "right_replies_refused",
    "citation_accuracy", "unsupported_rate", "partial_answer_rate", "words_altered", "latency_p50_s", "latency_p95_s",
    "ttft_p50_s",
    "closest_holds_gold", "closest_if_refused", "first_source_hit", "probes_p50_s", "probes_p95_s",
    "settled_without_judge",
    "questions", "answerable", "unanswerable", "k", "generator", "embedder",
}
OUTPUTS = ("results.jsonl", "metrics.json", "report.md", "metrics.png")


# ---------------------------------------------------------------- metric functions


@pytest.mark.unit
def test_squad_normalisation():
    assert normalize_answer("The  Yongsan Presidential-Palace, in Seoul!") == "yongsan presidentialpalace in seoul"
    assert normalize_answer("An apple a day") == "apple day"
    assert normalize_answer("the Korean government’s “plan”") == "korean governments plan"  # Unicode punctuation
    assert normalize_answer("theory") == "theory"  # articles only as whole words


@pytest.mark.unit
def test_exact_match_and_f1_known_values():
    assert exact_match("The Zuckerberg!", ["zuckerberg"]) == 1.0
    assert exact_match("Mark Zuckerberg", ["Zuckerberg"]) == 0.0
    assert f1("Mark Zuckerberg visited", ["Zuckerberg"]) == pytest.approx(0.5)  # P 1/3, R 1
    assert f1("in 2014", ["2014", "in 2014"]) == 1.0  # the best gold counts
    assert f1("Japan and India", ["India and Japan"]) == 1.0  # bag of tokens
    assert f1("nothing", ["2014"]) == 0.0
    assert f1("", ["2014"]) == 0.0 and exact_match("", []) == 0.0


@pytest.mark.unit
def test_answer_accuracy_criterion_with_multiple_golds():
    golds = ["Yongsan Presidential Palace", "Yongsan"]
    assert contains_answer("They met at the Yongsan presidential palace [1].", golds)
    assert contains_answer("At Yongsan.", golds)
    assert contains_answer("It lasted 30 minutes.", ["30-minute", "30"])
    assert not contains_answer("They met in Seoul.", golds)
    assert not contains_answer("anything", [])


@pytest.mark.unit
def test_rgb_scoring_with_nested_alternatives():
    assert rgb_correct("It was played in TAMPA, Florida [1].", "Tampa, Florida")
    assert not rgb_correct("It was played in Tampa.", "Tampa, Florida")
    date = [["July 21 2017", "Jul 21, 2017", "July 21, 2017"]]
    assert rgb_correct("Released on July 21, 2017.", date)
    assert not rgb_correct("Released in July 2017.", date)
    assert rgb_correct("Norway and Germany", ["Norway", "Germany"])  # every item of a list must occur
    assert not rgb_correct("Norway", ["Norway", "Germany"])
    assert rgb_correct("Jan 5 in Oslo", [["January 5", "Jan 5"], "Oslo"])


@pytest.mark.unit
def test_refusal_detection():
    refusal = "The articles do not say."
    assert detect_refusal(refusal, refusal_text=refusal)
    assert detect_refusal("The article does not mention the budget.")
    assert detect_refusal("Zuckerberg visited in 2014.", refused=True)
    assert not detect_refusal("Zuckerberg last visited South Korea in 2014 [1].", refusal_text=refusal)
    assert not detect_refusal("", refusal_text=refusal)


@pytest.mark.unit
def test_passage_relevance_by_gold_or_evidence_paragraph():
    question = Question("q", "When?", ["2014"], evidence=["p10"])
    assert passage_relevant(passage(0, "It happened in 2014.", (1, 2)), question)
    assert passage_relevant(passage(1, "Nothing here.", (9, 11)), question)
    assert not passage_relevant(passage(2, "Nothing here.", (11, 12)), question)
    by_text = Question("q", "Why?", ["demand"], evidence=["strong AI demand"])
    assert passage_relevant(passage(3, "Exports grew on Strong AI demand.", (1, 1)), by_text)


# ---------------------------------------------------------------- question loading


@pytest.mark.unit
def test_questions_load_with_unknown_keys_kept(tmp_path):
    path = write(tmp_path / "q.jsonl", "\n".join([
        json.dumps({"id": "a", "question": "Who?", "answers": ["Lee"], "evidence": "p3", "type": "name"}),
        "",
        json.dumps({"id": 2, "question": "Budget?", "answers": [], "unanswerable": True}),
    ]) + "\n")
    first, second = load_questions(path)
    assert (first.id, first.answers, first.evidence, first.unanswerable) == ("a", ["Lee"], ["p3"], False)
    assert first.extra == {"type": "name"}
    assert (second.id, second.unanswerable, second.answers) == ("2", True, [])


@pytest.mark.unit
@pytest.mark.parametrize(("text", "message"), [
    ('{"id": "a", "question": "Q?", "answers": ["x"]}\n{"id": "b", "question": ', "line 2: not valid JSON"),
    ('{"id": "a", "question": "Q?"}\n', "line 1: missing key(s): answers"),
    ('{"id": "a", "question": "  ", "answers": ["x"]}\n', "line 1: `question` must be non-empty"),
    ('{"id": "a", "question": "Q?", "answers": []}\n', "line 1: an answerable question needs at least one answer"),
    ('{"id": "a", "question": "Q?", "answers": [1]}\n', "line 1: `answers` must be a string or a list"),
    ('["a"]\n', "line 1: expected a JSON object"),
    ("\n\n", "no questions in the file"),
    ('{"id": "a", "question": "Q?", "answers": ["x"]}\n' * 2, "duplicate question id(s): a"),
])
def test_bad_question_files_name_the_file_and_line(tmp_path, text, message):
    path = write(tmp_path / "bad.jsonl", text)
    with pytest.raises(EvaluationError) as caught:
        load_questions(path)
    assert str(path) in str(caught.value) and message in str(caught.value)


@pytest.mark.unit
def test_missing_question_file_is_a_clear_error(tmp_path):
    with pytest.raises(EvaluationError, match="cannot read"):
        load_questions(tmp_path / "nope.jsonl")
    assert main(["eval", "--questions", str(tmp_path / "nope.jsonl"), "--out", str(tmp_path / "out")]) == 2


@pytest.mark.unit
def test_the_project_question_set_loads_with_its_fixed_split():
    questions = load_questions(QUESTIONS)
    assert len(questions) == 280 and sum(q.unanswerable for q in questions) == 154
    assert sum(q.extra.get("type") == "partial" for q in questions) == 6
    assert [q.split for q in questions] == ["test" if n % 3 == 0 else "tune" for n in range(1, 281)]
    assert [q.id for q in questions] == [f"q{n:02d}" for n in range(1, 281)]
    tune, test = select_split(questions, "tune"), select_split(questions, "test")
    assert (len(tune), len(test)) == (187, 93) and not {q.id for q in tune} & {q.id for q in test}
    assert select_split(questions, "all") == select_split(questions, None) == questions


@pytest.mark.unit
def test_split_errors(tmp_path):
    path = write(tmp_path / "q.jsonl", json.dumps({"id": "a", "question": "Q?", "answers": ["x"], "split": "dev"}))
    with pytest.raises(EvaluationError, match="line 1: `split` must be one of tune, test, got 'dev'"):
        load_questions(path)
    only_tune = [Question("a", "Q?", ["x"], split="tune")]
    with pytest.raises(EvaluationError, match="no question of the set is in the 'test' split"):
        select_split(only_tune, "test")
    assert main(["eval", "--benchmark", "rgb", "--split", "test", "--out", str(tmp_path / "o")]) == 2


@pytest.mark.integration
def test_eval_command_selects_a_split(seed_env, tmp_path):
    out = tmp_path / "out"
    assert main(["eval", "--retrieval-only", "--questions", str(QUESTIONS), "--split", "test", "--out", str(out)]) == 0
    table = json.loads((out / "retrieval.json").read_text())
    test_split = select_split(load_questions(QUESTIONS), "test")
    assert table["hybrid"]["answerable"] == sum(not q.unanswerable for q in test_split) == 41


@pytest.mark.integration
def test_eval_selects_queries_by_position(seed_env, tmp_path):
    from rag.evaluation.questions import EvaluationError, load_questions, select_positions

    questions = load_questions(QUESTIONS)
    assert [q.id for q in select_positions(questions, "3, 10-12")] == [questions[n].id for n in (3, 10, 11, 12)]
    for wrong, message in (("50-", "expected positions"), ("9-3", "runs backwards"), ("0-999", "past the last")):
        with pytest.raises(EvaluationError, match=message):
            select_positions(questions, wrong)
    out = tmp_path / "out"
    assert main(["eval", "--retrieval-only", "--questions", str(QUESTIONS), "--queries", "0-9", "--out", str(out)]) == 0
    table = json.loads((out / "retrieval.json").read_text())
    assert table["hybrid"]["answerable"] == sum(not q.unanswerable for q in questions[:10])
    assert main(["eval", "--questions", str(QUESTIONS), "--queries", "x"]) == 2  # a clear error, exit code 2


# ---------------------------------------------------------------- aggregation and outputs (no model)


def passage(chunk_id: int, text: str, paragraphs: tuple[int, int], rank: int = 1) -> Passage:
    return Passage(chunk_id, "a.txt", "Title", text, 0, len(text), paragraphs, rank, {"dense_similarity": 0.5})


def reply(question: Question, text: str, passages: list[Passage], refused: bool = False, cited: str = "",
          unsupported: list[str] | None = None) -> Answer:
    cited_id = next((p.chunk_id for p in passages if p.text == cited), -1)
    citations = [Citation(1, cited_id, "a.txt", "Title", cited, 0, 1, cited, 0.5, 1.0)] if cited else []
    return Answer(question.question, text, citations, refused, passages, unsupported or [],
                  {"total_s": 2.0, "ttft_s": 1.0 if not refused else 0.0}, {"generator": "tiny"}, question.question,
                  "generator" if refused else "", raw_text=text)


def hand_made_results() -> list[Result]:
    off, on = passage(0, "Nothing useful.", (3, 4), 1), passage(1, "He came in 2014.", (1, 1), 2)
    a1 = Question("a1", "When?", ["2014"], evidence=["p1"])
    a2 = Question("a2", "Where?", ["Seoul"])
    a3 = Question("a3", "Which day?", ["Thursday"])
    u1 = Question("u1", "Budget?", [], unanswerable=True)
    u2 = Question("u2", "How many?", [], unanswerable=True)
    answers = [
        (a1, reply(a1, "He last came in 2014 [1].", [off, on], cited="He came in 2014.")),
        (a2, reply(a2, "The articles do not say.", [off], refused=True)),
        (a3, reply(a3, "They met on Friday [1].", [off], cited="Nothing useful.", unsupported=["They met on Friday."])),
        (u1, reply(u1, "The articles do not say.", [off], refused=True)),
        (u2, reply(u2, "Ten people attended [1].", [off], cited="Nothing useful.")),
    ]
    return [Result(q, a, detect_refusal(a.text, a.refused, "The articles do not say."), a.passages) for q, a in answers]


@pytest.mark.unit
def test_metrics_from_hand_made_answers():
    metrics = compute_metrics(hand_made_results(), Settings())
    assert set(metrics) >= METRIC_KEYS
    assert metrics["answer_accuracy"] == pytest.approx(1 / 3, abs=1e-4)
    assert metrics["false_refusal_rate"] == pytest.approx(1 / 3, abs=1e-4)
    assert metrics["refusal_accuracy"] == 0.5
    assert metrics["citation_accuracy"] == 0.5  # a1's cited passage holds the gold, a3's does not
    assert metrics["unsupported_rate"] == pytest.approx(1 / 3, abs=1e-4)  # a3 of the three answered
    assert metrics["retrieval_hit_at_k"] == pytest.approx(1 / 3, abs=1e-4)
    assert metrics["mrr"] == pytest.approx(0.5 / 3, abs=1e-4)  # a1's relevant passage is second
    assert (metrics["retrieval_hit_at_1"], metrics["retrieval_hit_at_3"]) == (0.0, pytest.approx(1 / 3, abs=1e-4))
    # the first source shown: a1's citation puts its second passage, which holds the gold, before the first
    assert metrics["first_source_hit"] == pytest.approx(1 / 3, abs=1e-4)
    # had a1 been refused, its closest sentence (the one its reply drew on) holds 2014; a2 shows none, a3 no gold
    assert metrics["closest_if_refused"] == pytest.approx(1 / 3, abs=1e-4)
    assert [r.closest_if_refused_gold for r in hand_made_results()] == [True, False, False, None, None]
    assert metrics["right_replies_refused"] == 0.0  # a2's refusal replied nothing that holds Seoul
    assert (metrics["questions"], metrics["answerable"], metrics["unanswerable"]) == (5, 3, 2)
    assert (metrics["latency_p50_s"], metrics["ttft_p50_s"], metrics["generator"]) == (2.0, 1.0, "tiny")


@pytest.mark.unit
def test_a_right_reply_refused_is_told_from_a_wrong_one_refused():
    on = passage(1, "He came in 2014.", (1, 1), 1)
    when, again, budget = (Question("a1", "When?", ["2014"]), Question("a2", "When?", ["2014"]),
                           Question("u1", "Budget?", [], unanswerable=True))
    replies = [(when, reply(when, "He came in 2014 [1].", [on], refused=True)),
               (again, reply(again, "He came in 2015 [1].", [on], refused=True)),
               (budget, reply(budget, "It was 2014 [1].", [on], refused=True))]
    results = [Result(q, a, True, a.passages) for q, a in replies]
    assert [r.refused_right for r in results] == [True, False, None]
    metrics = compute_metrics(results, Settings())
    assert (metrics["false_refusal_rate"], metrics["right_replies_refused"]) == (1.0, 0.5)
    assert [r.to_dict()["refused_right"] for r in results] == [True, False, None]


@pytest.mark.integration  # the chart: matplotlib starts `fc-list` (a process) when it has no font cache yet
def test_outputs_are_written(tmp_path):
    results = hand_made_results()
    write_outputs(tmp_path, results, compute_metrics(results, Settings()), "project")
    assert all((tmp_path / name).is_file() for name in OUTPUTS)
    rows = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert [r["correct"] for r in rows] == [True, False, False, True, False]
    assert rows[0]["citations"] == [{"marker": 1, "chunk_id": 1}] and rows[0]["retrieved"] == [0, 1]
    report = (tmp_path / "report.md").read_text()
    assert "## Wrong answers (3)" in report and "**u2**" in report and "**a1**" not in report
    assert (tmp_path / "metrics.png").read_bytes().startswith(b"\x89PNG")


# ---------------------------------------------------------------- RGB preparation (no model)


RGB_ROWS = [
    {"id": 0, "query": "Where?", "answer": "Tampa", "positive": ["Played in Tampa.", "dup"], "negative": ["Other."]},
    {"id": 1, "query": "When?", "answer": [["Jan 5", "January 5"]], "positive": ["On Jan 5."], "negative": ["dup"]},
]


@pytest.mark.unit
def test_rgb_corpus_is_pooled_deduplicated_and_neutral(tmp_path):
    folder = tmp_path / "rgb"
    write(folder / "snippet-9999.txt", "stale\nold")
    snippets = rgb_snippets(RGB_ROWS)
    write_rgb_corpus(snippets, folder)
    files = sorted(folder.glob("*.txt"))
    assert len(snippets) == len(files) == 4  # "dup" once; the stale file removed
    texts = {f.read_text().split("\n", 1)[1].strip() for f in files}
    assert texts == {"Played in Tampa.", "dup", "Other.", "On Jan 5."}
    for f in files:
        title = f.read_text().split("\n", 1)[0]
        assert title.startswith("RGB snippet ") and f.name.startswith("snippet-")
        assert not any(word in (title + f.name).lower() for word in ("positive", "negative", "where", "when"))
    questions = rgb_questions(RGB_ROWS)
    assert questions[1].answers == ["Jan 5", "January 5"] and questions[1].rgb_answer == [["Jan 5", "January 5"]]


REJECT_ROWS = [  # made up here (the RGB data itself is never copied into the project)
    {"id": 0, "query": "Where was the final played?", "answer": "Tampa", "positive": ["The final was played in Tampa."],
     "negative": ["The 2020 final was in Miami."]},
    {"id": 1, "query": "When is the premiere?", "answer": [["Jan 5", "January 5"]],
     "positive": ["It premieres on Jan 5."], "negative": ["The trailer is out."]},
    {"id": 2, "query": "Who won the award?", "answer": "Alice Smith", "positive": ["Alice Smith won the award."],
     "negative": ["Bob lost the race.", "Alice Smith was praised by fans in Tampa."]},
    {"id": 3, "query": "Which city hosts the fair?", "answer": "Denver", "positive": ["Denver hosts the fair."],
     "negative": ["Bob lost the race."]},
]


@pytest.mark.integration
def test_negative_rejection_takes_the_answers_of_every_second_query_out_of_the_index(tmp_settings):
    from rag.retrieval import get_retriever

    tmp_settings = tmp_settings.replace(cache_dir=cache_with_models(tmp_settings.corpus_dir.parent))  # corpora go there
    path = write(tmp_settings.corpus_dir.parent / "rgb" / "en_fact.json",
                 "".join(json.dumps(row) + "\n" for row in REJECT_ROWS))
    questions, folder, note = prepare_rgb(path, tmp_settings, "0-3", "alternate")
    assert [(q.id, q.unanswerable) for q in questions] == [("0", True), ("1", False), ("2", True), ("3", False)]
    indexed = {chunk.raw.strip() for chunk in get_retriever(tmp_settings, folder).index.chunks}
    assert indexed == {"The 2020 final was in Miami.", "It premieres on Jan 5.", "The trailer is out.",
                       "Bob lost the race.", "Denver hosts the fair."}  # no positive, nor any answer, of 0 and 2
    assert "2 of 4 queries lose their 3 answering snippets" in note
    normal, normal_folder, _ = prepare_rgb(path, tmp_settings, "1-2")
    assert [(q.id, q.unanswerable) for q in normal] == [("1", False), ("2", False)] and normal_folder != folder
    everything = {chunk.raw.strip() for chunk in get_retriever(tmp_settings, normal_folder).index.chunks}
    assert "Alice Smith won the award." in everything and len(everything) == 8
    with pytest.raises(EvaluationError, match="--reject: expected one of alternate, all"):
        prepare_rgb(path, tmp_settings, "0-3", "some")


@pytest.mark.unit
def test_rgb_file_errors(tmp_path):
    with pytest.raises(EvaluationError, match="RGB data not found"):
        load_rgb(tmp_path)
    write(tmp_path / "en_fact.json", '{"id": 0}\n')
    with pytest.raises(EvaluationError, match="line 1: expected an object with `query` and `answer`"):
        load_rgb(tmp_path)


# ---------------------------------------------------------------- real models


@pytest.fixture
def seed_env(seed_settings, monkeypatch):
    """`rag` commands in this test see the seed corpus copy and its own index folder."""
    monkeypatch.setenv("RAG_INDEX_DIR", str(seed_settings.index_dir))
    monkeypatch.setenv("RAG_CORPUS_DIR", str(seed_settings.corpus_dir))
    if TEST_GENERATOR:
        monkeypatch.setenv("RAG_GENERATOR", TEST_GENERATOR)
    return seed_settings


@pytest.mark.integration
def test_retrieval_only_comparison(seed_settings):
    questions = load_questions(QUESTIONS)[:10]
    for settings in (seed_settings, seed_settings.replace(dense=False), seed_settings.replace(bm25=False)):
        metrics = retrieval_metrics(questions, settings)
        assert metrics["answerable"] == 10
        assert 0 <= metrics["retrieval_hit_at_1"] <= metrics["retrieval_hit_at_3"] <= metrics["retrieval_hit_at_5"] <= 1


@pytest.mark.integration
def test_retrieval_only_command(seed_env, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["eval", "--retrieval-only", "--questions", str(QUESTIONS), "--limit", "5", "--out", str(out)]) == 0
    table = json.loads((out / "retrieval.json").read_text())
    assert set(table) == {"hybrid", "dense", "bm25", "best_relevance"} and "| bm25 |" in capsys.readouterr().out
    assert table["best_relevance"]["answerable"]["questions"] == 5


@pytest.mark.integration
def test_min_relevance_separates_off_topic_from_answerable_questions(seed_settings):
    ranges = relevance_ranges(load_questions(QUESTIONS), seed_settings)
    assert set(ranges) == {"answerable", "unanswerable", "off-topic"}
    assert ranges["off-topic"]["max"] < calibration(seed_settings).min_relevance <= ranges["answerable"]["min"]


@pytest.fixture(scope="module")
def default_seed(tmp_path_factory):
    """The default configuration (the default embedder included) over a copy of the seed article, indexed once
    for the floor test and the quality gate."""
    import shutil

    tmp = tmp_path_factory.mktemp("default-seed")
    shutil.copytree(SEED_CORPUS, tmp / "corpus", ignore=shutil.ignore_patterns("eval"))
    return make_settings(tmp, embedder=DEFAULT_EMBEDDER)


@pytest.mark.integration
def test_the_default_embedders_floor_separates_them_too(default_seed):
    ranges = relevance_ranges(load_questions(QUESTIONS), default_seed)
    assert ranges["off-topic"]["max"] < calibration(default_seed).min_relevance <= ranges["answerable"]["min"]


@pytest.mark.integration
@pytest.mark.slow
def test_eval_command_writes_all_outputs(seed_env, tmp_path, capsys):
    questions = [
        {"id": "s1", "question": "When had Zuckerberg last been to South Korea before this trip?", "answers": ["2014"],
         "evidence": "p1"},
        {"id": "s2", "question": "In which city is the Yongsan Presidential Palace?", "answers": ["Seoul"]},
        {"id": "s3", "question": "What is the recipe for banana bread?", "answers": [], "unanswerable": True},
    ]
    path = write(tmp_path / "small.jsonl", "".join(json.dumps(q) + "\n" for q in questions))
    out = tmp_path / "out"
    assert main(["eval", "--questions", str(path), "--out", str(out)]) == 0
    assert all((out / name).is_file() for name in OUTPUTS)
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) >= METRIC_KEYS
    assert (metrics["questions"], metrics["answerable"], metrics["unanswerable"]) == (3, 2, 1)
    assert len((out / "results.jsonl").read_text().splitlines()) == 3
    assert "answer_accuracy" in capsys.readouterr().out


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.skipif(not RGB_DATA.is_file(), reason="the RGB data is not beside the repository")
def test_rgb_smoke(seed_env, tmp_path):
    out = tmp_path / "rgb"
    assert main(["eval", "--benchmark", "rgb", "--benchmark-path", str(RGB_DATA), "--limit", "3",
                 "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["questions"] == 3 and set(metrics) >= METRIC_KEYS


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.timeout(3600)  # 93 questions: about 6 minutes on an idle machine, far more on a shared one
def test_quality_gate(default_seed, tmp_path):
    """The default configuration (the default embedder included) over a copy of the seed article."""
    evaluator = QAEvaluator(select_split(load_questions(QUESTIONS), "test"), default_seed)
    metrics = evaluator(tmp_path / "gate")
    print(json.dumps({"test split": metrics}, indent=2))
    assert {r.answer.verdict.get("decided_by") for r in evaluator.results if r.answer.verdict} == {"decision"}
    assert 0 < metrics["settled_without_judge"] < 1  # the decision's screen settles some replies, the judge the rest
    failures = [f"{key} {metrics[key]:.3f} < {floor:.3f}" for key, floor in (
        ("answer_accuracy", MIN_ANSWER_ACCURACY), ("retrieval_hit_at_k", MIN_RETRIEVAL_HIT_AT_K),
        ("refusal_accuracy", MIN_REFUSAL_ACCURACY)) if metrics[key] < floor]
    assert not failures, f"test split below the gate: {'; '.join(failures)} (details in {tmp_path / 'gate'})"
    assert metrics["words_altered"] == 0, "a checked answer changed the words of its reply (see results.jsonl)"
