"""Training end to end on the synthetic store: quality against popularity, direction, checkpoints."""

from dataclasses import asdict, replace
from pathlib import Path

import pytest
import torch

from dualrec.baselines import Popularity
from dualrec.evaluate import RankingEvaluator
from dualrec.features import load_or_build_features
from dualrec.graph import DualrecError
from dualrec.split import TEST, TRAIN, VAL
from dualrec.synthetic import make_store
from dualrec.train import TrainConfig, evaluate_embeddings, train


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    d = tmp_path_factory.mktemp("store")
    g = make_store(n_products=2000, seed=3)
    g.save(d)
    return g, load_or_build_features(g.products, d, "hash", show_progress=False)


@pytest.fixture(scope="module")
def trained(store, tmp_path_factory):
    g, x = store
    cfg = TrainConfig(encoder="hash", epochs=12, patience=4, seed=0)
    out = tmp_path_factory.mktemp("model")
    return train(g, x, cfg, out, progress=False, log=lambda m: None), out, cfg


def _test_and_popularity(g, res):
    """Test metrics of a trained model and of popularity on the same split."""
    test = evaluate_embeddings(g, res.split, res.source, res.target, TEST)
    known = res.split.mask(TRAIN) | res.split.mask(VAL)
    m = res.split.mask(TEST)
    pop = RankingEvaluator(g.num_products).eval(
        Popularity().fit(g, res.split.mask(TRAIN)).score_fn, g.cp_src[m], g.cp_dst[m], g.cp_src[known], g.cp_dst[known]
    )
    return test, pop


def test_beats_popularity_and_respects_direction(store, trained):
    g, _ = store
    res, _, _ = trained
    test, pop = _test_and_popularity(g, res)
    assert test["HitRate@10"] > 3 * pop["HitRate@10"], (test, pop)
    assert test["MRR@10"] > 3 * pop["MRR@10"]
    # main -> accessory: the forward score beats the reverse one
    role = g.products["role"].to_numpy()
    m = res.split.mask(TEST)
    src, dst = g.cp_src[m], g.cp_dst[m]
    sel = torch.as_tensor((role[src] == "main") & (role[dst] == "accessory")) & ~g.reciprocal_mask(src, dst)
    fwd = (res.source[src[sel]] * res.target[dst[sel]]).sum(1)
    rev = (res.source[dst[sel]] * res.target[src[sel]]).sum(1)
    assert (fwd > rev).float().mean() >= 0.9


def test_checkpoints_hold_config_and_split(trained):
    res, out, cfg = trained
    last = torch.load(out / "last.pt", weights_only=True)  # tensors and plain data only
    assert last["config"] == asdict(cfg)
    assert torch.equal(last["split"]["labels"], res.split.labels)
    assert res.history and all("val_MRR@10" in h for h in res.history)
    # the kept model is the best validation epoch
    assert res.best_epoch == max(res.history, key=lambda h: h["val_MRR@10"])["epoch"]


def test_resume_continues_from_last_epoch(store, tmp_path):
    g, x = store
    cfg = TrainConfig(encoder="hash", epochs=2, patience=10, seed=1)
    train(g, x, cfg, tmp_path, progress=False, log=lambda m: None)
    cfg2 = TrainConfig(**{**asdict(cfg), "epochs": 3})
    with pytest.raises(DualrecError, match=r"other settings \(epochs: checkpoint 2, now 3\)"):
        train(g, x, cfg2, tmp_path, resume=True, progress=False, log=lambda m: None)
    # same config, more epochs requested through a fresh run with epochs=3 and resume: config must match,
    # so resume with the identical config continues after the stored epoch and adds nothing new.
    lines = []
    res = train(g, x, cfg, tmp_path, resume=True, progress=False, log=lines.append)
    assert [h["epoch"] for h in res.history] == [0, 1]
    assert not lines or not any(line.startswith("epoch   0") for line in lines)


