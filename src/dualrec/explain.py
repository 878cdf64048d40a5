"""Why a product is in a list: a logged co-purchase or a prediction, and the strongest evidence.

Every recommended item gets a ``kind`` and a short ``reason`` a shop person can read:

* ``logged``: the shop's data already has the co-purchase ``query -> item`` (such items come
  first in the two-stage ranking);
* ``predicted``: the ranking found it. With the second stage, the reason is the pair model's
  largest positive contributions (LightGBM's SHAP values, ``pred_contrib``), read as the evidence
  behind them: a kind of co-purchase / co-view path (``bought after products that are bought
  after it``...), similar text, or DAEMON's direction. Without it (or for a new product, which
  the second stage does not rank) the reason is DAEMON's score and any co-view or text evidence;
  a new product in one of a list's new-product slots says so.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

__all__ = ["Explainer", "PATH_REASONS", "SCORE_LABELS"]

#: text cosine from which "similar description" is given as a reason
TEXT_SIMILAR = 0.5

#: a path kind of the co-occurrence model (:data:`dualrec.cooccurrence.KINDS`) in words
PATH_REASONS = {
    "reverse": "often bought before it",
    "sim": "viewed together with it",
    "cp2": "bought after the products bought after it",
    "sim_cp": "bought after products viewed with it",
    "cp_sim": "viewed with products bought after it",
    "sibling": "bought after the same products as it",
    "cotarget": "bought before the same products as it",
    "cf3": "bought by shoppers who buy what its buyers buy",
}
#: what a list's scores are, by ranker
SCORE_LABELS = {
    "two-stage": "pair-model score (higher is better; logged co-purchases are placed above every prediction)",
    "neighbours": "a new product's list: the items its text-nearest products with history bought come first, "
    "ordered by their summed text similarity (DAEMON's best score + 1 + that sum); then DAEMON's cosine",
    "daemon": "DAEMON cosine of the query's source and the item's target embedding",
}


def _feature_reason(name: str, value: float, row: dict) -> str | None:
    """Words for a feature that pushed an item up, or None. A feature whose value is absent (a
    path count of 0, low text similarity) can raise a score too; it is no evidence to show."""
    if name.startswith("path_"):
        return PATH_REASONS.get(name[5:]) if value > 0 else None
    if name in ("graph_score", "graph_rank", "graph_gap"):  # the path kind that carries the score
        paths = {k[5:]: v for k, v in row.items() if k.startswith("path_") and v > 0}
        return PATH_REASONS.get(max(paths, key=paths.get)) if paths else None
    if name == "text_cos":
        return f"similar description (text similarity {value:.2f})" if value >= TEXT_SIMILAR else None
    if name in ("daemon_score", "daemon_rank", "daemon_gap"):
        return f"DAEMON: a typical next purchase (score {row.get('daemon_score', value):.2f})"
    if name == "daemon_reverse":
        return "DAEMON: bought after it, rarely before it"
    if name in ("daemon_target_sim", "daemon_source_sim"):
        return "DAEMON: a close alternative to it" if value > 0 else None
    if name == "log_in_v":
        return "a frequent purchase in the shop's data" if value > 0 else None
    return None  # features of the query itself say nothing about this item


class Explainer:
    """Explains lists of one model version (see the module docstring).

    Args:
        logged: (N, N) sparse, the logged co-purchases ``u -> v`` (all of the dataset's and those
            given to ``add-products``).
        coviewed: (N, N) sparse symmetric co-view pairs.
        x: (N, F) features (any scale), for text similarity; ``None`` to skip it.
        source, target: the embeddings (DAEMON's score).
        reranker: the second stage, or ``None``.
    """

    def __init__(
        self,
        logged: sp.csr_matrix,
        coviewed: sp.csr_matrix,
        x: np.ndarray | None,
        source: np.ndarray,
        target: np.ndarray,
        reranker=None,
    ):
        self.logged, self.coviewed = logged.tocsr(), coviewed.tocsr()
        self.x = x  # normalised per use: no copy of an N x F matrix
        self.source, self.target, self.reranker = source, target, reranker

    @classmethod
    def from_version(cls, version, source: np.ndarray, target: np.ndarray, reranker=None) -> "Explainer":
        n = len(source)
        shown = getattr(reranker, "shown", None)
        if shown is not None and shown.shape == (n, n):  # the same matrix (one copy per server worker)
            logged = shown
        else:
            src, dst = version.logged_edges("copurchase")
            logged = sp.csr_matrix((np.ones(src.size, bool), (src, dst)), shape=(n, n))
        a, b = version.logged_edges("similar")
        coviewed = sp.csr_matrix((np.ones(2 * a.size, bool), (np.r_[a, b], np.r_[b, a])), shape=(n, n))
        x = np.asarray(version.features(mmap=True)) if version.has("features.npy") else None
        return cls(logged, coviewed, x, source, target, reranker)

    def kinds(self, query: int, items: np.ndarray) -> list[str]:
        """``"logged"`` or ``"predicted"`` per item (cheap: no model is run)."""
        lo, hi = self.logged.indptr[query], self.logged.indptr[query + 1]
        logged = np.isin(np.asarray(items, dtype=np.int64), self.logged.indices[lo:hi])
        return ["logged" if f else "predicted" for f in logged.tolist()]

    def explain(self, query: int, items: np.ndarray) -> list[dict]:
        """``[{"kind": "logged"|"predicted", "reason": str}, ...]`` for ``items`` of ``query``'s list."""
        items = np.asarray(items, dtype=np.int64)
        lo, hi = self.logged.indptr[query], self.logged.indptr[query + 1]
        logged = np.isin(items, self.logged.indices[lo:hi])
        out: list[dict] = [{} for _ in items]
        pred = np.flatnonzero(~logged)
        reasons = self._model_reasons(query, items[pred]) if pred.size and self.reranker is not None else {}
        for j, v in enumerate(items.tolist()):
            if logged[j]:
                out[j] = {"kind": "logged", "reason": "bought after it in the shop's data (a logged co-purchase)"}
            elif self._is_new(v):  # placed in a new-product slot, not by the pair model
                out[j] = {"kind": "predicted", "reason": "new in the catalogue: " + self._evidence(query, v)}
            else:
                out[j] = {"kind": "predicted", "reason": reasons.get(v) or self._evidence(query, v)}
        return out

    def _is_new(self, item: int) -> bool:
        rr = self.reranker
        return rr is not None and bool(rr.cfg.new_slots) and bool(rr.is_new([item])[0])

    def _model_reasons(self, query: int, items: np.ndarray) -> dict[int, str]:
        """The pair model's two strongest positive contributions, as words, per candidate item."""
        rr = self.reranker
        if not items.size:
            return {}
        if rr.ranks_alone(query):  # a new product's list: its text neighbours' co-purchases, then DAEMON's
            return rr.cold_reasons(query, items)
        try:
            r, c, F, _ = rr._chunk(np.array([query], dtype=np.int64))
        except Exception:  # noqa: BLE001 - an explanation never breaks a recommendation
            return {}
        pos = {int(v): i for i, v in enumerate(c.tolist())}
        sel = [(int(v), pos[int(v)]) for v in items.tolist() if int(v) in pos]
        if not sel:
            return {}
        rows = F[[i for _, i in sel]]
        contrib = np.asarray(rr.model.predict(rows, pred_contrib=True))[:, :-1]
        names = rr.feature_names
        out = {}
        for (v, _), fr, cr in zip(sel, rows, contrib):
            row = dict(zip(names, fr.tolist()))
            said: list[str] = []
            for k in np.argsort(-cr):
                if cr[k] <= 0 or len(said) == 2:
                    break
                text = _feature_reason(names[k], float(fr[k]), row)
                if text and text not in said:
                    said.append(text)
            if said:
                out[v] = "; ".join(said)
        return out

    def _evidence(self, query: int, item: int) -> str:
        said = []
        lo, hi = self.coviewed.indptr[query], self.coviewed.indptr[query + 1]
        if item in set(self.coviewed.indices[lo:hi].tolist()):
            said.append(PATH_REASONS["sim"])
        if self.x is not None and query < len(self.x) and item < len(self.x):
            a, b = np.asarray(self.x[query], np.float64), np.asarray(self.x[item], np.float64)
            cos = float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-12))
            if cos >= TEXT_SIMILAR:
                said.append(f"similar description (text similarity {cos:.2f})")
        said.append(f"DAEMON score {float(self.source[query] @ self.target[item]):.2f}")
        return "; ".join(said)
