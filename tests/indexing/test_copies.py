"""Near-copies of passages (rag/indexing/copies.py): a wire story's reprints folded, different reports of the same
story kept apart, short texts, stable signatures; and the build's minhash.npy, copies.npy and manifest entries, with
the carry-over of an incremental build."""

import json

import numpy as np
import pytest

from rag.calibration import COPY_PERMS, COPY_THRESHOLD
from rag.indexing.build import StaleIndex, build_index, current_build, load_index
from rag.indexing.copies import (
    EMPTY,
    WINDOW,
    article_copies,
    band_layout,
    copies_summary,
    copy_groups,
    signature,
    signatures,
)
from rag.ingest.chunking import chunk_document
from rag.types import Document
from tests.conftest import write


def paragraphs(*lines: str) -> str:
    return "\n".join(lines) + "\n"


WIRE = paragraphs(
    "Harbor bridge closed after cracks found",
    "Engineers closed the Harbor Street bridge to all traffic on Tuesday after an inspection found cracks in "
    "two of its steel support beams, the city's transport department said.",
    "The 84-year-old bridge carries about 31,000 vehicles a day between the port district and the city "
    "centre. Commuters were told to expect delays of up to 40 minutes while traffic is sent over the Mill "
    "Road crossing.",
    '"We will not reopen the bridge until we are certain it is safe," transport commissioner Dana Whitfield '
    'told reporters at the scene. "Nobody should take a risk with a structure of this age."',
    "The cracks were found during a routine ultrasonic survey that the department carries out every two "
    "years. Inspectors measured one crack at nearly 12 centimetres long, close to a joint that was repaired "
    "in 2009.",
    "The city council approved a 46 million dollar renovation of the bridge last spring, but work was not due"
    " to begin until 2026. Whitfield said the department would now ask the council to bring the schedule "
    "forward.",
    "Ferry operators said they would add extra crossings from Wednesday morning. The port authority warned "
    "that freight deliveries could also be disrupted, since heavy lorries are barred from the older Mill Road"
    " crossing.",
    "Local business owners said the closure came at a bad time, weeks before the holiday shopping season. "
    '"Half of my customers come over that bridge," said Marco Ruiz, who runs a bakery near the port.',
    "A full engineering report is expected within three weeks. Until then, pedestrians and cyclists will also"
    " be kept off the bridge, the department said.",
)

# The same wire story as two other outlets ran it: a credit line, a dateline, house style, a few words changed, one
# sentence cut, a closing line.
REPRINT = paragraphs(
    "Harbor bridge shut after cracks discovered",
    "By Staff and wire reports",
    "PORT CITY (AP) — Engineers shut the Harbor Street bridge to all traffic on Tuesday after an inspection "
    "found cracks in two of its steel support beams, the city's transport department said.",
    "The 84-year-old bridge carries about 31,000 vehicles a day between the port district and the city "
    "center. Commuters were told to expect delays of up to 40 minutes while traffic is diverted over the Mill"
    " Road crossing.",
    '"We will not reopen the bridge until we are certain it is safe," transport commissioner Dana Whitfield '
    'told reporters at the scene. "Nobody should take a risk with a structure of this age."',
    "The cracks were found during a routine ultrasonic survey that the department carries out every two "
    "years. Inspectors measured one crack at nearly 12 centimeters long, close to a joint that was repaired "
    "in 2009.",
    "The city council approved a $46 million renovation of the bridge last spring, but work was not due to "
    "begin until 2026. Whitfield said the department would now ask the council to bring the schedule forward.",
    "Ferry operators said they would add extra crossings from Wednesday morning. The port authority warned "
    "that freight deliveries could also be disrupted, since heavy trucks are barred from the older Mill Road "
    "crossing.",
    "Local business owners said the closure came at a bad time, weeks before the holiday shopping season.",
    "A full engineering report is expected within three weeks. Until then, pedestrians and cyclists will also"
    " be kept off the bridge, the department said.",
    "Copyright The Associated Press. All rights reserved.",
)