def test_a_large_models_best_epoch_waits_on_disk(store, tmp_path, monkeypatch):
    import tempfile

    import dualrec.train as T

    g, x = store
    cfg = TrainConfig(encoder="hash", epochs=3, patience=10, seed=2, batching="history")
    kept = train(g, x, cfg, progress=False, log=lambda m: None)  # held in memory (a small model)
    monkeypatch.setattr(T, "SPILL_BEST_FROM", 0)
    own = set(Path(tempfile.gettempdir()).glob("dualrec-best-*"))
    spilled = train(g, x, cfg, progress=False, log=lambda m: None)
    assert set(Path(tempfile.gettempdir()).glob("dualrec-best-*")) == own  # its own folder is removed
    ck = tmp_path / "ck"
    in_folder = train(g, x, cfg, ck, progress=False, log=lambda m: None)
    for res in (spilled, in_folder):  # the same best epoch's weights, read back from the file
        assert res.best_epoch == kept.best_epoch
        assert torch.equal(res.source, kept.source) and torch.equal(res.target, kept.target)
    last = torch.load(ck / "last.pt", weights_only=True)
    assert last["best_state"] is None and last["best_file"].startswith(f"best-{kept.best_epoch}-")
    assert [p.name for p in ck.glob("best-*.pt")] == [last["best_file"]]  # the earlier ones are gone
    again = train(g, x, cfg, ck, resume=True, progress=False, log=lambda m: None)  # resumes at the end
    assert torch.equal(again.source, kept.source)
    (ck / last["best_file"]).unlink()
    with pytest.raises(DualrecError, match="cannot read the best epoch's weights"):
        train(g, x, cfg, ck, resume=True, progress=False, log=lambda m: None)
    # a new run in the folder writes files of its own name: a kill before its first checkpoint
    # leaves the earlier checkpoint naming its own file, never this run's weights
    train(g, x, cfg, ck, progress=False, log=lambda m: None)
    newer = torch.load(ck / "last.pt", weights_only=True)["best_file"]
    assert newer != last["best_file"] and [p.name for p in ck.glob("best-*.pt")] == [newer]


@pytest.mark.parametrize("hard_negatives", [0, 16])
def test_seeded_runs_are_reproducible(store, hard_negatives):
    g, x = store
    cfg = TrainConfig(encoder="hash", epochs=2, seed=5, hard_negatives=hard_negatives)
    a = train(g, x, cfg, progress=False, log=lambda m: None)
    b = train(g, x, cfg, progress=False, log=lambda m: None)
    # Bit for bit on one machine and thread count. (Hard negatives once went through a 2-D
    # index whose multi-threaded backward added in a varying order: runs drifted apart.)
    assert torch.equal(a.source, b.source) and torch.equal(a.target, b.target)
    assert torch.equal(a.split.labels, b.split.labels)


def test_bad_inputs(store):
    g, x = store
    with pytest.raises(DualrecError, match="rows"):
        train(g, x[:10], TrainConfig(encoder="hash", epochs=1), progress=False)
    with pytest.raises(DualrecError, match="unknown training option"):
        TrainConfig.from_dict({"epochz": 3})


def test_auto_batching_follows_the_catalogue_size():
    from dualrec.train import HISTORY_FROM, batching_mode

    assert batching_mode(TrainConfig(), 10_000) == "full"
    assert batching_mode(TrainConfig(), HISTORY_FROM + 1) == "history"
    assert batching_mode(TrainConfig(batching="full"), HISTORY_FROM + 1) == "full"
    assert batching_mode(TrainConfig(batching="history"), 10) == "history"
    with pytest.raises(DualrecError, match="batching must be one of"):
        TrainConfig.from_dict({"batching": "clusters"})


def test_auto_rounds_and_validation_edges_follow_the_catalogue_size():
    from dualrec.train import MAX_VAL_EDGES, MIN_VAL_EDGES, ROUND_STEPS, round_steps, val_edges

    auto = TrainConfig()
    assert round_steps(auto, 20_000) == ROUND_STEPS and round_steps(auto, 5_000_000) == 10_000
    assert val_edges(auto, 20_000) == MAX_VAL_EDGES and val_edges(auto, 1_000_000) == 4_000
    assert val_edges(auto, 10**8) == MIN_VAL_EDGES
    assert round_steps(TrainConfig(max_steps_per_epoch=0), 10**7) == 0  # given: no cap
    assert val_edges(TrainConfig(max_val_edges=123), 10**7) == 123
    assert TrainConfig.from_dict({"max_steps_per_epoch": "auto", "max_val_edges": 7}).max_val_edges == 7
    for bad in ("automatic", -1, 1.5, True):
        with pytest.raises(DualrecError, match=r"max_steps_per_epoch must be .* or 'auto', got"):
            TrainConfig.from_dict({"max_steps_per_epoch": bad})


def test_a_capped_epoch_validates_after_its_steps_and_builds_only_what_it_trains(store, monkeypatch):
    """An epoch cut at max_steps_per_epoch takes its steps from its first fold; the adjacency of
    the folds it never reaches is not built (at millions of products each costs seconds)."""
    import dualrec.train as T

    g, x = store
    built, logs = [], []
    real = T.message_passing_adjacency
    monkeypatch.setattr(T, "message_passing_adjacency", lambda *a, **k: built.append(1) or real(*a, **k))
    cfg = TrainConfig(encoder="hash", epochs=2, seed=0, batching="history", max_steps_per_epoch=3)
    res = train(g, x, cfg, progress=False, log=logs.append)
    assert [h["steps"] for h in res.history] == [3, 3]
    assert len(built) == 1 + 2  # the inference adjacency, then one fold per epoch
    assert any("after every 3 steps (an epoch would be" in m for m in logs), logs


