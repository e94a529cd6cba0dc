"""The deep-retrieval config (TFRS "Building deep retrieval models", seed 000) and its variants.

The tutorial's three models are the config as shipped and the variants of its reference block
(model.layer_sizes [32], [64, 32], [128, 64, 32]), each trained as `recstack train deep-retrieval`
trains it (benchmarks/_configs.py), with the test split as validation data every 5 epochs, as
the tutorial does (for the accuracy-vs-epoch curve), and FactorizedTopK off during training.
The published top-100 of each model comes from the config's reference block.

Usage (real data needed):
    RECSTACK_DATA_DIR=... nice -n 19 python benchmarks/deep_retrieval.py --seeds 0 1 2
Runs already in the JSON (same model, seed, epochs) are kept, so seeds can be added
later; ``--plot-only`` redraws the figure. Writes benchmarks/results/deep_retrieval.json
and benchmarks/results/accuracy_vs_epoch.png.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

import recstack
from recstack.core.io import atomic_write_bytes, atomic_write_json
from recstack.experiment.config_files import load_config
from recstack.training.callbacks import Callback

from _configs import fit, variants

RESULTS = Path(__file__).resolve().parent / "results"
NAME = "deep-retrieval"


def _models() -> dict[str, tuple[list[str], float]]:
    """"1 layer" / "2 layers" / "3 layers" (the keys of tfrs_deep_retrieval.json) -> (--set overrides,
    published top-100), from the config and its reference variants."""
    out = {}
    for _, sets, published in variants(NAME):
        n = len(load_config(NAME, sets).model.params.layer_sizes)
        out[f"{n} layer{'s' if n > 1 else ''}"] = (sets, published["all-items/top_100_categorical_accuracy"])
    return dict(sorted(out.items()))


MODELS = _models()
TOP100 = "val_factorized_top_k/top_100_categorical_accuracy"
VALIDATION_FREQ = 5


class CpuTimer(Callback):
    """Process CPU seconds of every epoch (training + validation): robust to other jobs
    sharing the machine, unlike wall time (with 1 torch thread, CPU time ~ busy time)."""

    def __init__(self) -> None:
        self.seconds: list[float] = []

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._start = time.process_time()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.seconds.append(time.process_time() - self._start)


def run_one(name: str, seed: int, epochs: int) -> dict[str, Any]:
    config = load_config(NAME, [*MODELS[name][0], f"seed={seed}", f"training.epochs={epochs}"])
    timer = CpuTimer()
    start, cpu_start = time.perf_counter(), time.process_time()
    history = fit(config, validate_on_test_every=VALIDATION_FREQ, callbacks=[timer]).history
    cpu = time.process_time() - cpu_start
    wall = time.perf_counter() - start
    h = history.history
    val_epochs = [e for e, v in zip(history.epochs, h[TOP100]) if not np.isnan(v)]
    curves = {k[len("val_factorized_top_k/"):]: [v for v in h[k] if not np.isnan(v)]
              for k in h if k.startswith("val_factorized_top_k/") and "categorical_accuracy" in k}
    final = {k: v[-1] for k, v in curves.items()}
    return {
        "config": name, "path": "recstack train deep-retrieval", "overrides": MODELS[name][0],
        "layer_sizes": config.model.params.layer_sizes, "seed": seed, "epochs": epochs,
        "validation_epochs": val_epochs, "val_curves": curves, "final_test": final,
        "train_loss": [h["loss"][i] for i in range(len(history.epochs))],
        "seconds_per_epoch_median": statistics.median(h["epoch_seconds"]),
        "train_seconds": float(sum(h["epoch_seconds"])), "wall_seconds": wall,
        "cpu_seconds_per_epoch_median": statistics.median(timer.seconds),
        "cpu_seconds_per_training_epoch_median": statistics.median(
            s for e, s in zip(history.epochs, timer.seconds) if e % VALIDATION_FREQ),
        "cpu_seconds": cpu,
    }


def summarise(runs: list[dict[str, Any]], epochs: int) -> dict[str, Any]:
    out = {}
    for name, (_, published) in MODELS.items():
        mine = [r for r in runs if r["config"] == name and r["epochs"] == epochs]
        if not mine:
            continue
        top100 = [r["final_test"]["top_100_categorical_accuracy"] for r in mine]
        out[name] = {
            "seeds": [r["seed"] for r in mine],
            "top_100_mean": statistics.mean(top100), "top_100_per_seed": top100,
            "top_100_std": statistics.stdev(top100) if len(top100) > 1 else None,
            "final_test_mean": {k: statistics.mean(r["final_test"][k] for r in mine) for k in mine[0]["final_test"]},
            "published_top_100": published,
            "within_0.02": abs(statistics.mean(top100) - published) <= 0.02,
            "seconds_per_epoch_median": statistics.median(r["seconds_per_epoch_median"] for r in mine),
            "wall_seconds_per_run_median": statistics.median(r["wall_seconds"] for r in mine),
            "cpu_seconds_per_epoch_median": statistics.median(r["cpu_seconds_per_epoch_median"] for r in mine),
            "cpu_seconds_per_training_epoch_median": statistics.median(
                r["cpu_seconds_per_training_epoch_median"] for r in mine),
            "cpu_seconds_per_run_median": statistics.median(r["cpu_seconds"] for r in mine),
        }
    total = sum(v["cpu_seconds_per_run_median"] for v in out.values())
    out["all_three_wall_seconds"] = sum(v["wall_seconds_per_run_median"] for v in out.values())
    out["all_three_cpu_seconds"] = total
    # TFRS on the same runs, from its measured seconds per epoch and per validation pass
    # (benchmarks/tfrs_deep_retrieval.py): per model, epochs x epoch + the first validation
    # (with tracing) + (epochs / 5 - 1) steady-state validations.
    tfrs_file = RESULTS / "tfrs_deep_retrieval.json"
    if tfrs_file.exists():
        tfrs = json.loads(tfrs_file.read_text())["configs"]

        def tfrs_run(t: dict[str, Any]) -> float:
            steady = t.get("steady_validation_seconds", t["validation_seconds"])
            return epochs * t["seconds_per_epoch_median"] + t["validation_seconds"] + (epochs / 5 - 1) * steady

        out["tfrs_seconds_for_the_same_runs"] = sum(tfrs_run(tfrs[name]) for name in MODELS
                                                     if name in out and name in tfrs)
        out["fraction_of_tfrs_time_wall"] = out["all_three_wall_seconds"] / out["tfrs_seconds_for_the_same_runs"]
        if all("cpu_seconds_per_epoch_median" in tfrs[name] for name in MODELS if name in out and name in tfrs):
            def tfrs_cpu(t: dict[str, Any]) -> float:
                return (epochs * t["cpu_seconds_per_epoch_median"] + t["validation_cpu_seconds"]
                        + (epochs / 5 - 1) * t["steady_validation_cpu_seconds"])

            out["tfrs_cpu_seconds_for_the_same_runs"] = sum(tfrs_cpu(tfrs[name]) for name in MODELS
                                                            if name in out and name in tfrs)
            out["fraction_of_tfrs_time_cpu"] = total / out["tfrs_cpu_seconds_for_the_same_runs"]
        out["note"] = ("fraction_of_tfrs_time_wall compares wall times and is meaningful only when both were "
                       "measured on an idle machine; fraction_of_tfrs_time_cpu compares process CPU seconds of "
                       "both frameworks run with 1 thread (robust to other jobs on the shared machine).")
    return out


def plot(runs: list[dict[str, Any]], epochs: int, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name in MODELS:
        mine = [r for r in runs if r["config"] == name and r["epochs"] == epochs]
        if not mine:
            continue
        curve = np.mean([r["val_curves"]["top_100_categorical_accuracy"] for r in mine], axis=0)
        ax.plot(mine[0]["validation_epochs"], curve, label=f"{name} (mean of {len(mine)} seed(s))")
    ax.set_title("Accuracy vs epoch")
    ax.set_xlabel("epoch")
    ax.set_ylabel("Top-100 accuracy")
    ax.grid(True, alpha=0.3)
    ax.legend()
    import io
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    atomic_write_bytes(path, buffer.getvalue())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--epochs", type=int, default=300)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the machine is shared)")
    parser.add_argument("--out", type=Path, default=RESULTS / "deep_retrieval.json")
    parser.add_argument("--plot", type=Path, default=RESULTS / "accuracy_vs_epoch.png")
    parser.add_argument("--plot-only", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    previous = json.loads(args.out.read_text()) if args.out.exists() else {}
    # Only runs of the config path are kept (the file may hold runs of the former hand-written models).
    runs: list[dict[str, Any]] = [r for r in previous.get("runs", []) if r.get("path") == "recstack train deep-retrieval"]
    if not args.plot_only:
        for seed in args.seeds:
            for name in args.models:
                if any(r["config"] == name and r["seed"] == seed and r["epochs"] == args.epochs for r in runs):
                    continue
                run = run_one(name, seed, args.epochs)
                print(f"{name} seed {seed}: top-100 {run['final_test']['top_100_categorical_accuracy']:.4f} "
                      f"({run['seconds_per_epoch_median']:.2f} s/epoch wall, {run['cpu_seconds_per_epoch_median']:.2f} "
                      f"CPU s/epoch, {run['wall_seconds']:.0f} s)", flush=True)
                runs.append(run)
                atomic_write_json(args.out, {"runs": runs, "summary": summarise(runs, args.epochs),
                                             "environment": _environment(args.threads)})
    result = {"runs": runs, "summary": summarise(runs, args.epochs), "environment": _environment(args.threads)}
    atomic_write_json(args.out, result)
    plot(runs, args.epochs, args.plot)
    print(json.dumps(result["summary"], indent=2))


def _environment(threads: int) -> dict[str, Any]:
    return {"torch": torch.__version__, "recstack": recstack.__version__, "python": platform.python_version(),
            "torch_threads": threads, "machine": platform.machine(), "note": "2-core machine shared with other jobs"}


if __name__ == "__main__":
    main()