REPRINT_2 = paragraphs(
    "Cracks force closure of Harbor Street bridge",
    "PORT CITY — Engineers closed the Harbor Street bridge to all traffic Tuesday after an inspection found "
    "cracks in two of its steel support beams, the city's transport department said.",
    "The 84-year-old bridge carries about 31,000 vehicles a day between the port district and the city "
    "centre. Commuters were told to expect delays of up to 40 minutes while traffic is sent over the Mill "
    "Road crossing.",
    '"We will not reopen the bridge until we are certain it is safe," transport commissioner Dana Whitfield '
    'told reporters. "Nobody should take a risk with a structure of this age."',
    "The cracks were found during a routine ultrasonic survey that the department carries out every two "
    "years. Inspectors measured one crack at nearly 12 centimetres long, close to a joint that was repaired "
    "in 2009.",
    "The city council approved a 46 million dollar renovation of the bridge last spring, but work was not due"
    " to start until 2026. Whitfield said the department would now ask the council to bring the schedule "
    "forward.",
    "Ferry operators said they would add extra crossings from Wednesday morning. The port authority warned "
    "that freight deliveries could also be disrupted, since heavy lorries are barred from the older Mill Road"
    " crossing.",
    "Local business owners said the closure came at a bad time, weeks before the holiday shopping season. "
    '"Half of my customers come over that bridge," said Marco Ruiz, who runs a bakery near the port.',
    "A full engineering report is expected within three weeks. Until then, pedestrians and cyclists will also"
    " be kept off the bridge.",
)

# Another outlet's own report of the same story: the same facts, figures and quote, in its own words.
OTHER_REPORT = paragraphs(
    "Commuters face long detours as Harbor Street bridge shuts",
    "Drivers heading into the city centre faced long queues on Tuesday evening after officials abruptly shut "
    "the Harbor Street bridge, one of the busiest crossings in the region.",
    "An inspection this week turned up cracks in two steel beams that hold up the span, which opened 84 years"
    " ago and is used by roughly 31,000 vehicles each day.",
    '"We will not reopen the bridge until we are certain it is safe," transport commissioner Dana Whitfield '
    "said, adding that she could not say how long the closure would last.",
    "Traffic is being pushed onto the narrower Mill Road crossing, where our reporter saw lines of cars "
    "stretching back more than a kilometre at rush hour. Lorries are not allowed on that crossing at all.",
    "Structural engineers not involved in the inspection said cracks in beams of that era are often caused by"
    " metal fatigue. One of the cracks is close to a joint patched up in 2009, according to city records.",
    "Councillors had already set aside 46 million dollars to overhaul the bridge, though the work was planned"
    " for 2026. Several said on Tuesday they would push to start sooner.",
    "Shop owners in the port district fear a slump in trade before the holidays, and the ferry company is "
    "adding boats from Wednesday to ease the pressure.",
)

OTHER_STORY = paragraphs(
    "Budget plan",
    "The government will invest 909 billion won in everyday AI. The plan began in June and covers schools, "
    "clinics and",
    "small firms, the ministry said in a statement.",
)


def _chunks(doc_id: str, text: str):
    title, _, body = text.partition("\n")
    document = Document(doc_id=doc_id, title=title, text=text, path=doc_id, sha256=doc_id, body_start=len(title) + 1)
    return chunk_document(document, lambda t: len(t.split()), 60, 12)


def _rows(*articles: tuple[str, str]) -> tuple[list[str], list[str]]:
    chunks = [c for doc_id, text in articles for c in _chunks(doc_id, text)]
    return [c.doc_id for c in chunks], [c.text for c in chunks]


