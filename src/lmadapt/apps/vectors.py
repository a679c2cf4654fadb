"""The applications' vector index: the rows nearest to a query by inner product (the support bot's known questions,
the recommender's items), and BM25 over texts with the same (scores, ids) answer.

Exact inner product in numpy is the default: up to ~1e5 normalised vectors it is fast, needs nothing and is exact.
Above that, faiss's HNSW graph (in process) trades a little recall for speed; faiss-flat is faiss's exact search.
Qdrant is for a team that runs a vector server (its embedded local mode serves tests and small sets). BM25 (bm25s)
is the lexical baseline and an optional hybrid signal. Every index answers search with (similarities, ids).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from lmadapt.errors import LmadaptError, did_you_mean

INDEX_KINDS = ("auto", "numpy", "faiss-flat", "faiss-hnsw", "qdrant")

MANIFEST = "index.json"
VECTORS_FILE = "vectors.npy"
FAISS_FILE = "index.faiss"
BM25_FOLDER = "bm25s"
STOPWORDS = "en"

# Exact search scores a batch of queries against every row at once; this bounds that matrix (64 MB of float32).
_SCORES_PER_BATCH = 1 << 24
_QDRANT_QUERIES_PER_REQUEST = 256
_QDRANT_SCROLL_PAGE = 1024


class VectorIndex(Protocol):
    """Vectors whose ids are their positions (0, 1, ...), searched by inner product."""

    kind: str
    dim: int
    settings: dict[str, Any]  # what save_index records so load_index rebuilds the same backend

    def __len__(self) -> int: ...

    def add(self, vectors: np.ndarray) -> None:
        """Append rows; their ids continue from len(self)."""

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(similarities float32 [n, k], ids int64 [n, k]) best first; missing entries are id -1, similarity -inf."""

    def vectors(self) -> np.ndarray:
        """All rows, in id order."""


def _as_matrix(array: Any, *, what: str, where: str, dim: int | None = None) -> np.ndarray:
    """The rows as a C-contiguous float32 matrix, or an error saying what is wrong with them."""
    array = np.asarray(array)
    if array.ndim != 2 or array.shape[1] == 0 or not np.issubdtype(array.dtype, np.number):
        raise LmadaptError(
            f"{what} must be a 2-D numeric array [rows, dim], got shape {array.shape} of {array.dtype}",
            where=where,
            fix="pass one embedding per row; a single vector v becomes v[None, :]",
        )
    if dim is not None and array.shape[1] != dim:
        raise LmadaptError(
            f"{what} have {array.shape[1]} dimensions but the index holds {dim}-dimensional vectors",
            where=where,
            fix="embed with the model that built the index, or build a new index",
        )
    array = np.ascontiguousarray(array, dtype=np.float32)
    bad_rows = np.flatnonzero(~np.isfinite(array).all(axis=1))
    if len(bad_rows):
        raise LmadaptError(
            f"{what} hold NaN or infinite values in {len(bad_rows)} row(s), first {bad_rows[:5].tolist()}",
            where=where,
            fix="check the embedding step for those texts (an empty text can embed to NaN), then drop or re-embed them",
        )
    return array


def _check_k(k: Any, where: str) -> None:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise LmadaptError(f"k must be a whole number >= 1, got {k!r}", where=where, fix="ask for k=1 or more")