def test_a_time_limit_ends_training_after_the_epoch_that_passes_it(store):
    g, x = store
    logs = []
    cfg = TrainConfig(encoder="hash", epochs=3, seed=0, max_steps_per_epoch=2, max_seconds=1e-6)
    res = train(g, x, cfg, progress=False, log=logs.append)
    assert len(res.history) == 1 and res.best_epoch == 0
    assert any(m.startswith("time limit:") for m in logs), logs
    unlimited = replace(cfg, max_seconds=0.0)
    assert len(train(g, x, unlimited, progress=False, log=lambda m: None).history) == 3


def test_history_mode_refuses_models_that_would_read_their_targets(store, tmp_path):
    g, x = store
    for bad in ({"num_layers": 3}, {"use_reverse": True}):
        with pytest.raises(DualrecError, match="at most 2 layers without use_reverse"):
            train(g, x, TrainConfig(encoder="hash", epochs=1, batching="history", **bad), progress=False)
    # a checkpoint is resumed in the mode it was trained in, whatever `auto` would pick now
    train(g, x, TrainConfig(encoder="hash", epochs=1, seed=1), tmp_path, progress=False, log=lambda m: None)
    with pytest.raises(DualrecError, match="trained with batching full, this run would use history"):
        train(g, x, TrainConfig(encoder="hash", epochs=1, seed=1, batching="history"), tmp_path, resume=True)


def test_history_mode_learns_resumes_and_says_so(store, tmp_path):
    g, x = store
    cfg = TrainConfig(encoder="hash", epochs=6, patience=6, seed=0, batching="history")
    res = train(g, x, cfg, tmp_path, progress=False, log=lambda m: None)
    assert res.batching == "history"
    # the id rows are trained through sparse gradients, then handed back as a plain embedding
    assert res.model.id_emb.sparse is False
    test, pop = _test_and_popularity(g, res)
    assert test["HitRate@10"] > 2 * pop["HitRate@10"], (test, pop)
    assert res.history[-1]["val_MRR@10"] > res.history[0]["val_MRR@10"]
    last = torch.load(tmp_path / "last.pt", weights_only=True)
    assert last["batching"] == "history" and last["sparse_optimizer"] is not None
    # a resume with more epochs is refused (other settings); the same settings continue cleanly
    again = train(g, x, cfg, tmp_path, resume=True, progress=False, log=lambda m: None)
    assert [h["epoch"] for h in again.history] == list(range(6))


def test_a_profiled_history_step_is_split_into_its_named_phases(store):
    """benchmarks/train_profile.py attributes a step's operators to these ranges: each step has
    each of them once, and between them they hold the step's work (forward, backward, optimiser)."""
    from torch.profiler import ProfilerActivity, profile

    from dualrec.train import PHASES

    g, x = store
    cfg = TrainConfig(encoder="hash", epochs=1, seed=0, batching="history", max_steps_per_epoch=3)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        train(g, x, cfg, progress=False, log=lambda m: None)
    events = prof.events()
    counts = {p: sum(e.name == name for e in events) for p, name in PHASES.items()}
    assert counts == dict.fromkeys(PHASES, 3), counts

    def inside(e, phase):
        p = e.cpu_parent
        while p is not None and p.name != PHASES[phase]:
            p = p.cpu_parent
        return p is not None

    ops = [e for e in events if e.name in ("aten::mm", "aten::addmm")]
    assert any(inside(e, "forward") for e in ops) and any(inside(e, "backward") for e in ops)
    assert any(inside(e, "optimiser") for e in events if "adam" in e.name.lower())


def test_two_workers_train_like_one_process_on_the_same_batches(tmp_path):
    """`dualrec train --workers 2`: two processes under torchrun (DDP over gloo), each on half of
    every batch. Their losses follow the single-process run's, their replicas end identical (the
    run checks it and says so), and the model folder is the same format."""
    import subprocess
    import sys

    from dualrec.store import open_version

    ds = tmp_path / "ds"
    make_store(n_products=600, seed=2).save(ds)
    runs = {}
    for workers in (1, 2):
        out = tmp_path / f"m{workers}"
        cmd = [sys.executable, "-m", "dualrec.cli", "train", str(ds), "--out", str(out), "--encoder", "hash"]
        cmd += ["--epochs", "3", "--batching", "history", "--no-rerank", "--quiet", "--workers", str(workers)]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr[-3000:]
        v = open_version(out)
        runs[workers] = (v, v.json("config.json")["history"], r.stderr)
    (v1, h1, _), (v2, h2, err2) = runs[1], runs[2]
    assert "2 workers: their models are identical" in err2
    assert [h["steps"] for h in h1] == [h["steps"] for h in h2]  # the same batches, one step each
    for a, b in zip(h1, h2):
        assert abs(a["loss"] - b["loss"]) < 0.02 * a["loss"], (h1, h2)
    files = lambda v: sorted(p.relative_to(v.dir).as_posix() for p in v.dir.rglob("*") if p.is_file())  # noqa: E731
    assert files(v1) == files(v2) and v2.info["batching"] == "history"