@pytest.mark.unit
def test_reprints_fold_and_name_each_other():
    doc_ids, texts = _rows(("wire", WIRE), ("reprint", REPRINT), ("reprint2", REPRINT_2), ("other", OTHER_STORY))
    groups = copy_groups(signatures(texts), COPY_THRESHOLD)
    assert groups.dtype == np.int64 and groups.shape == (len(texts),)
    assert all(groups[row] <= row for row in range(len(groups)))  # a group is named by its smallest row
    wire_groups = {int(g) for d, g in zip(doc_ids, groups, strict=True) if d == "wire"}
    for copy in ("reprint", "reprint2"):
        shared = [int(g) in wire_groups for d, g in zip(doc_ids, groups, strict=True) if d == copy]
        assert np.mean(shared) >= 0.6, (copy, shared)
    named = article_copies(doc_ids, groups, sizes=[len(t) for t in texts])
    assert named == {"wire": ["reprint", "reprint2"], "reprint": ["reprint2", "wire"],
                     "reprint2": ["reprint", "wire"]}
    summary = copies_summary(groups)
    assert summary["groups"] >= 3 and summary["folded_passages"] >= 9


@pytest.mark.unit
def test_another_report_of_the_same_story_is_not_folded():
    """Same story, figures and a shared quote, other words: every passage stays apart from the wire's."""
    doc_ids, texts = _rows(("wire", WIRE), ("other", OTHER_REPORT))
    minhashes = signatures(texts)
    wire = [row for row, d in enumerate(doc_ids) if d == "wire"]
    other = [row for row, d in enumerate(doc_ids) if d == "other"]
    closest = max(float(np.mean(minhashes[a] == minhashes[b])) for a in wire for b in other)
    assert 0 < closest < COPY_THRESHOLD  # related (the quote), but far from a copy
    groups = copy_groups(minhashes, COPY_THRESHOLD)
    assert not {int(groups[r]) for r in wire} & {int(groups[r]) for r in other}
    assert article_copies(doc_ids, groups) == {}


@pytest.mark.unit
def test_empty_and_short_texts():
    empty = signature("")
    assert empty.dtype == np.uint32 and empty.shape == (COPY_PERMS,) and np.all(empty == EMPTY)
    assert np.all(signature("  — , .") == EMPTY)  # no words
    short = signatures(["Breaking", "Breaking news", "breaking NEWS!", "", "", "Sports"])
    assert short.shape == (6, COPY_PERMS) and not np.any(short[:3] == EMPTY)
    groups = copy_groups(short, COPY_THRESHOLD)
    # the same two words are the same passage; texts with no words are never grouped, not even with each other
    assert groups.tolist() == [0, 1, 1, 3, 4, 5]
    assert copy_groups(np.zeros((0, COPY_PERMS), np.uint32), COPY_THRESHOLD).shape == (0,)
    assert copy_groups(short[:1], COPY_THRESHOLD).tolist() == [0]
    assert copies_summary(np.zeros(0, np.int64)) == {"folded_passages": 0, "groups": 0}
    assert article_copies([], np.zeros(0, np.int64)) == {}


@pytest.mark.unit
def test_signatures_are_stable():
    """The hash family is pinned: the same text gives the same values in any process, build or datasketch default
    (signatures are carried from one build to the next and compared with new ones)."""
    from datasketch import MinHash

    text = "Engineers closed the Harbor Street bridge to all traffic on Tuesday."
    first = signature(text)
    assert np.array_equal(first, signature(text))
    assert np.array_equal(first, signatures([text, "x"])[0])
    fresh = MinHash(num_perm=COPY_PERMS, seed=1, scheme="affine32")
    words = ["engineers", "closed", "the", "harbor", "street", "bridge", "to", "all", "traffic", "on", "tuesday"]
    fresh.update_batch([" ".join(words[i:i + 3]).encode() for i in range(len(words) - 2)])
    assert np.array_equal(first, fresh.hashvalues)
    assert first[:4].tolist() == [44139629, 346658302, 125439377, 808320649]
    assert np.array_equal(signature("Engineers CLOSED the Harbor-Street bridge, to all traffic on Tuesday!"), first)


