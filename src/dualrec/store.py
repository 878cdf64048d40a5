"""The model folder: versioned, crash-safe, and free of anything that runs code when it is read.

This module is the one owner of the model-folder format; everything else reads and writes a
model through :class:`ModelStore` and :class:`ModelVersion`. Layout::

    MODEL/
      CURRENT               name of the version served by default (replaced atomically)
      versions/v000007/     one complete model; its MANIFEST.json is written last
      staging/              versions being written (a crashed writer leaves one; the next clears it)
      checkpoint/last.pt    training state for ``dualrec train --resume`` (tensors and plain data:
                            read with ``torch.load(weights_only=True)``)
      checkpoint/best-<epoch>-<run>.pt   a large model's best epoch's weights, named by last.pt
                            (smaller models keep them inside last.pt)
      .lock                 held by every writer: train, add-products, index, rollback, the
                            server's ``POST /products``

A version holds (each file listed in ``MANIFEST.json`` with its size and sha256):

    model.json              what the model is: version, ranker, counts, metrics, provenance
    config.json             the TrainConfig, input width, split parameters, training history
    weights.safetensors     DAEMON's parameters
    split.npy               int8 part (train/val/test) of every co-purchase edge
    cp_edges.npy ...        the graph it was trained on: cp_edges (2, E) int64, cp_weight (E,),
                            sim_edges (2, S), sim_weight (S,)
    products.parquet        the catalogue, row-aligned with every array below
    features.npy            model input features of every product (float16: read memory-mapped by
                            the second stage and the explanations; half the size of float32)
    features.json           how they were built (new products are encoded the same way)
    source.npy, target.npy  normalised final embeddings (float32)
    added_edges.parquet     edges that came with products added by ``add-products``
    rerank/                 the second stage: LightGBM's text model format + JSON, and arrays/:
                            what it derived from the training graph (co-occurrence's CSR parts,
                            the known pairs), memory-mapped when served
    lists/                  every product's precomputed top-k (items.npy, scores.npy, lists.json)
    index/                  a faiss index and its JSON metadata

Nothing in a version is a pickle: arrays are ``.npy`` read with ``allow_pickle=False``, weights
are safetensors, tables Parquet, the rest JSON or LightGBM/faiss native formats. A writer
builds a complete version in ``staging/``, fsyncs it, writes the manifest last, renames it into
``versions/`` and then replaces ``CURRENT``: a reader (or a writer killed at any point) sees the
old version or the new one whole. Unchanged files are hard links to the parent version's, so a
version costs only what changed. Older versions are kept for :meth:`ModelStore.rollback`
(``keep``, default 3).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from dualrec.errors import DualrecError, ModelBusyError

__all__ = ["ModelStore", "ModelVersion", "VersionWriter", "open_version", "FORMAT", "DEFAULT_KEEP"]

#: model-folder format written by this dualrec
FORMAT = 2
#: versions kept after each write (the current one always among them)
DEFAULT_KEEP = 3
CURRENT = "CURRENT"
MANIFEST = "MANIFEST.json"
VERSIONS = "versions"
STAGING = "staging"
CHECKPOINT = "checkpoint"
LOCK = ".lock"
#: edges that came with products added by ``add-products``: kind ("copurchase"|"similar"), a, b (row indexes)
ADDED_EDGES = "added_edges.parquet"
_NAME = re.compile(r"^v\d{6}$")
#: files of the layout written before versioned folders (pickled second stage, top-level files)
_LEGACY = ("best.pt", "rerank.pkl", "source.npy")


def _fsync_dir(d: Path) -> None:
    fd = os.open(d, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _checked_files(name: str, files) -> dict:
    """The manifest's file table, if well formed: relative names, sizes and hashes."""
    ok = isinstance(files, dict)
    for rel, meta in files.items() if ok else ():
        parts = Path(rel).parts if isinstance(rel, str) else ("..",)
        ok = (
            isinstance(meta, dict)
            and isinstance(meta.get("bytes"), int)
            and isinstance(meta.get("sha256"), str)
            and not rel.startswith("/")
            and ".." not in parts
            and rel != MANIFEST
        )
        if not ok:
            break
    if not ok:
        raise DualrecError(f"model version {name}: {MANIFEST} is damaged; roll back or train again")
    return dict(files)


