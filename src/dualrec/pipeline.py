"""Library-level pipeline: dataset folder -> features -> trained model folder -> metrics.

The CLI is a thin face over these functions; benchmarks and tests call them directly. Model
folders are read and written only through :mod:`dualrec.store`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch

from dualrec.errors import DualrecError, ModelBusyError
from dualrec.features import feature_spec, fingerprint, load_or_build_features
from dualrec.graph import ProductGraph
from dualrec.lists import DEFAULT_LIST_K, discard_parts, precompute_lists, save_lists
from dualrec.rerank import RERANK_DIR, RerankConfig, fit_two_stage, load_model_reranker
from dualrec.split import TEST, TRAIN, VAL
from dualrec.store import DEFAULT_KEEP, ModelStore, ModelVersion, open_version, save_trained
from dualrec.train import TrainConfig, TrainResult, batching_mode, distributed, evaluate_embeddings, train

# the second stage's fit details kept in rerank/rerank.json only, not repeated in model.json
_RERANK_DETAIL = ("features", "new_gate")


def data_fingerprint(graph: ProductGraph, encoder: str) -> str:
    """Products, metadata and edges of a dataset: what a resumed training must see again."""
    h = hashlib.sha256(fingerprint(graph.products, encoder).encode())
    for t in (graph.cp_src, graph.cp_dst, graph.cp_weight, graph.sim_a, graph.sim_b, graph.sim_weight):
        h.update(t.numpy().tobytes())
    return h.hexdigest()[:16]


def train_dataset(
    dataset_dir: str | Path,
    model_dir: str | Path,
    config: TrainConfig | None = None,
    resume: bool = False,
    progress: bool = True,
    log=print,
    rerank: bool = True,
    keep: int = DEFAULT_KEEP,
    list_k: int = DEFAULT_LIST_K,
    rerank_config: RerankConfig | None = None,
    tune_trials: int = 0,
    tune_budget: float | None = None,
) -> TrainResult:
    """Train on a dataset folder made by ``dualrec ingest`` and write a new model version.

    ``rerank`` (default) also fits the second stage (:mod:`dualrec.rerank`: co-occurrence
    candidates and a LambdaMART pair model, learned from the validation edges); ``recommend``,
    ``evaluate`` and ``serve`` then use it. The folder is locked for the whole run; the version
    it serves changes only when the new one is complete (see :mod:`dualrec.store`).

    With the second stage, every product's top-``list_k`` is precomputed into the version
    (:mod:`dualrec.lists`; ``0``: none) and catalogues above ``HNSW_FROM`` products get an HNSW
    retrieval index for DAEMON's candidates (``dualrec index`` changes it later), above
    ``TEXT_INDEX_FROM`` one over the text for new products' neighbours.
    ``rerank_config`` sets the second stage (e.g. ``new_slots``, the room new products get;
    its ``seed`` is the training's). ``tune_trials`` > 0 first chooses settings on the validation
    edges (:func:`dualrec.tune.tune`, at most ``tune_budget`` seconds when given) and keeps the best
    trial's model; ``model.json`` records the choice (``tuning``).

    The result's ``model`` is None: the trained weights are in the version
    (:func:`dualrec.store.open_version` reads them back).
    """
    config = (config or TrainConfig()).validate()
    if tune_trials < 0:
        raise DualrecError("tune_trials must be >= 0")
    if keep < 1:
        raise DualrecError("keep must be at least 1")
    if isinstance(list_k, bool) or not isinstance(list_k, int) or not 0 <= list_k <= 1000:
        raise DualrecError("list_k must be an integer in 0..1000")
    rank, world = distributed()
    if tune_trials and world > 1:  # every worker says so, before any of them waits for the others
        raise DualrecError("tuning runs in one process: drop --workers or --tune-trials")
    if rank:  # another worker of a data-parallel training: it trains, the first worker writes
        return _train_worker(dataset_dir, model_dir, config, resume)
    store = ModelStore(model_dir)
    store.prepare_new()
    graph = ProductGraph.load(dataset_dir)
    created = not store.root.exists()
    try:
        return _train_into(
            store,
            graph,
            dataset_dir,
            config,
            resume,
            progress,
            log,
            rerank,
            keep,
            list_k,
            rerank_config,
            (tune_trials, tune_budget),
        )
    except ModelBusyError:
        raise  # the folder is another writer's
    except BaseException:
        # a first training that failed before its first epoch leaves no empty folder behind (with
        # a checkpoint, the folder stays for --resume)
        ck = store.checkpoint_dir
        if created and not store.is_model() and not any((ck / f).exists() for f in ("last.pt", "tuning.json")):
            shutil.rmtree(store.root, ignore_errors=True)
        raise


def _tuned(store: ModelStore, graph, x, config: TrainConfig, resume: bool, log, trials: int, budget):
    """``(config, tuning record, trained result or None)``: the settings chosen on validation edges
    (:mod:`dualrec.tune`) with the best trial's model, or those a killed run chose before (resumed:
    the model is trained again, from its checkpoint if it has one)."""
    if not trials:
        return config, None, None
    path = store.checkpoint_dir / "tuning.json"
    if resume and path.exists():
        try:
            record = json.loads(path.read_text())
            best = TrainConfig.from_dict({**asdict(config), **record["best"]})
        except (ValueError, KeyError, TypeError, DualrecError):
            log(f"{path} is unreadable: tuning again")
        else:
            log(f"resuming with the settings tuning chose before: {record['best']}")
            return best, record, None
    from dualrec.tune import tune

    res = tune(graph, x, config, trials, budget, log=log)
    record = res.as_dict()
    tmp = path.with_suffix(".tmp")  # a kill mid-write leaves the old file or none, never half of one
    tmp.write_text(json.dumps(record, indent=1))
    os.replace(tmp, path)
    return TrainConfig.from_dict({**asdict(config), **res.best}), record, res.result


def _train_into(
    store: ModelStore,
    graph: ProductGraph,
    dataset_dir,
    config: TrainConfig,
    resume: bool,
    progress: bool,
    log,
    rerank: bool,
    keep: int,
    list_k: int = DEFAULT_LIST_K,
    rerank_config: RerankConfig | None = None,
    tuning: tuple = (0, None),
) -> TrainResult:
    with store.lock(0, f"dualrec train {Path(dataset_dir).name}"):
        x = _training_features(graph, dataset_dir, config, progress)
        if distributed()[1] > 1:
            torch.distributed.barrier()  # the features are cached: the other workers read them
        store.checkpoint_dir.mkdir(exist_ok=True)
        config, tuned, result = _tuned(store, graph, x, config, resume, log, *tuning)
        if tuned is not None:  # a run killed after tuning may have no training checkpoint yet
            resume = resume and (store.checkpoint_dir / "last.pt").exists()
        if result is None:
            result = train(
                graph,
                x,
                config,
                store.checkpoint_dir,
                resume=resume,
                progress=progress,
                log=log,
                data_fingerprint=data_fingerprint(graph, config.encoder),
            )
        info = {
            "dataset": Path(dataset_dir).name,
            "encoder": config.encoder,
            "num_products": graph.num_products,
            "trained_products": graph.num_products,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "best_epoch": result.best_epoch,
            "train_seconds": result.seconds,
            "batching": result.batching,
            "precision": result.precision,
            "id_optimizer": result.id_optimizer,
            "ranker": "daemon",
        }
        if tuned is not None:
            info["tuning"] = tuned
        with store.writer(None) as w:
            save_trained(
                w,
                config=asdict(config),
                state_dict=result.model.state_dict(),
                in_channels=x.shape[1],
                split=result.split,
                graph=graph,
                features=x.numpy(),
                feature_spec=feature_spec(graph.products, config.encoder),
                source=result.source.numpy(),
                target=result.target.numpy(),
                history=result.history,
                best_epoch=result.best_epoch,
                val_metrics=result.val_metrics,
            )
            # the weights are in the version now; their per-product table (N x id_dim floats, GBs
            # on a large catalogue) need not be held through the second stage's build
            result.model = None
            if rerank:
                split = result.split
                vm = split.mask(VAL)
                t0 = time.time()
                try:
                    index = _first_stage_index(w, result.source, result.target, log)
                    if index is not None:  # stored in the version, as `dualrec index` would
                        info["index"] = index.kind
                    rr = fit_two_stage(
                        graph,
                        split.mask(TRAIN),
                        graph.cp_src[vm],
                        graph.cp_dst[vm],
                        x.half(),  # as the version stores them (features.npy), read back when serving
                        result.source,
                        result.target,
                        seed=config.seed,
                        config=replace(rerank_config or RerankConfig(), seed=config.seed),
                        log=log,
                        progress=progress,
                        index=index,
                    )
                    if x.shape[0] > TEXT_INDEX_FROM:  # a new product's text neighbours, without a scan of N
                        rr.build_text_index(log=log)
                        info["text_index_recall_at_10"] = rr.text_index.meta.get("recall_at_10")
                    rr.save(w, RERANK_DIR)
                    if list_k:
                        _precompute_lists(w, rr, graph, list_k, store.checkpoint_dir, progress, log, info)
                except Exception as e:  # e.g. too few validation edges on a toy graph: say so, keep DAEMON
                    msg = str(e) if isinstance(e, DualrecError) else f"{type(e).__name__}: {e}"
                    log(f"second stage not fitted ({msg}); recommendations rank by DAEMON alone")
                    info["rerank_error"] = msg
                    for p in (w.dir / RERANK_DIR).glob("*"):
                        p.unlink()
                else:
                    info.update(
                        ranker="two-stage",
                        rerank_seconds=round(time.time() - t0, 3),
                        new_slots=rr.cfg.new_slots,
                        new_position=rr.cfg.new_position,
                        new_min_confidence=rr.cfg.new_min_confidence,
                        new_gate=rr.cfg.new_gate,
                        rerank={k: v for k, v in rr.info_.items() if k not in _RERANK_DETAIL},
                    )
            v = w.commit(info, keep=keep)
        discard_parts(store.checkpoint_dir)
        (store.checkpoint_dir / "tuning.json").unlink(missing_ok=True)  # this training's, now done
    result.version = v.name
    return result


def _training_features(graph: ProductGraph, dataset_dir, config: TrainConfig, progress: bool) -> torch.Tensor:
    """The features training reads: float16 in the history mode, which widens only its batch's
    rows (half the memory on a large catalogue; the model folder stores them as float16 anyway)."""
    x = load_or_build_features(graph.products, dataset_dir, config.encoder, show_progress=progress)
    return x.half() if batching_mode(config, graph.num_products) == "history" else x


def _train_worker(dataset_dir, model_dir, config: TrainConfig, resume: bool) -> TrainResult:
    """A data-parallel worker other than the first: the same training, no output of its own."""
    graph = ProductGraph.load(dataset_dir)
    torch.distributed.barrier()  # wait for the first worker to encode and cache the features
    x = _training_features(graph, dataset_dir, config, False)
    return train(
        graph,
        x,
        config,
        ModelStore(model_dir).checkpoint_dir,
        resume=resume,
        progress=False,
        log=lambda m: None,
        data_fingerprint=data_fingerprint(graph, config.encoder),
    )


#: catalogues above this many products get an HNSW index for DAEMON's candidates at training
HNSW_FROM = 200_000
#: ... and above this many, one over the text for a new product's neighbours with history (the
#: second stage's text index): lower than HNSW_FROM because the text is wider than the embeddings,
#: so an exact search over it costs more per product (benchmarks/results/cold_query_scale.json)
TEXT_INDEX_FROM = 50_000


def _first_stage_index(w, source: torch.Tensor, target: torch.Tensor, log):
    """The retrieval index the second stage takes DAEMON's candidates from: exact on small
    catalogues (built in memory when needed), HNSW (stored in the version) on large ones."""
    if len(target) <= HNSW_FROM:
        return None
    from dualrec.index import INDEX_DIRNAME, META_FILE, RetrievalIndex

    idx = RetrievalIndex.build(target.numpy(), "hnsw", source=source.numpy(), log=log)
    idx.save(w.new_path(f"{INDEX_DIRNAME}/{META_FILE}").parent)
    return idx


def _precompute_lists(w, rr, graph: ProductGraph, k: int, parts_dir: Path, progress: bool, log, info: dict) -> None:
    """Every product's list, as it is served (every logged co-purchase first), into ``lists/``."""
    rr.show_logged(graph.cp_src.numpy(), graph.cp_dst.numpy())
    # a kept batch is reused only for the same pair model, embeddings and index
    h = hashlib.sha1(rr.model.model_to_string().encode())
    for a in (rr.s, rr.t):
        h.update(np.ascontiguousarray(a[:4096]).tobytes())
    h.update(json.dumps(rr._index().meta.get("params", {}), sort_keys=True).encode() + rr._index().kind.encode())
    h.update(json.dumps(asdict(rr.cfg), sort_keys=True).encode())  # e.g. cold_neighbours
    if rr.x is not None:  # the lists of products without history read the text features
        h.update(np.ascontiguousarray(rr.x[:4096]).tobytes())
    key = h.hexdigest()
    items, scores, linfo = precompute_lists(
        rr.known_top_k, graph.num_products, k, parts_dir=parts_dir, key=key, progress=progress
    )
    save_lists(w, items, scores, linfo)
    info["lists"] = {"k": k, "seconds": linfo["seconds"]}
    log(f"precomputed lists: top-{k} of {graph.num_products:,} products in {linfo['seconds']:.0f} s")


