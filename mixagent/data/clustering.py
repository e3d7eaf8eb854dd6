"""Unsupervised domain assignment: cluster documents by their words.

Corpora rarely come with a useful domain label, yet the mixing agent needs a domain space with
more than one domain per field. :class:`TextClusterer` gives one: hashed word counts (no
vocabulary to hold in memory, so assignment streams at any corpus size), tf-idf weighting fitted on
a sample, and seeded mini-batch k-means. It is fitted once on a bounded sample and then assigns
every document batch by batch. Clusters are numbered by size in the sample (0 is the largest), and
each is described by its top terms so a person can tell what a domain holds.

Nothing here is saved: the fitted model is rebuilt from the sample whenever the data directory is
rebuilt (it is cheap), so there is no pickled state to trust.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from mixagent.errors import DataError


class TextClusterer:
    """Seeded k-means over tf-idf of hashed word features.

    ``max_chars`` truncates each document before featurisation, bounding the cost of one very long
    document; the same truncation is used for fitting and assigning, so both see the same view.
    """

    def __init__(
        self,
        k: int,
        *,
        seed: int = 0,
        n_features: int = 1 << 18,
        top_terms: int = 8,
        max_chars: int = 20_000,
        n_init: int = 3,
    ):
        if k < 1:
            raise DataError(f"cluster k={k} must be at least 1")
        self.k = k
        self.seed = seed
        self.n_features = n_features
        self.top_terms = top_terms
        self.max_chars = max_chars
        self.n_init = n_init
        self._hasher: Any = None
        self._tfidf: Any = None
        self._kmeans: Any = None
        self._relabel: np.ndarray | None = None
        self.terms: list[list[str]] = []
        self.sample_sizes: list[int] = []

    def _features(self, texts: Sequence[str]) -> Any:
        counts = self._hasher.transform([t[: self.max_chars] for t in texts])
        return self._tfidf.transform(counts)

    def fit(self, texts: Sequence[str]) -> TextClusterer:
        """Fit tf-idf and k-means on a sample of documents (a list: it is read several times)."""
        from sklearn.cluster import MiniBatchKMeans
        from sklearn.feature_extraction.text import HashingVectorizer, TfidfTransformer

        texts = [t for t in texts if t and t.strip()]
        distinct = len(set(texts))
        if distinct < self.k:
            raise DataError(
                f"cannot make {self.k} clusters from {distinct} distinct sampled documents; "
                "lower cluster.k or raise cluster.sample_documents"
            )
        self._hasher = HashingVectorizer(
            n_features=self.n_features, alternate_sign=False, norm=None, stop_words="english"
        )
        counts = self._hasher.transform([t[: self.max_chars] for t in texts])
        self._tfidf = TfidfTransformer(sublinear_tf=True).fit(counts)
        x = self._tfidf.transform(counts)
        self._kmeans = MiniBatchKMeans(
            n_clusters=self.k,
            random_state=self.seed,
            n_init=self.n_init,
            batch_size=min(1024, len(texts)),
        ).fit(x)
        raw = self._kmeans.predict(x)
        sizes = np.bincount(raw, minlength=self.k)
        order = np.argsort(-sizes, kind="stable")  # new label i = old label order[i]
        self._relabel = np.empty(self.k, dtype=np.int64)
        self._relabel[order] = np.arange(self.k)
        self.sample_sizes = [int(sizes[o]) for o in order]
        self.terms = self._top_terms(texts, order)
        return self

    def _top_terms(self, texts: Sequence[str], order: np.ndarray) -> list[list[str]]:
        """Name each centroid's heaviest hashed features by the sample's commonest word per slot.

        Hashing is one-way, so the words are recovered from the sample: each word is hashed alone
        to find its feature index, and the most frequent word wins a (rare) collision.
        """
        analyzer = self._hasher.build_analyzer()
        freq: Counter[str] = Counter()
        for t in texts:
            freq.update(analyzer(t[: self.max_chars]))
        words = [w for w, _ in freq.most_common()]
        index_word: dict[int, str] = {}
        if words:
            cols = self._hasher.transform(words).tocsr()
            for row, word in enumerate(words):
                for col in cols.indices[cols.indptr[row] : cols.indptr[row + 1]]:
                    index_word.setdefault(int(col), word)
        centers = self._kmeans.cluster_centers_
        result = []
        for old in order:
            top = np.argsort(-centers[old], kind="stable")[: self.top_terms * 2]
            names = [
                index_word[int(i)] for i in top if centers[old, i] > 0 and int(i) in index_word
            ]
            result.append(names[: self.top_terms])
        return result

    def predict(self, texts: Sequence[str]) -> np.ndarray:
        """Cluster ids (0 = the largest cluster in the fit sample) for a batch of documents."""
        if self._kmeans is None or self._relabel is None:
            raise RuntimeError("TextClusterer.predict called before fit")
        if not texts:
            return np.zeros(0, dtype=np.int64)
        return self._relabel[self._kmeans.predict(self._features(texts))]

    def describe(self, cluster: int) -> str:
        """A one-line description of a cluster for the manifest."""
        terms = ", ".join(self.terms[cluster]) or "(no distinctive terms)"
        return f"cluster {cluster} of {self.k} (k-means on tf-idf); top terms: {terms}"
