"""Next-item retrieval on MovieLens 100K, leave-one-out, full catalogue: recstack beside RecBole.

Writes benchmarks/results/sequential.json. Run from the repository root, alone on the machine:

    RECSTACK_DATA_DIR=/path/to/ml-100k .venv/bin/python benchmarks/sequential.py \
        --recbole-python /tmp/rbvenv/bin/python              # ~60 min, RecBole is the long pole
    .venv/bin/python benchmarks/sequential.py --quick ...     # 1 seed, short caps (smoke test)

The protocol (RecBole's sequential protocol, which is also SASRec's and Meta's
generative-recommenders'): each user's interactions ordered by time; the last one is the test
item, the one before it the validation item, the rest train. The held-out item is ranked among
all 1,682 movies given the user's history; the history is *not* removed from the ranking
(RecBole's full-sort evaluation of sequential models masks nothing). HR@10, NDCG@10 and
MRR@10 per user, averaged over the 943 users. Every item of the data is in the catalogue
(``features.vocabulary: all``), as in RecBole, so no test user is dropped. recstack's runs are
also evaluated with the history excluded (``recstack evaluate --exclude-history``), a
secondary figure RecBole's protocol does not have.

What runs, in one invocation:

* RecBole (its own virtualenv, ``--recbole-python``; never imported here): SASRec, then
  GRU4Rec, with RecBole's defaults for the models and the protocol the issue gives
  (``eval_args: {split: {LS: valid_and_test}, order: TO, mode: full, group_by: user}``,
  ``MAX_ITEM_LIST_LENGTH: 50``, ``loss_type: CE``, ``train_neg_sample_args: None``), selected on
  validation NDCG@10 with RecBole's early stopping (10 validations without improvement) and a
  wall-clock cap per model (``--recbole-cap-s``), one thread, in a background subprocess
  (benchmarks/peers/recbole_driver.py) on RecBole's own copy of MovieLens 100K.
* recstack, at the same time, in the foreground, one thread: the shipped configs ``sasrec``,
  ``gru4rec`` (each also without its learned repeat offset, ``model.repeat_bias=false``: the
  architecture of RecBole's models), ``transitions``, and popularity, EASE and the tuned two-tower (``movielens-best``)
  moved onto the same split and protocol, each over ``--seeds`` (the config seed: initialisation
  and shuffling; the split is deterministic). EASE's L2 is chosen on the validation item.

Both sides therefore share the two cores the same way: one each. Timing: seconds per training
epoch, and wall-clock seconds from the start of training to the end of the first validation that
reaches RecBole's best validation NDCG@10 (recstack) or to RecBole's best validation (RecBole).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import environment, summary, write_json  # noqa: E402
from peers.recbole_runs import run_recbole as run_one  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent

#: Every recstack run: one thread, every item in the catalogue, the RecBole metrics at 10.
COMMON = ["training.threads=1", "features.vocabulary=all"]
#: What moves a non-sequential config onto the next-item split and protocol.
LEAVE_ONE_OUT = [
    "split={method: leave-one-out}",
    "data.columns={user: user_id, item: movie_id, timestamp: timestamp}",
    "data.items=null",
    "data.duplicates=keep-all",
    "evaluation.protocols=[next-item]",
    "evaluation.validation_protocol=next-item",
    "evaluation.ks=[1, 5, 10, 20]",
    "evaluation.next_item={exclude_history: false, sampled_negatives: 100, sampled_distribution: uniform}",
]
#: label -> (shipped config, overrides). Sequential kinds run their config as shipped.
MODELS: dict[str, tuple[str, list[str]]] = {
    "popularity": ("popularity", LEAVE_ONE_OUT),
    "item-to-item transitions": ("transitions", []),
    "EASE": ("ease", LEAVE_ONE_OUT),
    "two-tower (movielens-best)": ("movielens-best", LEAVE_ONE_OUT),
    "GRU4Rec-style, no repeat offset": ("gru4rec", ["model.repeat_bias=false"]),
    "SASRec-style, no repeat offset (RecBole's SASRec)": ("sasrec", ["model.repeat_bias=false"]),
    "GRU4Rec-style (gru4rec)": ("gru4rec", []),
    "SASRec-style (sasrec)": ("sasrec", []),
}
EASE_L2 = [500.0, 2000.0, 10000.0, 30000.0, 100000.0, 300000.0]
SEQUENTIAL = {label for label, (config, _) in MODELS.items() if config in ("gru4rec", "sasrec")}

RECBOLE_PROTOCOL: dict[str, Any] = {
    "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "full", "group_by": "user"},
    "MAX_ITEM_LIST_LENGTH": 50,
    "loss_type": "CE",
    "train_neg_sample_args": None,
    "metrics": ["Hit", "NDCG", "MRR"],
    "topk": [10],
    "valid_metric": "NDCG@10",
    "seed": 2020,
}


def run_recbole(python: str, models: list[str], cap_s: float, workdir: Path, out: dict[str, Any]) -> None:
    """Run RecBole's models one after the other (one thread); results land in ``out[model]``."""
    for model in models:
        spec = {"model": model, "dataset": "ml-100k", "wall_cap_s": cap_s, "config": RECBOLE_PROTOCOL}
        out[model] = run_one(python, spec, workdir, model)
        print(f"[recbole] {model}: {summarise_recbole(out[model])}", flush=True)


