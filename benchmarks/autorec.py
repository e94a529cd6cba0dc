"""AutoRec and biased MF on MovieLens 100K: d2l 16.4 reproduced, its exercises, then a tuned model.

Usage (needs RECSTACK_DATA_DIR or a cached download; about 15 CPU-minutes single-threaded):
    nice -n 19 .venv/bin/python benchmarks/autorec.py [--seeds 5] [--quick]
Writes benchmarks/results/autorec.json and benchmarks/results/autorec_rmse_per_epoch.png.

Protocol
* random 90/10: ``random_holdout(ratings, 0.1, seed=s)`` for s in 0..seeds-1; run s also
  seeds the initialisation and the shuffles, so the spread covers split *and* training noise
  (d2l's split is unseeded, so each d2l run sees a different split too).
* u1: GroupLens's canonical u1.base / u1.test (``ml100k_u1_split``); seeds vary training only.
* One RatingIndex over all 100 000 ratings (943 users, 1682 items), as d2l; test RMSE is over
  all test ratings, predictions clipped to [1, 5]. d2l setting uses ``cold_start="model"``
  (no fallback, as d2l); the unclipped RMSE is reported beside it for exact parity.
* Model selection (tuned AutoRec and biased MF) uses only a validation slice:
  ``random_holdout(train_of_split_0, 0.1, seed=100)``; the test sets are never looked at to
  choose anything. The chosen setting is then retrained on the full training part of each
  split with the selected epoch count.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from recstack.core.io import atomic_write_bytes, atomic_write_json
from recstack.datasets import load_movielens_100k
from recstack.datasets.rating_splits import ml100k_u1_split, random_holdout
from recstack.experiment.config_files import load_config
from recstack.models.autorec import AutoRec
from recstack.models.biased_mf import BiasedMF
from recstack.models.rating_data import RatingIndex, RatingMatrix
from recstack.training.callbacks import Callback

RESULTS = Path(__file__).resolve().parent / "results"
VALIDATION_SEED = 100

#: The d2l setting and its published RMSE: the shipped autorec config and its reference block.
_D2L_CONFIG = load_config("autorec")
D2L_RMSE = _D2L_CONFIG.reference.metrics["test/root_mean_squared_error"]
REFERENCES = {
    "d2l_autorec_ml100k_random_90_10": {"rmse": D2L_RMSE, "source": _D2L_CONFIG.reference.source},
    "d2l_autorec_ml100k_rendered_page": {"rmse": 0.898, "source": "d2l.ai 16.4 rendered page"},
    "d2l_mf_ml100k_random_90_10": {"rmse": 1.06, "source": "d2l 16.3 (plain MF, no biases)"},
    "autorec_paper_i_autorec_ml1m": {"rmse": 0.831, "source": "Sedhain et al. 2015, ML-1M 90/10"},
    "autorec_paper_u_autorec_ml1m": {"rmse": 0.874, "source": "Sedhain et al. 2015, ML-1M 90/10"},
    "glocal_k_ml100k_u1": {"rmse": 0.889, "source": "Han et al. 2021 (GLocal-K), ML-100K u1 split"},
}


@dataclass(frozen=True)
class AutoRecConfig:
    """One AutoRec setting of this study; the d2l setting (D2L) comes from the autorec config."""

    based: str
    hidden_sizes: tuple[int, ...]
    encoder_activation: str
    decoder_activation: str
    dropout: float
    lr: float
    weight_decay: float  # coupled L2 (torch Adam weight_decay = MXNet Adam wd)
    epochs: int
    batch_size: int
    cold_start: str
    schedule: str = "constant"  # or "cosine": per-step cosine decay to 0 over all epochs


@dataclass(frozen=True)
class MFConfig:
    embedding_dim: int = 32
    l2: float = 0.1
    bias_l2: float = 0.001
    lr: float = 0.003
    epochs: int = 20
    batch_size: int = 1024


def _d2l_setting() -> AutoRecConfig:
    """AutoRecConfig with the autorec config's model, optimizer and training settings."""
    c, m = _D2L_CONFIG, _D2L_CONFIG.model.params
    if c.optimizer.name != "adam":
        raise SystemExit(f"the autorec config uses optimizer {c.optimizer.name!r}; this study assumes adam")
    return AutoRecConfig(based=m.based, hidden_sizes=tuple(m.hidden_sizes), encoder_activation=m.encoder_activation,
                         decoder_activation=m.decoder_activation, dropout=m.dropout, lr=c.optimizer.learning_rate,
                         weight_decay=c.optimizer.weight_decay, epochs=c.training.epochs,
                         batch_size=c.training.batch_size, cold_start=m.cold_start)


