"""Choose training settings on validation edges, so that a dataset's settings do not depend on
someone reading an ablation table.

Some of DAEMON's switches help one dataset and hurt another: the co-view augmentation
(``use_similar``, with its loss at the former weight 0.5) lifted Amazon clothing and cost Amazon
cellphones. :func:`tune` runs a small
Optuna study (TPE sampler, seeded) over :data:`SPACE`: every trial trains DAEMON on the training
edges with the trial's settings and is scored by validation MRR@10 (the early-stopping metric),
never by test edges. The first two trials are fixed: the given settings, then the same with the
co-view choice flipped, so the choice that matters most is always measured; further trials let the
sampler explore the learning rate. The budget is a number of trials and, optionally, seconds
(Optuna starts no trial after the time is up; a running one finishes).

``dualrec train --tune-trials N`` runs it before training and writes what it chose and every
trial's score to ``model.json`` (``tuning``).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field

import torch

from dualrec.errors import DualrecError
from dualrec.train import TrainConfig, TrainResult, train

__all__ = ["SPACE", "TuneResult", "tune"]

#: what a study searches: name -> ("categorical", choices) or ("log", low, high)
SPACE: dict[str, tuple] = {
    "use_similar": ("categorical", (True, False)),
    "lr": ("log", 1e-3, 1e-2),
}

METRIC = "MRR@10"


@dataclass
class TuneResult:
    """The chosen TrainConfig overrides, their validation score and every trial."""

    best: dict
    best_value: float
    trials: list = field(default_factory=list)  # {"number", "params", "value", "seconds"}
    seconds: float = 0.0
    metric: str = METRIC
    result: TrainResult | None = None  # the best trial's trained model (not stored)

    def as_dict(self) -> dict:
        d = asdict(self)
        d.pop("result")
        return d


def overrides(params: dict, base: TrainConfig | None = None) -> dict:
    """TrainConfig fields of a trial's parameters: no co-view augmentation means no co-view loss
    either (as the ``daemon_no_similar`` ablation), and turning it on restores the default loss
    weight when ``base`` had none."""
    out = dict(params)
    if out.get("use_similar") is False:
        out["sim_weight"] = 0.0
    elif out.get("use_similar") is True and base is not None and base.sim_weight == 0:
        out["sim_weight"] = TrainConfig.sim_weight
    return out


def tune(
    graph,
    x: torch.Tensor,
    base: TrainConfig,
    trials: int = 2,
    budget_s: float | None = None,
    split=None,
    space: dict | None = None,
    log=print,
) -> TuneResult:
    """Search ``space`` (default :data:`SPACE`) around ``base`` for the best validation MRR@10.

    Each trial trains ``base`` with the trial's settings on ``split`` (default: the split ``base``
    makes, the one the final training uses). Returns the best settings with the best trial's
    trained model (``result``)."""
    import optuna

    space = SPACE if space is None else space
    if trials < 1:
        raise DualrecError("tuning needs at least one trial")
    if budget_s is not None and budget_s <= 0:
        raise DualrecError("the tuning budget must be a positive number of seconds")
    unknown = set(space) - set(TrainConfig.__dataclass_fields__)
    if unknown:
        raise DualrecError(f"cannot tune unknown training option(s): {', '.join(sorted(unknown))}")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=base.seed))
    start = {k: getattr(base, k) for k in space}
    study.enqueue_trial(start)
    if "use_similar" in space:
        study.enqueue_trial({**start, "use_similar": not base.use_similar})
    keep: dict = {}
    t0 = time.perf_counter()

    def objective(trial) -> float:
        params = {}
        for name, spec in space.items():
            if spec[0] == "categorical":
                params[name] = trial.suggest_categorical(name, list(spec[1]))
            elif spec[0] == "log":
                params[name] = trial.suggest_float(name, spec[1], spec[2], log=True)
            else:
                raise DualrecError(f"unknown search space kind {spec[0]!r} for {name}")
        cfg = TrainConfig.from_dict({**asdict(base), **overrides(params, base)})
        ts = time.perf_counter()
        res = train(graph, x, cfg, split=split, progress=False, log=lambda m: None)
        value = float(res.val_metrics.get(METRIC, float("nan")))
        secs = time.perf_counter() - ts
        trial.set_user_attr("seconds", round(secs, 1))
        log(f"tuning trial {trial.number + 1}/{trials}: {_show(params)} -> {METRIC} {value:.4f} ({secs:.0f} s)")
        if math.isfinite(value) and ("value" not in keep or value > keep["value"]):
            keep.update(number=trial.number, result=res)  # Optuna counts a NaN as a failed trial
            keep["value"] = value
        return value

    study.optimize(objective, n_trials=trials, timeout=budget_s)
    done = [t for t in study.trials if t.value is not None and math.isfinite(t.value)]
    if not done:
        raise DualrecError("tuning failed: no trial gave a finite validation score")
    best = study.best_trial
    if best.number != keep.get("number"):  # the model kept is the best trial's, by construction
        raise DualrecError(f"tuning kept trial {keep.get('number')}, Optuna chose {best.number}")
    log(f"tuning chose {_show(best.params)} (validation {METRIC} {best.value:.4f}, {len(done)} trials)")
    return TuneResult(
        best=overrides(best.params, base),
        best_value=float(best.value),
        trials=[
            {"number": t.number, "params": t.params, "value": t.value, "seconds": t.user_attrs.get("seconds")}
            for t in done
        ],
        seconds=round(time.perf_counter() - t0, 1),
        result=keep.get("result"),
    )


def _show(params: dict) -> str:
    return ", ".join(f"{k}={v:.2g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())