def valid_version_name(name: str) -> bool:
    return isinstance(name, str) and bool(_NAME.match(name))


class ModelVersion:
    """One complete, verified version of a model folder (read side).

    Only files listed in the manifest are ever read; :meth:`path` refuses any other name.
    """

    def __init__(self, root: Path, name: str, verify: bool = True):
        self.root, self.name = Path(root), name
        self.dir = self.root / VERSIONS / name
        mpath = self.dir / MANIFEST
        try:
            self.manifest = json.loads(mpath.read_text())
        except FileNotFoundError:
            if not self.dir.is_dir():
                raise DualrecError(f"model version {name} was removed while it was read (a writer pruned it)") from None
            raise DualrecError(
                f"model version {name} is incomplete (no {MANIFEST}); "
                "roll back with `dualrec rollback MODEL` or train again"
            ) from None
        except (OSError, ValueError) as e:
            raise DualrecError(f"model version {name}: unreadable {MANIFEST} ({e})") from e
        fmt = self.manifest.get("format") if isinstance(self.manifest, dict) else None
        if fmt != FORMAT:
            raise DualrecError(
                f"model version {name} has format {fmt!r}; this dualrec reads format {FORMAT}: train the model again"
            )
        self.files: dict[str, dict] = _checked_files(name, self.manifest.get("files"))
        if verify:
            self.verify()
        self._json: dict[str, Any] = {}

    def verify(self, hashes: bool = True) -> None:
        """Every manifest file exists with its size (and sha256); no mismatch is read."""
        for rel, meta in self.files.items():
            p = self.dir / rel
            try:
                size = p.stat().st_size
            except FileNotFoundError:
                if not self.dir.is_dir():
                    raise self._gone(rel, FileNotFoundError()) from None
                raise DualrecError(
                    f"model version {self.name}: {rel} is missing; the folder was changed "
                    "after it was written (roll back or train again)"
                ) from None
            if size != meta["bytes"] or (hashes and _sha256(p) != meta["sha256"]):
                raise DualrecError(
                    f"model version {self.name}: {rel} does not match its manifest; the "
                    "folder was changed after it was written (roll back or train again)"
                )

    # -- files -----------------------------------------------------------------------------------
    def has(self, rel: str) -> bool:
        return rel in self.files

    def path(self, rel: str) -> Path:
        if rel not in self.files:
            raise DualrecError(f"model version {self.name} has no {rel}")
        return self.dir / rel

    def _gone(self, rel: str, e: OSError) -> DualrecError:
        if not self.dir.is_dir():
            return DualrecError(
                f"model version {self.name} was removed while it was read (a writer pruned it); "
                "read the current version again"
            )
        return DualrecError(f"model version {self.name}: cannot read {rel} ({type(e).__name__})")

    def json(self, rel: str) -> dict:
        if rel not in self._json:
            try:
                self._json[rel] = json.loads(self.path(rel).read_text())
            except ValueError as e:
                raise DualrecError(f"model version {self.name}: {rel} is not valid JSON ({e})") from e
            except OSError as e:
                raise self._gone(rel, e) from e
        return self._json[rel]

    def array(self, rel: str, mmap: bool = False) -> np.ndarray:
        try:
            return np.load(self.path(rel), allow_pickle=False, mmap_mode="r" if mmap else None)
        except ValueError as e:
            raise DualrecError(f"model version {self.name}: cannot read {rel} ({e})") from e
        except OSError as e:
            raise self._gone(rel, e) from e

    @property
    def info(self) -> dict:
        return self.json("model.json")

    @property
    def label(self) -> str:
        """``model_version`` as clients see it: changes with every write to the folder."""
        return self.name

    @property
    def has_reranker(self) -> bool:
        return self.info.get("ranker") == "two-stage"

    # -- typed readers ---------------------------------------------------------------------------
    def products(self, columns: list[str] | None = None):
        import pandas as pd

        try:
            return pd.read_parquet(self.path("products.parquet"), columns=columns)
        except OSError as e:
            raise self._gone("products.parquet", e) from e

    def ids(self) -> np.ndarray:
        return self.products(["id"])["id"].astype(str).to_numpy(dtype=object)

    def embeddings(self, mmap: bool = False) -> tuple[np.ndarray, np.ndarray]:
        s, t = self.array("source.npy", mmap), self.array("target.npy", mmap)
        if s.shape != t.shape or s.ndim != 2:
            raise DualrecError(f"model version {self.name}: source {s.shape} and target {t.shape} differ")
        return s, t

    def features(self, mmap: bool = False) -> np.ndarray:
        return self.array("features.npy", mmap)

    def graph(self, columns: list[str] | None = None):
        """The :class:`~dualrec.graph.ProductGraph` the model was trained on (its catalogue rows;
        ``columns``: only these catalogue columns, e.g. ``["id"]`` when only the edges matter)."""
        import torch

        from dualrec.graph import ProductGraph

        n = int(self.info["trained_products"])
        cp, sim = self.array("cp_edges.npy"), self.array("sim_edges.npy")
        t = torch.from_numpy
        return ProductGraph(
            self.products(columns).iloc[:n].reset_index(drop=True),
            t(np.ascontiguousarray(cp[0])),
            t(np.ascontiguousarray(cp[1])),
            t(self.array("cp_weight.npy")),
            t(np.ascontiguousarray(sim[0])),
            t(np.ascontiguousarray(sim[1])),
            t(self.array("sim_weight.npy")),
        )

    def split(self):
        import torch

        from dualrec.split import EdgeSplit

        c = self.json("config.json")["split"]
        return EdgeSplit(
            torch.from_numpy(self.array("split.npy").astype(np.int8)), c["seed"], c["val_fraction"], c["test_fraction"]
        )

    def state_dict(self) -> dict:
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(self.path("weights.safetensors")))
        except (OSError, SafetensorError) as e:
            raise (
                self._gone("weights.safetensors", e)
                if isinstance(e, OSError)
                else DualrecError(f"model version {self.name}: cannot read its weights ({e})")
            ) from e

    def added_edges(self):
        import pandas as pd

        if not self.has(ADDED_EDGES):
            return pd.DataFrame(
                {
                    "kind": pd.Series([], dtype=str),
                    "a": pd.Series([], dtype=np.int64),
                    "b": pd.Series([], dtype=np.int64),
                }
            )
        return pd.read_parquet(self.path(ADDED_EDGES))

    def logged_edges(self, kind: str = "copurchase") -> tuple[np.ndarray, np.ndarray]:
        """Every logged edge of ``kind`` (``"copurchase"`` or ``"similar"``) as row arrays
        ``(a, b)``: the training graph's (all parts of the split) and those given to
        ``add-products``."""
        rel = {"copurchase": "cp_edges.npy", "similar": "sim_edges.npy"}[kind]
        a = b = np.zeros(0, np.int64)
        if self.has(rel):
            a, b = self.array(rel)
        e = self.added_edges()
        e = e[e["kind"] == kind]
        return np.concatenate([a, e["a"].to_numpy(np.int64)]), np.concatenate([b, e["b"].to_numpy(np.int64)])

    def __repr__(self) -> str:
        return f"ModelVersion({self.root}, {self.name})"