D2L = _d2l_setting()
# Candidates for the tuned AutoRec, scored on the validation slice only. They are the best
# settings of a wider validation-only exploration (weight decay 1e-5..3e-3, dropout
# 0.05..0.5, lr 0.001..0.005, 25..150 epochs, hidden 500/1000, ELU, batch 64/256, constant
# or cosine lr); see docs/rating.md.
_TUNED = replace(D2L, epochs=100, schedule="cosine", cold_start="global_mean")
TUNED_GRID = [
    replace(_TUNED, weight_decay=1e-3, dropout=0.2),
    replace(_TUNED, weight_decay=7e-4, dropout=0.25),
    replace(_TUNED, weight_decay=5e-4, dropout=0.3),
    replace(_TUNED, weight_decay=2e-3, dropout=0.3, hidden_sizes=(1000,)),
]
MF_GRID = [MFConfig(l2=l2, lr=lr, epochs=40) for l2 in (0.05, 0.1) for lr in (0.001, 0.003)]


class CosineDecay(Callback):
    """lr_t = lr_0 * (1 + cos(pi t / T)) / 2 over the T optimiser steps of the run."""

    def __init__(self, total_steps: int) -> None:
        self.total_steps = total_steps

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(self.model.optimizer, self.total_steps)

    def on_train_batch_end(self, step: int, logs: dict[str, Any] | None = None) -> None:
        self.scheduler.step()


@dataclass
class Data:
    ratings: pd.DataFrame
    index: RatingIndex
    splits: dict[str, tuple[pd.DataFrame, pd.DataFrame]] = field(default_factory=dict)


def run_autorec(cfg: AutoRecConfig, data: Data, train: pd.DataFrame, test: pd.DataFrame,
                seed: int) -> dict[str, Any]:
    """Train on ``train``, record RMSE on ``test`` after every epoch."""
    torch.manual_seed(seed)
    model = AutoRec(RatingMatrix.from_frame(train, data.index), based=cfg.based,
                    hidden_sizes=cfg.hidden_sizes, encoder_activation=cfg.encoder_activation,
                    decoder_activation=cfg.decoder_activation, dropout=cfg.dropout,
                    cold_start=cfg.cold_start)
    rows = model.train_columns()
    steps = cfg.epochs * rows.num_batches(cfg.batch_size)
    callbacks = [CosineDecay(steps)] if cfg.schedule == "cosine" else []
    pairs = data.index.pairs(test)
    history = model.fit(rows, epochs=cfg.epochs, batch_size=cfg.batch_size, seed=seed, verbose=False,
                        optimizer=lambda p: torch.optim.Adam(p, lr=cfg.lr, weight_decay=cfg.weight_decay),
                        validation_data=pairs, validation_batch_size=len(test), callbacks=callbacks)
    curve = history.history["val_root_mean_squared_error"]
    users, items = pairs["user"], pairs["item"]
    unclipped = model.predict_indices(users, items, clip=False)
    rmse_unclipped = float(((unclipped - pairs["rating"]) ** 2).mean().sqrt())
    return {"rmse": curve[-1], "rmse_unclipped": rmse_unclipped, "curve": curve,
            "best_epoch": int(np.argmin(curve)) + 1,
            "seconds_per_epoch": statistics.median(history.history["epoch_seconds"])}


def run_mf(cfg: MFConfig, data: Data, train: pd.DataFrame, test: pd.DataFrame, seed: int) -> dict[str, Any]:
    torch.manual_seed(seed)
    model = BiasedMF.from_matrix(RatingMatrix.from_frame(train, data.index), embedding_dim=cfg.embedding_dim,
                                 l2=cfg.l2, bias_l2=cfg.bias_l2)
    history = model.fit(data.index.pairs(train), epochs=cfg.epochs, batch_size=cfg.batch_size, seed=seed,
                        verbose=False, optimizer=lambda p: torch.optim.Adam(p, lr=cfg.lr),
                        validation_data=data.index.pairs(test), validation_batch_size=len(test))
    curve = history.history["val_root_mean_squared_error"]
    return {"rmse": curve[-1], "curve": curve, "best_epoch": int(np.argmin(curve)) + 1,
            "seconds_per_epoch": statistics.median(history.history["epoch_seconds"])}


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    rmse = [r["rmse"] for r in runs]
    out: dict[str, Any] = {
        "rmse_mean": statistics.fmean(rmse),
        "rmse_sd": statistics.stdev(rmse) if len(rmse) > 1 else 0.0,
        "rmse_per_seed": rmse,
        "seconds_per_epoch_median": statistics.median(r["seconds_per_epoch"] for r in runs),
    }
    if "rmse_unclipped" in runs[0]:
        out["rmse_unclipped_mean"] = statistics.fmean(r["rmse_unclipped"] for r in runs)
    curves = np.array([r["curve"] for r in runs])
    out["rmse_per_epoch_mean"] = curves.mean(0).tolist()
    out["rmse_per_epoch_sd"] = (curves.std(0, ddof=1) if len(runs) > 1 else np.zeros(curves.shape[1])).tolist()
    return out