@pytest.mark.unit
def test_candidates_are_minhashlsh_candidates():
    """The numpy banding groups exactly what confirming MinHashLSH's candidates would (buckets of up to WINDOW + 1)."""
    from datasketch import LeanMinHash, MinHashLSH

    from rag.indexing.copies import LSH_WEIGHTS, SCHEME, SEED, candidate_pairs

    rng = np.random.default_rng(7)
    rows = rng.integers(0, 2**32 - 1, size=(400, COPY_PERMS), dtype=np.uint32)
    for copy in range(200, 300):  # near-copies of rows 0-99, a quarter to a half of the values changed
        changed = rng.random(COPY_PERMS) < rng.uniform(0.25, 0.5)
        rows[copy] = np.where(changed, rows[copy], rows[copy - 200])
    lsh = MinHashLSH(threshold=COPY_THRESHOLD, num_perm=COPY_PERMS, weights=LSH_WEIGHTS)
    assert (lsh.b, lsh.r) == band_layout(COPY_THRESHOLD, COPY_PERMS)
    sketches = [LeanMinHash(seed=SEED, hashvalues=row, scheme=SCHEME) for row in rows]
    for key, sketch in enumerate(sketches):
        lsh.insert(key, sketch)
    expected = {(min(a, b), max(a, b)) for a, sketch in enumerate(sketches) for b in lsh.query(sketch) if a != b}
    found = {(min(a, b), max(a, b)) for first, second in candidate_pairs(rows, COPY_THRESHOLD)
             for a, b in zip(first.tolist(), second.tolist(), strict=True)}
    assert found == expected and len(found) > 50


@pytest.mark.unit
def test_groups_join_through_pairs_and_big_buckets():
    rng = np.random.default_rng(3)
    base = rng.integers(0, 2**32 - 1, size=COPY_PERMS, dtype=np.uint32)
    rows = rng.integers(0, 2**32 - 1, size=(60, COPY_PERMS), dtype=np.uint32)
    rows[10:10 + 3 * WINDOW] = base  # one bucket far larger than WINDOW: its rows still make one group
    chain = rows[50].copy()
    for step, row in enumerate((52, 54, 56)):  # each 70% like the one before, less like the first
        chain = np.where(np.arange(COPY_PERMS) % 10 < 7 - step, chain, rows[row])
        rows[row] = chain
    groups = copy_groups(rows, COPY_THRESHOLD)
    assert set(groups[10:10 + 3 * WINDOW].tolist()) == {10}
    assert groups[[52, 54]].tolist() == [50, 50]
    assert groups[0] == 0 and groups[59] == 59


@pytest.mark.unit
def test_article_copies_is_a_share_of_the_text():
    """An excerpt is a copy of the full report, not the other way round; a shared credit line is no copy."""
    doc_ids = ["full"] * 5 + ["excerpt"] * 2 + ["short"] * 2 + ["other"] * 2
    groups = np.array([0, 1, 2, 3, 4, 0, 1, 7, 8, 9, 8])  # the excerpt: two of five; "short" and "other": a credit
    assert article_copies(doc_ids, groups) == {"excerpt": ["full"], "short": ["other"], "other": ["short"]}
    sizes = [500] * 7 + [500, 40, 500, 40]
    assert article_copies(doc_ids, groups, sizes=sizes) == {"excerpt": ["full"]}
    assert article_copies(doc_ids, groups, share=0.4) == {"excerpt": ["full"], "full": ["excerpt"],
                                                          "short": ["other"], "other": ["short"]}


# ---------------------------------------------------------------- in a build


def _copied(index) -> dict[str, set[int]]:
    groups: dict[str, set[int]] = {}
    for chunk in index.chunks:
        groups.setdefault(chunk.doc_id, set()).add(int(index.copy_group[chunk.id]))
    return groups