def _no_results(queries: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    return np.full((queries, k), -np.inf, dtype=np.float32), np.full((queries, k), -1, dtype=np.int64)


class NumpyIndex:
    """Exact inner product over rows held in memory."""

    kind = "numpy"

    def __init__(self, dim: int):
        self.dim = dim
        self.settings: dict[str, Any] = {}
        self._vectors = np.empty((0, dim), dtype=np.float32)

    def __len__(self) -> int:
        return len(self._vectors)

    def add(self, vectors: np.ndarray) -> None:
        vectors = _as_matrix(vectors, what="vectors", where="NumpyIndex.add", dim=self.dim)
        self._vectors = np.concatenate([self._vectors, vectors])

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        queries = _as_matrix(queries, what="queries", where="NumpyIndex.search", dim=self.dim)
        _check_k(k, "NumpyIndex.search")
        similarities, ids = _no_results(len(queries), k)
        found = min(k, len(self))
        if found == 0:
            return similarities, ids
        batch = max(1, _SCORES_PER_BATCH // len(self))
        for start in range(0, len(queries), batch):
            scores = queries[start : start + batch] @ self._vectors.T
            top = np.argpartition(-scores, found - 1, axis=1)[:, :found]
            top_scores = np.take_along_axis(scores, top, axis=1)
            order = np.argsort(-top_scores, axis=1, kind="stable")
            ids[start : start + batch, :found] = np.take_along_axis(top, order, axis=1)
            similarities[start : start + batch, :found] = np.take_along_axis(top_scores, order, axis=1)
        return similarities, ids

    def vectors(self) -> np.ndarray:
        return self._vectors


class FaissIndex:
    """A faiss inner-product index: exact (faiss-flat) or an HNSW graph (faiss-hnsw)."""

    def __init__(self, index: Any, kind: str, settings: dict[str, Any]):
        self._index = index
        self.kind = kind
        self.dim = index.d
        self.settings = settings

    @classmethod
    def empty(cls, kind: str, dim: int, settings: dict[str, Any]) -> FaissIndex:
        import faiss

        if kind == "faiss-flat":
            return cls(faiss.IndexFlatIP(dim), kind, settings)
        index = faiss.IndexHNSWFlat(dim, settings["hnsw_m"], faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efSearch = settings["hnsw_ef_search"]
        return cls(index, kind, settings)

    @classmethod
    def read(cls, path: Path, kind: str, settings: dict[str, Any]) -> FaissIndex:
        import faiss

        return cls(faiss.read_index(str(path)), kind, settings)

    def write(self, path: Path) -> None:
        import faiss

        faiss.write_index(self._index, str(path))

    def __len__(self) -> int:
        return self._index.ntotal

    def add(self, vectors: np.ndarray) -> None:
        self._index.add(_as_matrix(vectors, what="vectors", where=f"{self.kind} add", dim=self.dim))

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        queries = _as_matrix(queries, what="queries", where=f"{self.kind} search", dim=self.dim)
        _check_k(k, f"{self.kind} search")
        similarities, ids = self._index.search(queries, k)
        similarities[ids < 0] = -np.inf  # faiss marks missing entries with -FLT_MAX
        return similarities.astype(np.float32, copy=False), ids.astype(np.int64, copy=False)

    def vectors(self) -> np.ndarray:
        return self._index.reconstruct_n(0, self._index.ntotal)


class QdrantIndex:
    """A Qdrant collection (dot product) on a server or in Qdrant's embedded local mode."""

    kind = "qdrant"

    def __init__(self, client: Any, collection: str, dim: int, settings: dict[str, Any]):
        self._client = client
        self.collection = collection
        self.dim = dim
        self.settings = settings

    def close(self) -> None:
        """Release the client (the local mode locks its folder until then)."""
        self._client.close()

    def __len__(self) -> int:
        return self._client.count(self.collection, exact=True).count

    def add(self, vectors: np.ndarray) -> None:
        vectors = _as_matrix(vectors, what="vectors", where="qdrant add", dim=self.dim)
        start = len(self)
        self._client.upload_collection(
            self.collection, vectors=vectors, ids=range(start, start + len(vectors)), wait=True
        )

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        from qdrant_client import models

        queries = _as_matrix(queries, what="queries", where="qdrant search", dim=self.dim)
        _check_k(k, "qdrant search")
        similarities, ids = _no_results(len(queries), k)
        params = models.SearchParams(exact=True) if self.settings["exact"] else None
        for start in range(0, len(queries), _QDRANT_QUERIES_PER_REQUEST):
            requests = [
                models.QueryRequest(query=query.tolist(), limit=k, params=params, with_payload=False)
                for query in queries[start : start + _QDRANT_QUERIES_PER_REQUEST]
            ]
            for row, response in enumerate(self._client.query_batch_points(self.collection, requests=requests), start):
                for rank, point in enumerate(response.points):
                    ids[row, rank] = point.id
                    similarities[row, rank] = point.score
        return similarities, ids

    def vectors(self) -> np.ndarray:
        vectors = np.empty((len(self), self.dim), dtype=np.float32)
        offset = None
        while True:
            points, offset = self._client.scroll(
                self.collection, limit=_QDRANT_SCROLL_PAGE, offset=offset, with_vectors=True, with_payload=False
            )
            for point in points:
                vectors[point.id] = point.vector
            if offset is None:
                return vectors


def _vectors_digest(vectors: np.ndarray) -> str:
    digest = hashlib.sha256(str(vectors.shape).encode())
    digest.update(vectors.tobytes())
    return digest.hexdigest()


def _open_qdrant(
    vectors: np.ndarray, settings: dict[str, Any], url: str | None, path: str | None, where: str
) -> QdrantIndex:
    """The collection holding these vectors, uploading them only when it does not already hold all of them."""
    if (url is None) == (path is None):
        raise LmadaptError(
            "a qdrant index needs exactly one of qdrant_url and qdrant_path",
            where=where,
            fix="pass qdrant_url='http://host:6333' for a Qdrant server, or qdrant_path=<folder> for its local mode",
        )
    from qdrant_client import QdrantClient, models

    client = QdrantClient(url=url) if url is not None else QdrantClient(path=path)
    # Named by the vectors' content, so a restart with the same vectors finds them already uploaded.
    name = f"{settings['collection_prefix']}-{_vectors_digest(vectors)[:16]}"
    index = QdrantIndex(client, name, vectors.shape[1], settings)
    if client.collection_exists(name):
        if len(index) == len(vectors):
            return index
        client.delete_collection(name)  # an upload that stopped part way
    client.create_collection(
        name, vectors_config=models.VectorParams(size=vectors.shape[1], distance=models.Distance.DOT)
    )
    index.add(vectors)
    return index


def _create(
    kind: str, vectors: np.ndarray, settings: dict[str, Any], url: str | None, path: str | None, where: str
) -> VectorIndex:
    if kind == "qdrant":
        return _open_qdrant(vectors, settings, url, path, where)
    index: VectorIndex = (
        NumpyIndex(vectors.shape[1]) if kind == "numpy" else FaissIndex.empty(kind, vectors.shape[1], settings)
    )
    index.add(vectors)
    return index


def build_index(
    vectors: np.ndarray,
    kind: str = "auto",
    *,
    faiss_above: int = 100_000,
    hnsw_m: int = 32,
    hnsw_ef_search: int = 64,
    qdrant_url: str | None = None,
    qdrant_path: str | None = None,
    collection_prefix: str = "lmadapt",
    qdrant_exact: bool = False,
) -> VectorIndex:
    """An index over `vectors` (rows L2-normalised by the caller, so inner product is cosine).

    auto: numpy exact search up to `faiss_above` rows, faiss HNSW above, chosen once here. qdrant needs a server
    (`qdrant_url`) or a local-mode folder (`qdrant_path`, ":memory:" for none); its collection is named
    `<collection_prefix>-<hash of the vectors>`.
    """
    where = "build_index"
    if kind not in INDEX_KINDS:
        raise LmadaptError(f"unknown index kind '{kind}'", where=where, fix=did_you_mean(kind, INDEX_KINDS))
    vectors = _as_matrix(vectors, what="vectors", where=where)
    if kind == "auto":
        kind = "numpy" if len(vectors) <= faiss_above else "faiss-hnsw"
    settings = {
        "faiss-hnsw": {"hnsw_m": hnsw_m, "hnsw_ef_search": hnsw_ef_search},
        "qdrant": {"collection_prefix": collection_prefix, "exact": qdrant_exact},
    }.get(kind, {})
    return _create(kind, vectors, settings, qdrant_url, qdrant_path, where)


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _write_manifest(folder: Path, manifest: dict[str, Any], files: list[str]) -> dict[str, Any]:
    """Write index.json last, in one step: a save that stops part way leaves checksums that do not match."""
    manifest = {**manifest, "files": {name: _file_sha256(folder / name) for name in files}}
    partial = folder / f"{MANIFEST}.partial"
    partial.write_text(json.dumps(manifest, indent=2))
    os.replace(partial, folder / MANIFEST)
    return manifest


def _read_manifest(folder: Path, kinds: Sequence[str]) -> dict[str, Any]:
    """index.json, once every file it lists is checked unchanged."""
    where = str(folder)
    path = folder / MANIFEST
    if not path.is_file():
        raise LmadaptError(
            f"no saved index here ({MANIFEST} is missing)",
            where=where,
            fix="check the path, or save the index there first (save_index or LexicalIndex.save)",
        )
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise LmadaptError(
            f"{MANIFEST} is not valid JSON ({error})", where=where, fix="save the index again"
        ) from error
    if manifest.get("kind") not in kinds:
        loader = "LexicalIndex.load" if manifest.get("kind") == "bm25" else "load_index"
        raise LmadaptError(
            f"this folder holds a '{manifest.get('kind')}' index", where=where, fix=f"load it with {loader}"
        )
    for name, checksum in manifest["files"].items():
        if not (folder / name).is_file():
            raise LmadaptError(f"{name} is missing", where=where, fix="restore the file, or save the index again")
        if _file_sha256(folder / name) != checksum:
            raise LmadaptError(
                f"{name} changed since the index was saved (checksum differs)",
                where=where,
                fix="restore the file, or save the index again",
            )
    return manifest


def save_index(index: VectorIndex, folder: Path) -> dict[str, Any]:
    """Write the vectors (.npy) and index.json {kind, dim, rows, settings, files}; returns index.json's content.

    faiss-hnsw also writes its graph: rebuilt with threads, it could answer differently.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vectors = index.vectors()
    np.save(folder / VECTORS_FILE, vectors, allow_pickle=False)
    files = [VECTORS_FILE]
    if isinstance(index, FaissIndex) and index.kind == "faiss-hnsw":
        index.write(folder / FAISS_FILE)
        files.append(FAISS_FILE)
    manifest = {"kind": index.kind, "dim": index.dim, "rows": len(vectors), "settings": index.settings}
    return _write_manifest(folder, manifest, files)


def load_index(folder: Path, *, qdrant_url: str | None = None, qdrant_path: str | None = None) -> VectorIndex:
    """The index save_index wrote; a qdrant one reuses its collection when that already holds these vectors."""
    folder = Path(folder)
    manifest = _read_manifest(folder, INDEX_KINDS[1:])
    kind, settings = manifest["kind"], manifest["settings"]
    if kind == "faiss-hnsw":
        return FaissIndex.read(folder / FAISS_FILE, kind, settings)
    vectors = np.load(folder / VECTORS_FILE, allow_pickle=False)
    return _create(kind, vectors, settings, qdrant_url, qdrant_path, str(folder))


def _stemmer(stem: bool | None, where: str) -> Callable[[list[str]], list[str]] | None:
    """PyStemmer's English stemmer when asked for (stem=True) or, with stem=None, when it is installed."""
    if stem is False:
        return None
    try:
        import Stemmer
    except ImportError:
        if stem:
            raise LmadaptError(
                "stemming needs PyStemmer, which is not installed",
                where=where,
                fix="pip install PyStemmer, or use stem=False",
            ) from None
        return None
    return Stemmer.Stemmer("english").stemWords


def _check_texts(texts: Any, where: str) -> list[str]:
    if isinstance(texts, str) or not all(isinstance(text, str) for text in texts):
        raise LmadaptError(
            "texts must be a list of strings", where=where, fix="pass a list, e.g. [message] for a single message"
        )
    return list(texts)


class LexicalIndex:
    """BM25 over texts (bm25s, English stopwords), with the vector indexes' (scores, ids) contract."""

    kind = "bm25"

    def __init__(self, model: Any, stem: bool | None, where: str):
        self._model = model
        self._stemmer = _stemmer(stem, where)
        self.settings = {"stem": self._stemmer is not None, "stopwords": STOPWORDS}

    @classmethod
    def build(cls, texts: Sequence[str], *, stem: bool | None = None) -> LexicalIndex:
        """Index `texts`; their ids are their positions. stem=None stems when PyStemmer is installed."""
        import bm25s

        where = "LexicalIndex.build"
        texts = _check_texts(texts, where)
        if not texts:
            raise LmadaptError("no texts to index", where=where, fix="pass at least one text")
        index = cls(bm25s.BM25(), stem, where)
        tokens = bm25s.tokenize(texts, stopwords=STOPWORDS, stemmer=index._stemmer, show_progress=False)
        index._model.index(tokens, show_progress=False)
        return index

    def __len__(self) -> int:
        return int(self._model.scores["num_docs"])

    def search(self, texts: Sequence[str], k: int) -> tuple[np.ndarray, np.ndarray]:
        """(BM25 scores float32 [n, k], ids int64 [n, k]) best first; beyond len(self), ids -1 and scores -inf."""
        import bm25s

        texts = _check_texts(texts, "LexicalIndex.search")
        _check_k(k, "LexicalIndex.search")
        scores, ids = _no_results(len(texts), k)
        found = min(k, len(self))
        if texts:
            tokens = bm25s.tokenize(
                texts, stopwords=STOPWORDS, stemmer=self._stemmer, return_ids=False, show_progress=False
            )
            found_ids, found_scores = self._model.retrieve(tokens, k=found, show_progress=False)
            ids[:, :found], scores[:, :found] = found_ids, found_scores
        return scores, ids

    def save(self, folder: Path) -> dict[str, Any]:
        """Write bm25s's own files (no pickle) and index.json; returns index.json's content."""
        folder = Path(folder)
        self._model.save(folder / BM25_FOLDER, show_progress=False)
        files = sorted(f"{BM25_FOLDER}/{path.name}" for path in (folder / BM25_FOLDER).iterdir())
        return _write_manifest(folder, {"kind": self.kind, "rows": len(self), "settings": self.settings}, files)

    @classmethod
    def load(cls, folder: Path) -> LexicalIndex:
        import bm25s

        folder = Path(folder)
        manifest = _read_manifest(folder, (cls.kind,))
        model = bm25s.BM25.load(folder / BM25_FOLDER, show_progress=False)
        return cls(model, manifest["settings"]["stem"], str(folder))
