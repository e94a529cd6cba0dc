"""The basic-retrieval config (TFRS's basic retrieval tutorial, seed 002) over several seeds, timed.

Each run is ``recstack train basic-retrieval --set seed=S`` (recstack.experiment.run.train into a
temporary folder). Writes benchmarks/results/basic_retrieval.json: test metrics (mean and sd over
seeds) beside the config's published figures, seconds per epoch (median of epochs 2-3) with
train-time metrics on and off, seconds to evaluate the test split (all-items protocol), and the
top-3 titles for user "42".

    RECSTACK_DATA_DIR=../shared/datasets/ml-100k python benchmarks/basic_retrieval.py [--seeds 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import RESULTS, environment, summary  # noqa: E402

from recstack.core.io import atomic_write_json  # noqa: E402
from recstack.experiment.config_files import load_config  # noqa: E402
from recstack.experiment.evaluation import evaluate_protocol  # noqa: E402
from recstack.experiment.reference import applicable_reference  # noqa: E402
from recstack.experiment.reporter import Reporter  # noqa: E402
from recstack.experiment.run import train  # noqa: E402
from recstack.experiment.saved_run import load_run, recommend  # noqa: E402

NAME = "basic-retrieval"
PROTOCOL = "all-items"


def run(seed: int, train_metrics: bool, extra: list[str]) -> dict:
    config = load_config(NAME, [f"seed={seed}", f"training.train_metrics={str(train_metrics).lower()}",
                                "output.plots=false", *extra])
    with tempfile.TemporaryDirectory() as tmp:
        result = train(config, Reporter("quiet"), run_dir=Path(tmp) / "run")
        p = result.prepared
        start = time.perf_counter()
        evaluate_protocol(result.model, p.test, p.pre.catalogue(), PROTOCOL, None, config.evaluation.ks,
                          config.evaluation.batch_size)
        evaluate_seconds = time.perf_counter() - start
        top3 = [item["item"] for item in recommend(load_run(result.run_dir), "42", k=3)["items"]]
    return {"seed": seed, "test": result.metrics["protocols"], "epoch_seconds": result.history.history["epoch_seconds"],
            "train_loss": result.history.history["loss"], "evaluate_seconds": evaluate_seconds,
            "recommendations_user_42": top3}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--timing-seeds", type=int, default=3, help="extra runs with train metrics off")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="config override for every run (e.g. training.epochs=1 for a smoke run)")
    parser.add_argument("--out", type=Path, default=RESULTS / "basic_retrieval.json")
    args = parser.parse_args()
    reference = applicable_reference(load_config(NAME))

    runs = []
    for seed in range(args.seeds):
        runs.append(run(seed, True, args.overrides))
        top100 = runs[-1]["test"][PROTOCOL]["factorized_top_k/top_100_categorical_accuracy"]
        print(f"seed {seed}: top100={top100:.4f} epochs={['%.2f' % s for s in runs[-1]['epoch_seconds']]}"
              f" eval={runs[-1]['evaluate_seconds']:.3f}s user42={runs[-1]['recommendations_user_42']}", flush=True)
    no_metric_epochs = [statistics.median(run(seed, False, args.overrides)["epoch_seconds"][1:3])
                        for seed in range(args.timing_seeds)]

    protocols = runs[0]["test"]
    payload = {
        "benchmark": f"recstack train {NAME} (TFRS basic retrieval tutorial, seed 002)",
        "config": load_config(NAME, args.overrides).to_dict(),
        "environment": environment(),
        "published": {"source": reference.source, "metrics": reference.metrics},
        "test_metrics": {p: {k: summary([r["test"][p][k] for r in runs]) for k in protocols[p]} for p in protocols},
        "seconds_per_epoch_median_epochs_2_3": {
            "train_metrics_on": summary([statistics.median(r["epoch_seconds"][1:3]) for r in runs]),
            "train_metrics_off": summary(no_metric_epochs),
        },
        "evaluate_seconds_test_all_items": summary([r["evaluate_seconds"] for r in runs]),
        "runs": runs,
    }
    atomic_write_json(args.out, payload)
    top = payload["test_metrics"][PROTOCOL]["factorized_top_k/top_100_categorical_accuracy"]
    print(f"top-100 mean {top['mean']:.4f} (sd {top['sd']:.4f}); wrote {args.out}")


if __name__ == "__main__":
    main()