def over_seeds(fn: Callable[..., dict[str, Any]], cfg: Any, data: Data, split: str, seeds: list[int],
               log: str) -> dict[str, Any]:
    """``fn`` on each seed: split ``random`` uses split seed = run seed; ``u1`` is one split."""
    runs = []
    for seed in seeds:
        train, test = data.splits[f"random_{seed}"] if split == "random" else data.splits["u1"]
        runs.append(fn(cfg, data, train, test, seed))
    out = {"config": asdict(cfg), "split": split, "seeds": seeds, **summarise(runs)}
    print(f"{log:<44} {split:<6} RMSE {out['rmse_mean']:.4f} +- {out['rmse_sd']:.4f} "
          f"({out['seconds_per_epoch_median']:.2f} s/epoch)", flush=True)
    return out


def select(fn: Callable[..., dict[str, Any]], grid: list[Any], data: Data, name: str) -> tuple[Any, list[dict]]:
    """Score each candidate on the validation slice of split 0; pick the lowest validation RMSE.

    A constant-lr candidate is scored at its best epoch and keeps that epoch count (early
    stopping on validation); a cosine candidate is scored at its last epoch and keeps its
    length (the schedule is defined by it).
    """
    train, _ = data.splits["random_0"]
    fit_part, val_part = random_holdout(train, 0.1, seed=VALIDATION_SEED)
    scored = []
    for cfg in grid:
        r = fn(cfg, data, fit_part, val_part, 0)
        cosine = getattr(cfg, "schedule", "constant") == "cosine"
        epochs = cfg.epochs if cosine else r["best_epoch"]
        score = r["rmse"] if cosine else min(r["curve"])
        scored.append({"config": asdict(cfg), "val_rmse": score, "val_rmse_last_epoch": r["rmse"],
                       "val_rmse_best_epoch": r["best_epoch"], "selected_epochs": epochs})
        print(f"  [{name} selection] {short(cfg)}: val RMSE {score:.4f} with {epochs} epochs "
              f"(last {r['rmse']:.4f}, best @ {r['best_epoch']})", flush=True)
    best = min(range(len(grid)), key=lambda k: scored[k]["val_rmse"])
    return replace(grid[best], epochs=scored[best]["selected_epochs"]), scored


def short(cfg: Any) -> str:
    defaults = D2L if isinstance(cfg, AutoRecConfig) else MFConfig()
    diff = {k: v for k, v in asdict(cfg).items() if asdict(defaults)[k] != v}
    return ", ".join(f"{k}={v}" for k, v in diff.items()) or "defaults"


