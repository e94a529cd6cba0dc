"""The multitask config (TFRS "Multi-task recommenders", seed 001) and its variants, over seeds.

The tutorial's three weightings (rating, retrieval) = (1, 1) (the config as shipped), (1, 0) and
(0, 1) (the variants of its reference block), each run as `recstack train multitask --set seed=S`
(recstack.experiment.run.train into a temporary folder). Reports test top-100 accuracy
(all-items) and RMSE per weighting (mean over seeds) beside the published figures of the
config's reference block, and the predicted rating of user "42" for "Dances with Wolves (1990)".

Usage: RECSTACK_DATA_DIR=... nice -n 19 python benchmarks/multitask.py [--seeds 0 1 2]
Writes benchmarks/results/multitask.json.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import recstack  # noqa: E402
from recstack.core.io import atomic_write_json  # noqa: E402
from recstack.experiment.config_files import load_config  # noqa: E402
from recstack.experiment.reference import applicable_reference, compare  # noqa: E402
from recstack.experiment.reporter import Reporter  # noqa: E402
from recstack.experiment.run import train  # noqa: E402

from _configs import variants  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
NAME = "multitask"
USER, MOVIE = "42", "Dances with Wolves (1990)"


@torch.no_grad()
def predicted_rating(result: Any) -> float | None:
    """The rating head's prediction for (USER, MOVIE); None without a rating head (rating weight 0)
    or when either is unknown."""
    model, pre = result.model, result.prepared.pre
    user, item = pre.users([USER]), pre.items([MOVIE])
    if getattr(model, "rating_head", None) is None or int(user[0]) == 0 or int(item[0]) == 0:
        return None                                   # no rating head, or USER / MOVIE not in the data
    model.eval()
    query, candidate = model.user_embeddings(user), model.item_embeddings(item)
    return float(model.rating_head(torch.cat([query, candidate], dim=1)).reshape(-1)[0])


def run(sets: list[str], seed: int, extra: list[str]) -> dict[str, Any]:
    config = load_config(NAME, [*sets, f"seed={seed}", "output.plots=false", *extra])
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        result = train(config, Reporter("quiet"), run_dir=Path(tmp) / "run")
    rows = compare(result.metrics, applicable_reference(config))
    return {"seed": seed, "overrides": sets, "metrics": result.metrics, "train_history": result.history.to_dict()["history"],
            "reference": {r.metric: r.result for r in rows}, "predicted_rating_user42_dances_with_wolves":
            predicted_rating(result), "wall_seconds": time.perf_counter() - start}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="config override for every run (e.g. training.epochs=1 for a smoke run)")
    parser.add_argument("--out", type=Path, default=RESULTS / "multitask.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    out: dict[str, Any] = {"source": load_config(NAME).reference.source}
    for label, sets, published in variants(NAME):
        runs = [run(sets, seed, args.overrides) for seed in args.seeds]
        entry: dict[str, Any] = {"overrides": sets, "seeds": args.seeds, "published": published}
        for metric in published:
            values = [r["reference"][metric] for r in runs]
            entry[metric] = {"mean": statistics.mean(values), "per_seed": values,
                             "difference": statistics.mean(values) - published[metric]}
        ratings = [r["predicted_rating_user42_dances_with_wolves"] for r in runs]
        entry["predicted_rating_per_seed"] = ratings
        entry["train_seconds_median"] = statistics.median(r["metrics"]["train_seconds"] for r in runs)
        entry["runs"] = runs
        out[label] = entry
        print(f"{label}: " + ", ".join(f"{m} {entry[m]['mean']:.4f} (published {v})" for m, v in published.items())
              + f"; rating({USER}, {MOVIE}) {ratings}", flush=True)
    out["environment"] = {"torch": torch.__version__, "recstack": recstack.__version__,
                          "python": platform.python_version(), "torch_threads": args.threads}
    atomic_write_json(args.out, out)


if __name__ == "__main__":
    main()
