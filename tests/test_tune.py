"""Settings chosen on validation edges (Optuna): both co-view choices measured, the best kept,
the choice recorded in the model folder and reused by a resumed training."""

import json

import pytest
import torch

from dualrec.errors import DualrecError
from dualrec.features import load_or_build_features
from dualrec.synthetic import make_store
from dualrec.train import TrainConfig, train
from dualrec.tune import tune


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    d = tmp_path_factory.mktemp("tune_store")
    g = make_store(n_products=200, seed=5)
    g.save(d)
    return g, load_or_build_features(g.products, d, "hash", show_progress=False), d


def test_tuning_measures_both_coview_choices_and_keeps_the_best(store):
    g, x, _ = store
    base = TrainConfig(encoder="hash", epochs=2, seed=0)
    lines = []
    res = tune(g, x, base, trials=3, log=lines.append)
    assert [t["params"]["use_similar"] for t in res.trials[:2]] == [True, False]
    assert res.trials[0]["params"]["lr"] == base.lr  # the given settings come first
    values = [t["value"] for t in res.trials]
    assert len(values) == 3 and res.best_value == max(values)
    best = res.trials[values.index(max(values))]["params"]
    assert res.best["use_similar"] == best["use_similar"]
    assert res.best.get("sim_weight", base.sim_weight) == (base.sim_weight if best["use_similar"] else 0.0)
    # the kept model is the best trial's: training those settings again gives the same score
    again = train(g, x, TrainConfig(**{**base.__dict__, **res.best}), progress=False, log=lambda m: None)
    assert again.val_metrics["MRR@10"] == pytest.approx(res.best_value, abs=1e-6)
    assert res.result.val_metrics["MRR@10"] == pytest.approx(res.best_value, abs=1e-6)
    assert "tuning chose" in lines[-1] and json.dumps(res.as_dict())


def test_tuning_refuses_bad_budgets_and_unknown_options(store):
    g, x, _ = store
    base = TrainConfig(encoder="hash", epochs=1)
    with pytest.raises(DualrecError, match="at least one trial"):
        tune(g, x, base, trials=0)
    with pytest.raises(DualrecError, match="positive number of seconds"):
        tune(g, x, base, budget_s=0)
    with pytest.raises(DualrecError, match="unknown training option"):
        tune(g, x, base, space={"learning_speed": ("log", 1e-3, 1e-2)})


def test_train_records_the_choice_and_a_resume_reuses_it(store, tmp_path):
    from dualrec.pipeline import train_dataset
    from dualrec.store import open_version

    _, _, d = store
    cfg = TrainConfig(encoder="hash", epochs=2, seed=0)
    res = train_dataset(d, tmp_path / "m", cfg, progress=False, log=lambda m: None, rerank=False, tune_trials=2)
    v = open_version(tmp_path / "m")
    rec = v.info["tuning"]
    assert len(rec["trials"]) == 2 and rec["metric"] == "MRR@10"
    assert v.json("config.json")["train"]["use_similar"] == rec["best"]["use_similar"]
    assert res.val_metrics["MRR@10"] == pytest.approx(rec["best_value"], abs=1e-6)
    assert not (tmp_path / "m" / "checkpoint" / "tuning.json").exists()  # done: not reused by the next training
    # a killed run resumes with the settings it chose, without tuning again
    ck = tmp_path / "m" / "checkpoint"
    (ck / "tuning.json").write_text(json.dumps({**rec, "best": {"use_similar": False, "sim_weight": 0.0}}))
    lines = []
    train_dataset(d, tmp_path / "m", cfg, resume=True, progress=False, log=lines.append, rerank=False, tune_trials=2)
    assert any("resuming with the settings tuning chose before" in m for m in lines)
    assert not any(m.startswith("tuning trial") for m in lines)
    assert open_version(tmp_path / "m").json("config.json")["train"]["use_similar"] is False
    (ck / "tuning.json").write_text('{"best": {"use_sim')  # a write cut short: tuned again, no traceback
    lines.clear()
    train_dataset(d, tmp_path / "m", cfg, resume=True, progress=False, log=lines.append, rerank=False, tune_trials=2)
    assert any("unreadable: tuning again" in m for m in lines) and any(m.startswith("tuning trial") for m in lines)
    assert torch.is_tensor(res.source)