def plot(results: dict[str, Any], path: Path) -> None:
    import io

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for key, label, color in (("d2l_setting", "item AutoRec, d2l setting", "C0"),
                              ("user_based", "user AutoRec, d2l setting", "C2"),
                              ("tuned_random_90_10", "item AutoRec, tuned", "C3")):
        entry = results.get(key)
        if not entry:
            continue
        mean, sd = np.array(entry["rmse_per_epoch_mean"]), np.array(entry["rmse_per_epoch_sd"])
        epochs = np.arange(1, len(mean) + 1)
        ax.plot(epochs, mean, color=color, label=f"{label} ({mean[-1]:.3f})")
        ax.fill_between(epochs, mean - sd, mean + sd, color=color, alpha=0.2, linewidth=0)
    ax.axhline(D2L_RMSE, color="grey", linestyle="--", linewidth=1, label=f"d2l reported {D2L_RMSE}")
    ax.axhline(0.885, color="grey", linestyle=":", linewidth=1, label="target 0.885")
    ax.set_ylim(0.85, 1.1)
    ax.set_xlabel("epoch")
    ax.set_ylabel("test RMSE (mean ± sd over seeds)")
    ax.set_title("MovieLens 100K, random 90/10 split")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    atomic_write_bytes(path, buffer.getvalue())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="2 seeds, 3 epochs, tiny grids: a smoke run")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)  # small matmuls: one thread is fastest on a shared CPU
    start_wall, start_cpu = time.perf_counter(), time.process_time()

    ratings = load_movielens_100k(progress=False).ratings
    data = Data(ratings, RatingIndex.from_frame(ratings))
    seeds = list(range(2 if args.quick else args.seeds))
    for s in seeds:
        data.splits[f"random_{s}"] = random_holdout(ratings, 0.1, seed=s)
    data.splits["u1"] = ml100k_u1_split(ratings)

    d2l, tuned_grid, mf_grid = D2L, TUNED_GRID, MF_GRID
    if args.quick:
        d2l = replace(D2L, epochs=3)
        tuned_grid = [replace(c, epochs=3) for c in TUNED_GRID[:2]]
        mf_grid = [replace(c, epochs=3) for c in MF_GRID[:2]]

    results: dict[str, Any] = {}
    results["d2l_setting"] = over_seeds(run_autorec, d2l, data, "random", seeds, "item AutoRec, d2l setting")
    results["user_based"] = over_seeds(run_autorec, replace(d2l, based="user"), data, "random", seeds,
                                       "user AutoRec, d2l setting")

    sweeps: dict[str, dict[str, Any]] = {"hidden_size": {}, "extra_hidden_layer": {}, "activations": {}}
    for h in (100, 300, 500, 1000):
        sweeps["hidden_size"][str(h)] = (results["d2l_setting"] if h == 500 else over_seeds(
            run_autorec, replace(d2l, hidden_sizes=(h,)), data, "random", seeds, f"hidden {h}"))
    sweeps["extra_hidden_layer"]["500"] = results["d2l_setting"]
    sweeps["extra_hidden_layer"]["500-500"] = over_seeds(
        run_autorec, replace(d2l, hidden_sizes=(500, 500)), data, "random", seeds, "hidden 500-500")
    for enc, dec in (("sigmoid", "identity"), ("relu", "identity"), ("sigmoid", "sigmoid"), ("elu", "identity")):
        key = f"{enc}/{dec}"
        sweeps["activations"][key] = (results["d2l_setting"] if key == "sigmoid/identity" else over_seeds(
            run_autorec, replace(d2l, encoder_activation=enc, decoder_activation=dec), data, "random", seeds,
            f"activations {key}"))
    results["d2l_exercise_sweeps"] = sweeps

    mf_cfg, mf_scored = select(run_mf, mf_grid, data, "MF")
    results["biased_mf"] = {
        "selection": {"validation": "random_holdout(train of random split 0, 0.1, seed=100)",
                      "candidates": mf_scored, "selected": asdict(mf_cfg)},
        "random_90_10": over_seeds(run_mf, mf_cfg, data, "random", seeds, "biased MF"),
        "u1": over_seeds(run_mf, mf_cfg, data, "u1", seeds, "biased MF"),
    }

    tuned_cfg, tuned_scored = select(run_autorec, tuned_grid, data, "AutoRec")
    results["tuned_selection"] = {"validation": "random_holdout(train of random split 0, 0.1, seed=100)",
                                  "candidates": tuned_scored, "selected": asdict(tuned_cfg)}
    results["tuned_random_90_10"] = over_seeds(run_autorec, tuned_cfg, data, "random", seeds, "item AutoRec, tuned")
    results["tuned_u1"] = over_seeds(run_autorec, tuned_cfg, data, "u1", seeds, "item AutoRec, tuned")

    out = {
        "dataset": "MovieLens 100K (943 users, 1682 items, 100000 ratings)",
        "protocol": __doc__.split("Protocol\n", 1)[1].strip(),
        "metric": "test RMSE over all test ratings, predictions clipped to [1, 5]; mean and sample sd over seeds",
        "quick": args.quick,
        "references": REFERENCES,
        **results,
        "total_wall_seconds": time.perf_counter() - start_wall,
        "total_cpu_seconds": time.process_time() - start_cpu,
        "environment": {"python": platform.python_version(), "torch": torch.__version__,
                        "numpy": np.__version__, "pandas": pd.__version__, "machine": platform.machine(),
                        "torch_threads": torch.get_num_threads()},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out / "autorec.json", out)
    plot(results, args.out / "autorec_rmse_per_epoch.png")
    print(f"wrote {args.out / 'autorec.json'} ({out['total_cpu_seconds']:.0f} CPU s, "
          f"{out['total_wall_seconds']:.0f} wall s)")


if __name__ == "__main__":
    main()