def summarise_recbole(result: dict[str, Any]) -> str:
    if "error" in result:
        return "failed: " + result["error"]
    test = result["test"]
    return (f"{result['epochs_completed']} epochs ({result['stop']}), best epoch {result['best_epoch']}, "
            f"test hit@10 {test['hit@10']:.4f} ndcg@10 {test['ndcg@10']:.4f} mrr@10 {test['mrr@10']:.4f}")


def recstack(*args: str) -> list[str]:
    return [sys.executable, "-m", "recstack", *args]


def train(config: str, overrides: list[str], run_dir: Path) -> dict[str, Any]:
    """``recstack train`` with JSON-lines progress; validation lines are time-stamped as they arrive."""
    command = recstack("train", config, "--run-dir", str(run_dir), "--progress", "jsonl")
    for item in overrides:
        command += ["--set", item]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    started = time.perf_counter()
    begin, validated, result = None, {}, None
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                          cwd=ROOT) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            now = time.perf_counter()
            try:
                event = json.loads(line)
            except ValueError:
                continue
            kind = event.get("event")
            if kind == "train_begin":
                begin = now
            elif kind == "info" and ": validation next-item" in event.get("message", ""):
                epoch = int(event["message"].split(":", 1)[0].split()[1])
                validated[epoch] = now - (begin if begin is not None else started)
            elif kind == "result":
                result = event["data"]
        stderr = proc.stderr.read() if proc.stderr else ""
    if proc.returncode != 0 or result is None:
        raise SystemExit(f"recstack train {config} failed (exit {proc.returncode}):\n{stderr[-3000:]}")
    history = json.loads((run_dir / "history.json").read_text()) if (run_dir / "history.json").exists() else None
    excluded = json.loads(subprocess.run(
        recstack("evaluate", str(run_dir), "--protocol", "next-item", "--exclude-history", "--format", "json"),
        check=True, capture_output=True, text=True, env=env, cwd=ROOT).stdout)
    out: dict[str, Any] = {
        "test": result["protocols"]["next-item"],
        "test_history_excluded": excluded["protocols"]["next-item"],
        "wall_s": time.perf_counter() - started,
    }
    status = json.loads((run_dir / "metrics.json").read_text())
    out["validation"] = status.get("validation")
    if history is not None:
        h = history["history"]
        curve = h.get("val_next_item/ndcg_at_10", [])
        out["epochs"] = len(history["epochs"])
        out["seconds_per_epoch_train"] = [x for x in h.get("epoch_seconds", []) if x is not None]
        out["valid_ndcg_at_10"] = curve
        out["valid_elapsed_s"] = [validated.get(e) for e in history["epochs"]]
        if curve:
            best = max(range(len(curve)), key=lambda i: -1.0 if curve[i] is None else curve[i])
            out["best_epoch"] = best + 1
            out["seconds_to_best_valid"] = out["valid_elapsed_s"][best]
    return out