def evaluate_model(
    model_dir: str | Path,
    part: str = "test",
    dataset_dir: str | Path | None = None,
    progress: bool = True,
    version: str | None = None,
) -> dict:
    """Metrics of a model version on its held-out ``test`` (or ``val``) edges, ranking all products.

    The version holds the graph and split it was trained on; ``dataset_dir`` (optional) checks
    that a dataset folder is still that graph.
    """
    if part not in ("test", "val"):
        raise DualrecError("part must be 'test' or 'val'")
    v = open_version(model_dir, version)
    graph, split = v.graph(), v.split()
    if dataset_dir is not None:
        other = ProductGraph.load(dataset_dir)
        same = (
            other.num_products == graph.num_products
            and other.num_copurchase == graph.num_copurchase
            and torch.equal(other.cp_src, graph.cp_src)
            and torch.equal(other.cp_dst, graph.cp_dst)
        )
        if not same:
            raise DualrecError(f"the dataset at {dataset_dir} is not the one this model was trained on")
    s_all, t_all = v.embeddings(mmap=True)
    # Products added since training (cold start) have no held-out edges: rank the trained ones.
    n = graph.num_products
    s, t = (torch.from_numpy(np.array(a[:n], dtype=np.float32)) for a in (s_all, t_all))
    p = TEST if part == "test" else VAL
    # the second stage with the index it serves with (its candidates are the ones a shop gets)
    from dualrec.index import load_model_index

    rr = load_model_reranker(v, s_all, t_all, load_model_index(v, s_all, t_all)) if v.has_reranker else None
    if rr is None:
        return evaluate_embeddings(graph, split, s, t, p, show_progress=progress) | {
            "ranker": "daemon",
            "version": v.name,
        }
    from dualrec.evaluate import RowMemo, evaluate_method, pair_fn_from_score_fn

    # the trained catalogue's columns (products added since have no held-out edges); direction
    # accuracy reads the same rows again, hence the memo
    score_fn = RowMemo(lambda q: rr.score_fn(q)[:, :n], n)
    out = evaluate_method(graph, split, score_fn, pair_fn_from_score_fn(score_fn, n), p, show_progress=progress)
    out["ranker"] = "two-stage"
    out["version"] = v.name
    # the first stage alone, for comparison (on VAL the reranker was fitted: optimistic there)
    out["daemon_alone"] = {
        k: v_ for k, v_ in evaluate_embeddings(graph, split, s, t, p).items() if k.startswith(("HitRate", "MRR"))
    }
    return out


def load_daemon(version: ModelVersion):
    """(config, DAEMON in eval mode, config.json) of a model version; weights read without pickle."""
    from dualrec.train import build_model

    meta = version.json("config.json")
    cfg = TrainConfig.from_dict(meta["train"])
    model = build_model(cfg, int(meta["in_channels"]), int(meta["num_nodes"]))
    try:
        model.load_state_dict(version.state_dict())
    except RuntimeError as e:
        raise DualrecError(f"model version {version.name}: weights do not fit its config ({str(e)[:200]})") from e
    model.eval()
    return cfg, model, meta