class VersionWriter:
    """A version being written in ``staging/``; :meth:`commit` publishes it.

    Files are written with the ``save_*`` methods (or into :meth:`new_path`), or taken over
    unchanged from the parent with :meth:`link`. Used as a context manager, an exception (or
    a kill) leaves the current version untouched.
    """

    def __init__(self, store: "ModelStore", parent: ModelVersion | None):
        self.store, self.parent = store, parent
        self.dir = store.root / STAGING / uuid.uuid4().hex[:12]
        self.dir.mkdir(parents=True)
        self._linked: dict[str, dict] = {}
        self._committed: ModelVersion | None = None

    def __enter__(self) -> "VersionWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self._committed is None:
            shutil.rmtree(self.dir, ignore_errors=True)

    def new_path(self, rel: str) -> Path:
        if rel == MANIFEST or rel.startswith("/") or ".." in Path(rel).parts:
            raise ValueError(f"bad file name in a model version: {rel}")
        p = self.dir / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        if p.exists() or p.is_symlink():
            p.unlink()  # never write through a hard link into the parent's file
        self._linked.pop(rel, None)
        return p

    def link(self, *rels: str, missing_ok: bool = False) -> None:
        """Take files over from the parent unchanged (hard links, or copies across devices)."""
        for rel in rels:
            if self.parent is None or not self.parent.has(rel):
                if missing_ok:
                    continue
                raise DualrecError(f"the parent version has no {rel}")
            dst = self.new_path(rel)
            try:
                os.link(self.parent.dir / rel, dst)
            except OSError:
                shutil.copy2(self.parent.dir / rel, dst)
            self._linked[rel] = self.parent.files[rel]

    def link_all(self, except_: set[str] | tuple = ()) -> None:
        """Every parent file but ``except_`` (names, or folder prefixes ending in ``/``)."""
        if self.parent is None:
            return
        skip = set(except_)
        for rel in self.parent.files:
            if rel in skip or any(rel.startswith(p) for p in skip if p.endswith("/")):
                continue
            self.link(rel)

    def save_array(self, rel: str, a) -> None:
        a = np.asarray(a)
        if a.dtype == object:
            raise ValueError(f"{rel}: object arrays are not stored (they would need pickle)")
        with open(self.new_path(rel), "wb") as f:
            np.save(f, a, allow_pickle=False)

    def save_json(self, rel: str, obj) -> None:
        self.new_path(rel).write_text(json.dumps(obj, indent=2, default=_json_default))

    def save_parquet(self, rel: str, df) -> None:
        df.to_parquet(self.new_path(rel), index=False)

    def save_state_dict(self, rel: str, state: dict) -> None:
        from safetensors.torch import save_file

        save_file({k: v.detach().contiguous() for k, v in state.items()}, str(self.new_path(rel)))

    def has(self, rel: str) -> bool:
        return (self.dir / rel).is_file()

    def commit(self, info: dict, keep: int = DEFAULT_KEEP) -> ModelVersion:
        """fsync, write the manifest, publish as the next version, make it current, prune."""
        store = self.store
        name = store._next_name()
        replaces = store.current_name() if store.is_model() else None
        info = {
            **info,
            "version": name,
            "format": FORMAT,
            "parent": None if self.parent is None else self.parent.name,
            "replaces": replaces,
            "written": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        self.save_json("model.json", info)
        files = {}
        for p in sorted(self.dir.rglob("*")):
            if not p.is_file():
                continue
            rel = p.relative_to(self.dir).as_posix()
            if rel in self._linked:
                files[rel] = self._linked[rel]
                continue
            with open(p, "rb") as f:
                os.fsync(f.fileno())
            files[rel] = {"bytes": p.stat().st_size, "sha256": _sha256(p)}
        for d in {p.parent for p in self.dir.rglob("*")} | {self.dir}:
            _fsync_dir(d)
        manifest = {"format": FORMAT, "version": name, "files": files}
        mp = self.dir / MANIFEST
        with open(mp, "w") as f:
            f.write(json.dumps(manifest, indent=2))
            f.flush()
            os.fsync(f.fileno())
        _fsync_dir(self.dir)
        final = store.root / VERSIONS / name
        final.parent.mkdir(exist_ok=True)
        os.rename(self.dir, final)
        _fsync_dir(final.parent)
        store._set_current(name)
        self._committed = ModelVersion(store.root, name, verify=False)
        store.prune(keep)
        return self._committed


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


class ModelStore:
    """A model folder (see the module docstring). ``ModelStore(path)`` opens or names one; it
    need not exist yet (:meth:`writer` creates it)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    # -- state -------------------------------------------------------------------------------------
    def is_model(self) -> bool:
        return (self.root / CURRENT).is_file()

    def is_legacy(self) -> bool:
        return not self.is_model() and any((self.root / f).exists() for f in _LEGACY)

    def check_model(self) -> None:
        """A clear error unless this is a model folder of this format."""
        if not self.root.is_dir():
            raise DualrecError(f"model folder not found: {self.root}")
        if self.is_legacy():
            raise DualrecError(
                f"{self.root} was written by an older dualrec (pickled files at the top level). It is "
                "not read, because loading it could run code. Train again into a new folder: "
                f"`dualrec train DATASET --out NEW_MODEL_FOLDER`"
            )
        if not self.is_model():
            raise DualrecError(
                f"{self.root} is not a trained dualrec model (no {CURRENT}); "
                "train one with `dualrec train DATASET --out MODEL`"
            )

    def current_name(self) -> str:
        self.check_model()
        name = (self.root / CURRENT).read_text().strip()
        if not valid_version_name(name):
            raise DualrecError(f"{self.root}/{CURRENT} names no valid version ({name[:40]!r})")
        return name

    def versions(self) -> list[str]:
        d = self.root / VERSIONS
        if not d.is_dir():
            return []
        return sorted(p.name for p in d.iterdir() if valid_version_name(p.name) and (p / MANIFEST).is_file())

    def version(self, name: str | None = None, verify: bool = True) -> ModelVersion:
        """The named version (default: the current one), verified against its manifest."""
        self.check_model()
        if name is None:
            name = self.current_name()
        elif not valid_version_name(name):
            raise DualrecError(f"{name[:40]!r} is not a version name (like v000003)")
        if not (self.root / VERSIONS / name).is_dir():
            raise DualrecError(f"no version {name} (versions: {', '.join(self.versions()) or 'none'})")
        return ModelVersion(self.root, name, verify=verify)

    @property
    def checkpoint_dir(self) -> Path:
        return self.root / CHECKPOINT

    # -- writing -----------------------------------------------------------------------------------
    @contextmanager
    def lock(self, wait: float = 0.0, what: str = "write"):
        """An exclusive lock on the folder for writers. ``wait`` seconds at most, then
        :class:`~dualrec.errors.ModelBusyError` naming who holds it."""
        from filelock import FileLock, Timeout

        if self.root.exists() and not self.root.is_dir():
            raise DualrecError(f"{self.root} exists and is not a folder")
        self.root.mkdir(parents=True, exist_ok=True)
        lk = FileLock(str(self.root / LOCK), timeout=max(0.0, float(wait)))
        owner = self.root / (LOCK + ".owner")
        try:
            lk.acquire()
        except Timeout:
            holder = ""
            try:
                o = json.loads(owner.read_text())
                holder = f" by `{o.get('command', '?')}` (pid {o.get('pid')}, since {o.get('since')})"
            except (OSError, ValueError):
                pass
            raise ModelBusyError(
                f"the model folder {self.root} is being written{holder}; try again when it is done"
            ) from None
        try:
            try:
                since = time.strftime("%Y-%m-%dT%H:%M:%S")
                owner.write_text(json.dumps({"pid": os.getpid(), "command": what, "since": since}))
            except OSError:
                pass
            self._clean_staging()
            yield self
        finally:
            lk.release()

    def writer(self, parent: ModelVersion | None) -> VersionWriter:
        """A new version in staging (call under :meth:`lock`)."""
        return VersionWriter(self, parent)

    def prepare_new(self) -> None:
        """Before a first write: refuse a folder that holds something else, or the old layout."""
        if self.root.exists() and not self.root.is_dir():
            raise DualrecError(f"{self.root} exists and is not a folder")
        if self.is_legacy():
            self.check_model()  # raises, naming the old layout
        if self.root.is_dir() and not self.is_model():
            other = [
                p.name
                for p in self.root.iterdir()
                if p.name not in (LOCK, LOCK + ".owner", STAGING, CHECKPOINT, VERSIONS)
            ]
            if other:
                raise DualrecError(
                    f"{self.root} is not empty and not a dualrec model folder "
                    f"(it holds {', '.join(sorted(other)[:3])}); choose a new folder"
                )

    def _next_name(self) -> str:
        names = self.versions()
        d = self.root / VERSIONS
        if d.is_dir():  # a version folder without manifest still takes its number
            names += [p.name for p in d.iterdir() if valid_version_name(p.name)]
        last = max((int(n[1:]) for n in names), default=0)
        return f"v{last + 1:06d}"

    def _set_current(self, name: str) -> None:
        tmp = self.root / f".{CURRENT}.tmp-{os.getpid()}"
        with open(tmp, "w") as f:
            f.write(name + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.root / CURRENT)
        _fsync_dir(self.root)

    def _clean_staging(self) -> None:
        """Remove versions left half-written by a killed writer (we hold the lock)."""
        shutil.rmtree(self.root / STAGING, ignore_errors=True)
        for p in self.root.glob(f".{CURRENT}.tmp-*"):
            p.unlink(missing_ok=True)
        d = self.root / VERSIONS
        if d.is_dir():
            for p in d.iterdir():
                if p.is_dir() and not (p / MANIFEST).is_file():
                    shutil.rmtree(p, ignore_errors=True)

    def prune(self, keep: int = DEFAULT_KEEP) -> list[str]:
        """Delete all but the ``keep`` newest versions (never the current one)."""
        if keep < 1:
            raise DualrecError("keep must be at least 1")
        cur = self.current_name()
        names = self.versions()
        old = [n for n in names[:-keep] if n != cur] if len(names) > keep else []
        for n in old:  # renamed away first: a kill during the delete leaves no half version in versions/
            trash = self.root / STAGING / f"pruned-{n}-{uuid.uuid4().hex[:6]}"
            trash.parent.mkdir(exist_ok=True)
            os.rename(self.root / VERSIONS / n, trash)
            shutil.rmtree(trash, ignore_errors=True)
        return old

    def rollback(self, to: str | None = None, wait: float = 10.0) -> str:
        """Make ``to`` current (default: the version that was current before the current one was
        written); returns its name."""
        with self.lock(wait, "dualrec rollback"):
            cur = self.current_name()
            names = self.versions()
            if to is None:
                to = self.version(cur, verify=False).info.get("replaces")
                if not to or to not in names:
                    raise DualrecError(
                        f"the version that {cur} replaced is not kept; name one with --to "
                        f"(versions: {', '.join(names)})"
                    )
            self.version(to, verify=True)  # verified before it is served
            self._set_current(to)
            return to


def open_version(model_dir: str | Path, version: str | None = None, verify: bool = True) -> ModelVersion:
    """The current (or named) version of a model folder; clear errors for anything else.

    Readers take no lock: if the current version is replaced and pruned while it is being opened,
    the new current one is opened instead."""
    store = ModelStore(model_dir)
    try:
        return store.version(version, verify=verify)
    except DualrecError:
        if version is not None or not store.is_model():
            raise
        return store.version(None, verify=verify)


def save_trained(
    w: VersionWriter,
    *,
    config: dict,
    state_dict: dict,
    in_channels: int,
    split,
    graph,
    features: np.ndarray,
    feature_spec: dict,
    source,
    target,
    history: list,
    best_epoch: int,
    val_metrics: dict,
) -> None:
    """Write everything a trained DAEMON model needs into a version (no second stage, no index)."""
    w.save_state_dict("weights.safetensors", state_dict)
    w.save_json(
        "config.json",
        {
            "train": config,
            "in_channels": int(in_channels),
            "num_nodes": graph.num_products,
            "split": {"seed": split.seed, "val_fraction": split.val_fraction, "test_fraction": split.test_fraction},
            "best_epoch": int(best_epoch),
            "val_metrics": val_metrics,
            "history": history,
        },
    )
    w.save_array("split.npy", split.labels.numpy().astype(np.int8))
    w.save_array("cp_edges.npy", np.stack([graph.cp_src.numpy(), graph.cp_dst.numpy()]).astype(np.int64))
    w.save_array("cp_weight.npy", graph.cp_weight.numpy().astype(np.float32))
    w.save_array("sim_edges.npy", np.stack([graph.sim_a.numpy(), graph.sim_b.numpy()]).astype(np.int64))
    w.save_array("sim_weight.npy", graph.sim_weight.numpy().astype(np.float32))
    w.save_parquet("products.parquet", graph.products)
    w.save_array("features.npy", np.asarray(features, dtype=np.float16))
    w.save_json("features.json", feature_spec)
    w.save_array("source.npy", np.asarray(source, dtype=np.float32))
    w.save_array("target.npy", np.asarray(target, dtype=np.float32))