def choose_ease_l2(workdir: Path) -> tuple[float, dict[float, float]]:
    """EASE's L2 with the best validation NDCG@10 (seed 0): the test split is not looked at."""
    scores = {}
    for l2 in EASE_L2:
        run = train("ease", COMMON + LEAVE_ONE_OUT + [f"model.l2={l2}"], workdir / f"ease-l2-{l2:g}")
        scores[l2] = float(run["validation"]["ndcg_at_10"])
    return max(scores, key=scores.get), scores


def time_to_reach(run: dict[str, Any], target: float) -> float | None:
    """Seconds from the start of training to the first validation with NDCG@10 >= ``target``."""
    for value, elapsed in zip(run.get("valid_ndcg_at_10", []), run.get("valid_elapsed_s", [])):
        if value is not None and elapsed is not None and value >= target:
            return elapsed
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recbole-python", default=os.environ.get("RECBOLE_PYTHON", "/tmp/rbvenv/bin/python"),
                        help="the python of RecBole's virtualenv ('' to skip RecBole)")
    parser.add_argument("--recbole-cap-s", type=float, default=2400.0,
                        help="wall-clock cap per RecBole model (its early stopping applies first)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--quick", action="store_true", help="1 seed, 3-epoch caps: a smoke test of the script")
    args = parser.parse_args()
    if not os.environ.get("RECSTACK_DATA_DIR"):
        raise SystemExit("set RECSTACK_DATA_DIR to the MovieLens 100K folder (u.data, u.item)")
    seeds = args.seeds[:1] if args.quick else args.seeds
    cap = 60.0 if args.quick else args.recbole_cap_s
    workdir = Path(tempfile.mkdtemp(prefix="recstack-sequential-"))
    started = time.perf_counter()

    peers: dict[str, Any] = {}
    peer_thread = None
    if args.recbole_python:
        peer_thread = threading.Thread(target=run_recbole, args=(args.recbole_python, ["SASRec", "GRU4Rec"], cap,
                                                                  workdir, peers))
        peer_thread.start()

    ease_l2, ease_validation = choose_ease_l2(workdir)
    print(f"[recstack] EASE l2 {ease_l2:g} (validation NDCG@10 per l2: {ease_validation})", flush=True)
    models: dict[str, Any] = {}
    for number, (label, (config, overrides)) in enumerate(MODELS.items()):
        extra = [f"model.l2={ease_l2}"] if config == "ease" else []
        if args.quick and label in SEQUENTIAL | {"two-tower (movielens-best)"}:
            extra.append("training.epochs=3")
        runs = {}
        for seed in seeds:
            runs[seed] = train(config, COMMON + overrides + extra + [f"seed={seed}"],
                               workdir / f"{number}-{config}-{seed}")
            test = runs[seed]["test"]
            print(f"[recstack] {label} seed {seed}: HR@10 {test['hr_at_10']:.4f} NDCG@10 {test['ndcg_at_10']:.4f} "
                  f"({runs[seed]['wall_s']:.0f} s)", flush=True)
        models[label] = {"config": config, "overrides": overrides + extra, "runs": runs, "summary": {
            f"{part}/{metric}": summary([float(r[part][metric]) for r in runs.values()])
            for part in ("test", "test_history_excluded") for metric in ("hr_at_10", "ndcg_at_10", "mrr_at_10", "mrr")
            if all(metric in r[part] for r in runs.values())}}
        # what is done so far survives a crash later in the run
        (workdir / "recstack.partial.json").write_text(json.dumps(models, indent=1))

    if peer_thread is not None:
        print("[recstack] done; waiting for RecBole", flush=True)
        peer_thread.join()

    speed: dict[str, Any] = {}
    for ours, theirs in (("SASRec-style (sasrec)", "SASRec"), ("GRU4Rec-style (gru4rec)", "GRU4Rec")):
        peer = peers.get(theirs)
        if not peer or "error" in peer:
            continue
        target = float(peer["best_valid"]["ndcg@10"])
        runs = models[ours]["runs"].values()
        reach = [time_to_reach(r, target) for r in runs]
        our_epoch = statistics.median(x for r in runs for x in r["seconds_per_epoch_train"])
        their_epoch = statistics.median(peer["seconds_per_epoch_train"])
        reached = [x for x in reach if x is not None]
        speed[ours] = {
            "recbole_model": theirs,
            "seconds_per_epoch": {"recstack_median": our_epoch, "recbole_median": their_epoch,
                                  "ratio_recbole_over_recstack": their_epoch / our_epoch},
            "recbole_best_valid_ndcg_at_10": target,
            "recbole_seconds_to_best_valid": peer["seconds_to_best_valid"],
            "recstack_seconds_to_reach_it": reach,
            "ratio_recbole_over_recstack_time_to_best": (peer["seconds_to_best_valid"] / max(reached)
                                                         if reached and len(reached) == len(reach) else None),
        }

    payload = {
        "benchmark": "next-item retrieval, MovieLens 100K, leave-one-out, full-catalogue ranking",
        "protocol": {"split": "leave-one-out by timestamp (last = test, second to last = validation)",
                     "ranking": "all 1,682 items; history not excluded (RecBole's sequential full sort)",
                     "metrics": "HR@10, NDCG@10, MRR@10 per user, mean over users",
                     "selection": "validation NDCG@10 only (early stopping, EASE's l2)"},
        "threads": {"recstack": 1, "recbole": 1, "note": "RecBole ran in a background process while recstack "
                    "ran in the foreground: one core each"},
        "seeds": seeds,
        "quick": args.quick,
        "ease_l2_validation_ndcg_at_10": {str(k): v for k, v in ease_validation.items()},
        "recstack": models,
        "recbole": {"protocol_config": RECBOLE_PROTOCOL, "wall_cap_s": cap, "models": peers},
        "speed": speed,
        "seconds": time.perf_counter() - started,
        "environment": environment(),
    }
    path = write_json("sequential_quick.json" if args.quick else "sequential.json", payload)
    print(f"wrote {path}")
    print(table(models, peers))


def table(models: dict[str, Any], peers: dict[str, Any]) -> str:
    lines = ["| model | HR@10 | NDCG@10 | MRR@10 | HR@10 (history excluded) | NDCG@10 (history excluded) |",
             "|---|---|---|---|---|---|"]
    for label, entry in models.items():
        s = entry["summary"]

        def cell(key: str) -> str:
            return f"{s[key]['mean']:.4f} ± {s[key]['sd']:.4f}" if key in s else "-"

        lines.append(f"| recstack {label} | {cell('test/hr_at_10')} | {cell('test/ndcg_at_10')} | "
                     f"{cell('test/mrr_at_10')} | {cell('test_history_excluded/hr_at_10')} | "
                     f"{cell('test_history_excluded/ndcg_at_10')} |")
    for name, peer in peers.items():
        if "error" in peer:
            lines.append(f"| RecBole {name} | failed | | | | |")
            continue
        t = peer["test"]
        lines.append(f"| RecBole {name} ({peer['epochs_completed']} epochs, {peer['stop']}) | {t['hit@10']:.4f} | "
                     f"{t['ndcg@10']:.4f} | {t['mrr@10']:.4f} | - | - |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