@pytest.mark.integration
def test_build_writes_copies_and_keeps_them_incrementally(tmp_settings):
    corpus = tmp_settings.corpus_dir
    for name, text in {"wire": WIRE, "reprint": REPRINT, "other": OTHER_REPORT, "budget": OTHER_STORY}.items():
        write(corpus / f"{name}.txt", text)
    build_index([corpus], tmp_settings.index_dir, tmp_settings, progress=False)
    build = current_build(tmp_settings.index_dir)
    manifest = json.loads((build / "manifest.json").read_text())
    index = load_index(tmp_settings.index_dir)
    rows = len(index.chunks)
    minhashes = np.load(build / "minhash.npy", allow_pickle=False)
    assert minhashes.dtype == np.uint32 and minhashes.shape == (rows, COPY_PERMS)
    assert np.array_equal(minhashes, signatures([c.text for c in index.chunks]))
    saved = np.load(build / "copies.npy", allow_pickle=False)
    assert saved.dtype == np.int64 and np.array_equal(saved, index.copy_group)
    copies = manifest["copies"]
    assert (copies["threshold"], copies["perms"], copies["shingle_words"]) == (COPY_THRESHOLD, COPY_PERMS, 3)
    assert copies["groups"] >= 1 and copies["folded_passages"] >= 2 * copies["groups"]
    documents = manifest["documents"]
    assert documents["wire.txt"]["copies"] == ["reprint.txt"] and documents["reprint.txt"]["copies"] == ["wire.txt"]
    assert documents["other.txt"]["copies"] == [] and documents["budget.txt"]["copies"] == []
    groups = _copied(index)
    assert groups["wire.txt"] & groups["reprint.txt"]
    assert not groups["other.txt"] & groups["wire.txt"] and not groups["budget.txt"] & groups["wire.txt"]

    write(corpus / "reprint2.txt", REPRINT_2)  # one more copy: the others' signatures are carried over
    report = build_index([corpus], tmp_settings.index_dir, tmp_settings, progress=False)
    assert report.added == ["reprint2.txt"] and report.embedded_chunks < rows
    again = load_index(tmp_settings.index_dir)
    documents = again.documents
    assert documents["wire.txt"]["copies"] == ["reprint.txt", "reprint2.txt"]
    assert documents["reprint2.txt"]["copies"] == ["reprint.txt", "wire.txt"]
    assert documents["other.txt"]["copies"] == []
    groups = _copied(again)
    assert groups["wire.txt"] & groups["reprint.txt"] & groups["reprint2.txt"]
    carried = np.load(again.folder / "minhash.npy", allow_pickle=False)
    assert np.array_equal(carried, signatures([c.text for c in again.chunks]))


@pytest.mark.integration
def test_a_build_from_before_copies(tmp_settings):
    """A build without minhash.npy and copies.npy loads with every row its own group; the next build makes the
    carried-over documents' signatures from their texts."""
    corpus = tmp_settings.corpus_dir
    write(corpus / "wire.txt", WIRE)
    write(corpus / "other.txt", OTHER_REPORT)
    build_index([corpus], tmp_settings.index_dir, tmp_settings, progress=False)
    build = current_build(tmp_settings.index_dir)
    manifest = json.loads((build / "manifest.json").read_text())
    del manifest["copies"]
    for entry in manifest["documents"].values():
        del entry["copies"]
    (build / "manifest.json").write_text(json.dumps(manifest))
    (build / "minhash.npy").unlink()
    (build / "copies.npy").unlink()
    old = load_index(tmp_settings.index_dir)
    assert np.array_equal(old.copy_group, np.arange(len(old.chunks)))

    write(corpus / "reprint.txt", REPRINT)
    report = build_index([corpus], tmp_settings.index_dir, tmp_settings, progress=False)
    assert not report.rebuilt and report.added == ["reprint.txt"]  # the old build stays usable: no full rebuild
    index = load_index(tmp_settings.index_dir)
    assert index.documents["wire.txt"]["copies"] == ["reprint.txt"]
    groups = _copied(index)
    assert groups["wire.txt"] & groups["reprint.txt"] and not groups["other.txt"] & groups["wire.txt"]
    made = np.load(index.folder / "minhash.npy", allow_pickle=False)
    assert np.array_equal(made, signatures([c.text for c in index.chunks]))

    np.save(index.folder / "copies.npy", np.arange(3, dtype=np.int64))  # damaged: not one group per chunk
    with pytest.raises(StaleIndex, match="damaged"):
        load_index(tmp_settings.index_dir)
