"""The support bot's retrieval: every backend agrees with exact numpy search, survives save/load, and says what is
wrong with bad input."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from lmadapt.apps.vectors import LexicalIndex, build_index, load_index, save_index
from lmadapt.errors import LmadaptError

# Qdrant's local mode searches exactly anyway and warns that the exact flag has no effect there.
pytestmark = pytest.mark.filterwarnings("ignore:Local mode performs exact:UserWarning")


def unit_rows(rows: int, dim: int, seed: int) -> np.ndarray:
    vectors = np.random.default_rng(seed).standard_normal((rows, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def corpus() -> np.ndarray:
    return unit_rows(300, 16, seed=0)


@pytest.fixture(scope="module")
def queries() -> np.ndarray:
    return unit_rows(20, 16, seed=1)


def brute_force(corpus: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    return np.argsort(-(queries.astype(np.float64) @ corpus.T.astype(np.float64)), axis=1)[:, :k]


def test_numpy_search_is_exact_and_best_first(corpus, queries):
    similarities, ids = build_index(corpus, "numpy").search(queries, k=7)
    assert ids.dtype == np.int64 and similarities.dtype == np.float32 and ids.shape == (20, 7)
    np.testing.assert_array_equal(ids, brute_force(corpus, queries, 7))
    np.testing.assert_allclose(similarities, np.take_along_axis(queries @ corpus.T, ids, axis=1), rtol=1e-6)
    assert (np.diff(similarities, axis=1) <= 0).all()


def test_numpy_search_in_batches_gives_the_same_answer(corpus, queries, monkeypatch):
    whole = build_index(corpus, "numpy").search(queries, k=5)
    monkeypatch.setattr("lmadapt.apps.vectors._SCORES_PER_BATCH", 3 * len(corpus))  # 3 queries per batch
    batched = build_index(corpus, "numpy").search(queries, k=5)
    np.testing.assert_array_equal(batched[1], whole[1])


@pytest.mark.parametrize("kind", ["faiss-flat", "qdrant"])
def test_exact_backends_match_numpy(kind, corpus, queries):
    index = build_index(corpus, kind, qdrant_path=":memory:", qdrant_exact=True)
    expected_similarities, expected_ids = build_index(corpus, "numpy").search(queries, k=5)
    similarities, ids = index.search(queries, k=5)
    np.testing.assert_array_equal(ids, expected_ids)
    np.testing.assert_allclose(similarities, expected_similarities, rtol=1e-5)
    assert index.kind == kind and len(index) == len(corpus)


def test_hnsw_recall_at_5_is_at_least_095():
    corpus, queries = unit_rows(2000, 64, seed=2), unit_rows(200, 64, seed=3)
    _, ids = build_index(corpus, "faiss-hnsw").search(queries, k=5)
    truth = brute_force(corpus, queries, 5)
    recall = np.mean([len(set(found) & set(true)) / 5 for found, true in zip(ids, truth)])
    assert recall >= 0.95


def test_auto_picks_numpy_for_small_sets_and_hnsw_above_the_threshold(corpus):
    assert build_index(corpus).kind == "numpy"
    assert build_index(corpus, faiss_above=100).kind == "faiss-hnsw"


@pytest.mark.parametrize("kind", ["numpy", "faiss-flat", "faiss-hnsw", "qdrant"])
def test_fewer_entries_than_k_pad_with_minus_one_and_minus_inf(kind, corpus, queries):
    index = build_index(corpus[:3], kind, qdrant_path=":memory:")
    similarities, ids = index.search(queries[:2], k=5)
    assert sorted(ids[0, :3]) == [0, 1, 2] and (ids[:, 3:] == -1).all()
    assert np.isfinite(similarities[:, :3]).all() and (similarities[:, 3:] == -np.inf).all()


@pytest.mark.parametrize("kind", ["numpy", "faiss-flat", "faiss-hnsw", "qdrant"])
def test_added_rows_take_the_next_ids(kind, corpus):
    index = build_index(corpus[:10], kind, qdrant_path=":memory:")
    index.add(corpus[10:12])
    assert len(index) == 12
    _, ids = index.search(corpus[10:12], k=1)
    assert ids[:, 0].tolist() == [10, 11]


@pytest.mark.parametrize("kind", ["numpy", "faiss-flat", "faiss-hnsw"])
def test_save_load_round_trip_gives_identical_results(kind, corpus, queries, tmp_path):
    index = build_index(corpus, kind)
    manifest = save_index(index, tmp_path)
    assert json.loads((tmp_path / "index.json").read_text()) == manifest
    assert (manifest["kind"], manifest["dim"], manifest["rows"]) == (kind, 16, 300)
    loaded = load_index(tmp_path)
    assert loaded.kind == kind and loaded.settings == index.settings
    for before, after in zip(index.search(queries, k=5), loaded.search(queries, k=5)):
        np.testing.assert_array_equal(after, before)


def test_qdrant_restart_reuses_the_collection_without_uploading_again(corpus, queries, tmp_path, monkeypatch):
    storage = str(tmp_path / "qdrant")
    index = build_index(corpus, "qdrant", qdrant_path=storage, qdrant_exact=True)
    before = index.search(queries, k=5)
    save_index(index, tmp_path / "saved")
    index.close()

    def no_upload(*args, **kwargs):
        raise AssertionError("uploaded again")

    monkeypatch.setattr("qdrant_client.QdrantClient.upload_collection", no_upload)
    loaded = load_index(tmp_path / "saved", qdrant_path=storage)
    assert loaded.collection == index.collection and len(loaded) == len(corpus)
    for expected, got in zip(before, loaded.search(queries, k=5)):
        np.testing.assert_array_equal(got, expected)
    loaded.close()


def test_qdrant_uploads_into_a_fresh_store(corpus, queries, tmp_path):
    index = build_index(corpus, "qdrant", qdrant_path=":memory:", qdrant_exact=True)
    save_index(index, tmp_path)
    loaded = load_index(tmp_path, qdrant_path=str(tmp_path / "elsewhere"))
    np.testing.assert_array_equal(loaded.search(queries, k=3)[1], index.search(queries, k=3)[1])
    loaded.close()


def test_bm25_finds_the_document_sharing_rare_words():
    questions = [
        "How do I reset my card PIN?",
        "My transfer to another bank is still pending",
        "Why was my card declined at a shop abroad?",
        "What exchange rate do you use for euros?",
    ]
    index = LexicalIndex.build(questions)
    scores, ids = index.search(["card declined in a shop in Spain", "euros exchange"], k=6)
    assert ids[:, 0].tolist() == [2, 3]
    assert scores[0, 0] > scores[0, 1] and ids.shape == (2, 6)
    assert (ids[:, 4:] == -1).all() and (scores[:, 4:] == -np.inf).all()


def test_bm25_save_load_round_trip(tmp_path):
    index = LexicalIndex.build(["reset my card PIN", "pending transfer", "card declined abroad"])
    manifest = index.save(tmp_path)
    assert manifest["kind"] == "bm25" and manifest["rows"] == 3
    loaded = LexicalIndex.load(tmp_path)
    for before, after in zip(index.search(["declined card"], k=3), loaded.search(["declined card"], k=3)):
        np.testing.assert_array_equal(after, before)


def test_bm25_stemming_asked_for_without_pystemmer_says_how_to_get_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "Stemmer", None)  # makes `import Stemmer` fail
    with pytest.raises(LmadaptError, match="PyStemmer") as error:
        LexicalIndex.build(["a text"], stem=True)
    assert "stem=False" in str(error.value)
    assert LexicalIndex.build(["a text"]).settings["stem"] is False


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            lambda: build_index(unit_rows(5, 4, 0), "fiass-hnsw"),
            "unknown index kind 'fiass-hnsw'.*did you mean 'faiss-hnsw'",
        ),
        (lambda: build_index(np.ones(4, np.float32)), r"2-D numeric array.*shape \(4,\).*v\[None, :\]"),
        (lambda: build_index(np.array([[1.0, np.nan], [0.0, 1.0]])), r"NaN or infinite values in 1 row.*\[0\]"),
        (lambda: build_index(unit_rows(5, 4, 0)).search(unit_rows(2, 3, 0), k=1), "3 dimensions but.*4-dimensional"),
        (lambda: build_index(unit_rows(5, 4, 0)).add(unit_rows(2, 3, 0)), "3 dimensions but.*4-dimensional"),
        (
            lambda: build_index(unit_rows(5, 4, 0), "faiss-flat").search(unit_rows(1, 4, 0), k=0),
            "k must be.*>= 1, got 0",
        ),
        (lambda: build_index(unit_rows(5, 4, 0), "qdrant"), "exactly one of qdrant_url and qdrant_path"),
        (lambda: LexicalIndex.build("one text"), "list of strings.*\\[message\\]"),
        (lambda: LexicalIndex.build([]), "no texts to index"),
    ],
)
def test_bad_input_says_what_and_how_to_fix(call, message):
    with pytest.raises(LmadaptError, match=f"(?s){message}"):
        call()


def test_loading_a_missing_folder_says_so(tmp_path):
    with pytest.raises(LmadaptError, match=r"(?s)nowhere: no saved index here \(index.json is missing\).*fix:"):
        load_index(tmp_path / "nowhere")


def test_loading_a_changed_or_missing_file_says_which(corpus, tmp_path):
    index = build_index(corpus[:10], "faiss-hnsw")
    save_index(index, tmp_path)
    np.save(tmp_path / "vectors.npy", corpus[:10] * 2)
    with pytest.raises(LmadaptError, match="(?s)vectors.npy changed since the index was saved.*save the index again"):
        load_index(tmp_path)
    save_index(index, tmp_path)
    (tmp_path / "index.faiss").unlink()
    with pytest.raises(LmadaptError, match="index.faiss is missing"):
        load_index(tmp_path)


def test_loading_the_wrong_kind_of_index_names_the_right_loader(tmp_path):
    LexicalIndex.build(["one text"]).save(tmp_path / "lexical")
    save_index(build_index(unit_rows(3, 4, 0)), tmp_path / "vectors")
    with pytest.raises(LmadaptError, match="(?s)holds a 'bm25' index.*LexicalIndex.load"):
        load_index(tmp_path / "lexical")
    with pytest.raises(LmadaptError, match="(?s)holds a 'numpy' index.*load_index"):
        LexicalIndex.load(tmp_path / "vectors")
