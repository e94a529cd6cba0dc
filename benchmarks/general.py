"""Top-k recommendation under RecBole's "general recommendation" protocol: recstack beside RecBole.

Writes benchmarks/results/general.json. Run from the repository root, alone on the machine:

    RECSTACK_DATA_DIR=/path/to/ml-100k .venv/bin/python benchmarks/general.py \
        --recbole-python /tmp/rbvenv/bin/python              # ~25 min (1,465 s on 2 cores)
    .venv/bin/python benchmarks/general.py --quick ...        # 1 seed, the fast models (smoke test)
    .venv/bin/python benchmarks/general.py --only lightgcn --recbole-only LightGCN ...
        # after a change to one model: rerun its rows (and its RecBole peer, side by side as in
        # the full run) and replace only those entries of general.json; ``reruns`` records it

The protocol (RecBole 1.2.1's defaults): each user's interactions shuffled and split 8:1:1
(train / validation / test) by RecBole's rounding rule; every item ranked for every user with
the user's training (and, at test time, validation) items removed; recall, NDCG, MRR, hit and
precision at 10, per user, averaged over the users with a test item. MovieLens 100K, all
100,000 ratings as implicit interactions, item ids (1,682 movies).

What runs, in one invocation:

* RecBole (its own virtualenv, ``--recbole-python``; never imported here): EASE, BPR, ItemKNN,
  MultiVAE and LightGCN with RecBole's default hyperparameters and its default protocol, one
  thread, in subprocesses (benchmarks/peers/recbole_driver.py; for LightGCN it restores the SciPy
  method RecBole's graph code calls, ``restore_dok_update``), on RecBole's own copy of
  MovieLens 100K (the same data), once per split seed ``--seeds`` (RecBole's ``seed``; 2020 is
  its default). RecBole selects epochs on validation MRR@10 (its default).
* The splits: RecBole's EASE run of each seed writes the rows of its split (raw ids and part) to
  a CSV in a temporary folder (never kept: the data's licence), before anything else runs.
* recstack, while RecBole's other models run in the background, one thread: each shipped config
  listed in ``MODELS`` trained on each of those splits (``split.method: column``), so both
  sides rank the same test rows of the same users given the same training rows (the comparison
  is paired: split-to-split variation, about ±0.006 in recall@10, cancels). Selection on the
  validation part only; evaluated once on test. Mean and sd over the seeds.

Seconds: RecBole's training seconds (its driver: from the trainer's start to the end of the last
epoch, validation included) and recstack's training seconds (``train_seconds`` of the run),
each beside the result it produced.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, environment, summary, write_json  # noqa: E402
from peers.recbole_runs import run_recbole as run_one  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
METRICS = ("recall_at_10", "ndcg_at_10", "mrr_at_10", "hit_at_10", "precision_at_10")
RECBOLE_KEYS = {"recall_at_10": "recall@10", "ndcg_at_10": "ndcg@10", "mrr_at_10": "mrr@10",
                "hit_at_10": "hit@10", "precision_at_10": "precision@10"}
RECBOLE_MODELS = ["EASE", "ItemKNN", "BPR", "LightGCN", "MultiVAE"]

#: Every recstack run: one thread, item ids, every movie ranked, RecBole's metrics at 10, validation
#: on the validation split; the configs' own reference blocks belong to their own protocols.
COMMON = ["training.threads=1", "data.columns={user: user_id, item: item_id, split: part}", "data.items=null",
          "data.users=null", "data.duplicates=error", "features.vocabulary=all", "reference=null", "split={method: column}",
          "evaluation={protocols: [exclude-seen], validation_protocol: exclude-seen, ks: [10]}"]
EASE_L2 = [100.0, 250.0, 500.0, 1000.0]
#: label -> (shipped config, overrides); the split seed is added per run.
MODELS: dict[str, tuple[str, list[str]]] = {
    "popularity": ("popularity", []),
    "EASE (l2 chosen on validation)": ("ease-recbole", []),
    "Mult-VAE (multvae)": ("multvae", ["training.checkpoint_every=1000"]),
    "LightGCN (lightgcn)": ("lightgcn", ["training.checkpoint_every=1000"]),
    "item-KNN (itemknn)": ("itemknn", []),
    "iALS (ials-recbole: tuned on validation)": ("ials-recbole", []),
    "Mult-VAE (multvae-recbole: tuned on validation)": ("multvae-recbole", []),
    "neural ensemble (ensemble-neural-recbole: 4 Mult-VAEs + LightGCN, weights tuned on validation)":
        ("ensemble-neural-recbole", []),
}
#: The labels --quick runs (the fast ones).
QUICK = {"popularity", "EASE (l2 chosen on validation)"}


def split_file(workdir: Path, seed: int) -> Path:
    return workdir / f"recbole-split-{seed}.csv"


def split(workdir: Path, seed: int) -> str:
    return f"data.interactions={split_file(workdir, seed)}"


def run_recbole(python: str, models: list[str], seeds: list[int], cap_s: float, workdir: Path,
                out: dict[str, Any], write_split: bool = False) -> None:
    """RecBole's models x seeds one after the other (one thread); results land in
    ``out[model][seed]``; ``write_split``: each run also writes its split (:func:`split_file`)."""
    for model in models:
        for seed in seeds:
            spec = {"model": model, "dataset": "ml-100k", "wall_cap_s": cap_s, "config": {"seed": seed},
                    **({"write_split": str(split_file(workdir, seed))} if write_split else {})}
            runs = out.setdefault(model, {})
            runs[seed] = run_one(python, spec, workdir, f"{model}-{seed}")
            shown = runs[seed].get("error") or {k: runs[seed]["test"].get(v) for k, v in RECBOLE_KEYS.items()}
            print(f"[recbole] {model} seed {seed}: {shown}", flush=True)
            if "error" in runs[seed]:
                break                         # the other seeds would fail the same way


def recbole_summary(runs: dict[int, Any]) -> dict[str, Any]:
    """Mean and sd over the seeds of RecBole's test metrics and training seconds."""
    done = [r for r in runs.values() if "error" not in r]
    if not done:
        return {"error": next(iter(runs.values()))["error"]}
    return {**{m: summary([float(r["test"][RECBOLE_KEYS[m]]) for r in done]) for m in METRICS},
            "train_seconds": summary([float(r["seconds"]["training"]) for r in done]), "seeds": len(done)}


def train(config: str, overrides: list[str], run_dir: Path) -> dict[str, Any]:
    """``recstack train`` (JSON-lines progress); returns the test metrics, validation and seconds."""
    command = [sys.executable, "-m", "recstack", "train", config, "--run-dir", str(run_dir), "--progress", "jsonl"]
    for item in overrides:
        command += ["--set", item]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    started = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT)
    if proc.returncode != 0:
        raise SystemExit(f"recstack train {config} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    test = {k.split("/", 1)[-1]: v for k, v in metrics["protocols"]["exclude-seen"].items()}
    return {"test": test, "validation": metrics.get("validation"),
            "train_seconds": metrics.get("train_seconds"), "epochs": metrics.get("epochs"),
            "validation_curve": validation_curve(run_dir / "history.csv"), "wall_s": time.perf_counter() - started}


def validation_curve(history_csv: Path) -> list[dict[str, float]]:
    """[{epoch, seconds, ndcg_at_10}] at each validated epoch of a gradient-trained run: ``seconds``
    sums the epochs' ``epoch_seconds`` (the training passes; the validations' own time is left out).
    Empty for a closed-form run (no per-epoch history)."""
    if not history_csv.exists():
        return []
    with history_csv.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    curve, elapsed = [], 0.0
    for row in rows:
        elapsed += float(row.get("epoch_seconds") or 0.0)
        value = row.get("val_factorized_top_k/ndcg_at_10")
        if value:
            curve.append({"epoch": int(row["epoch"]), "seconds": elapsed, "ndcg_at_10": float(value)})
    return curve


def choose_ease_l2(workdir: Path, seed: int) -> dict[float, float]:
    """Validation NDCG@10 of EASE per l2 on the first seed's split (in process, as the runs prepare
    the data; the test split is not looked at)."""
    import torch
    from _configs import evaluate, fit

    from recstack.experiment.config_files import load_config

    torch.set_num_threads(1)
    prepared, scores = None, {}
    for l2 in EASE_L2:
        fitted = fit(load_config("ease-recbole", COMMON + [split(workdir, seed), f"model.l2={l2}"]),
                     prepared=prepared)
        prepared = fitted.prepared
        scores[l2] = evaluate(fitted, "validation")["exclude-seen"]["ndcg_at_10"]
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recbole-python", default=os.environ.get("RECBOLE_PYTHON", "/tmp/rbvenv/bin/python"),
                        help="the python of RecBole's virtualenv ('' to skip RecBole)")
    parser.add_argument("--recbole-cap-s", type=float, default=900.0, help="wall-clock cap per RecBole model")
    parser.add_argument("--seeds", type=int, nargs="+", default=[2020, 2021, 2022], help="RecBole split seeds")
    parser.add_argument("--quick", action="store_true", help="1 seed, the fast models only (smoke test)")
    parser.add_argument("--only", nargs="+", metavar="CONFIG", choices=sorted({c for c, _ in MODELS.values()}),
                        help="rerun only the recstack rows of these configs and replace their entries in the "
                             "existing general.json (the rest is kept; RecBole's EASE reruns for the splits)")
    parser.add_argument("--recbole-only", nargs="+", default=[], metavar="MODEL", choices=RECBOLE_MODELS,
                        help="with --only: the RecBole models to rerun beside them (default: none besides EASE)")
    args = parser.parse_args()
    if args.recbole_only and not args.only:
        parser.error("--recbole-only goes with --only")
    if args.only and args.quick:
        parser.error("--only reruns rows of the full run; it does not go with --quick")
    if not os.environ.get("RECSTACK_DATA_DIR"):
        raise SystemExit("set RECSTACK_DATA_DIR to the MovieLens 100K folder (u.data, u.item)")
    seeds = args.seeds[:1] if args.quick else args.seeds
    workdir = Path(tempfile.mkdtemp(prefix="recstack-general-"))
    started = time.perf_counter()

    if not args.recbole_python:
        raise SystemExit("the splits come from RecBole: pass --recbole-python (its virtualenv's python)")
    peers: dict[str, Any] = {}
    run_recbole(args.recbole_python, ["EASE"], seeds, args.recbole_cap_s, workdir, peers, write_split=True)
    missing = [s for s in seeds if not split_file(workdir, s).exists()]
    if missing:
        raise SystemExit(f"RecBole wrote no split for seeds {missing}: {peers['EASE']}")
    chosen = (["ItemKNN"] if args.quick else [m for m in args.recbole_only if m != "EASE"] if args.only
              else [m for m in RECBOLE_MODELS if m != "EASE"])
    peer_thread = threading.Thread(target=run_recbole, args=(args.recbole_python, chosen, seeds, args.recbole_cap_s,
                                                              workdir, peers))
    peer_thread.start()

    ease_validation = choose_ease_l2(workdir, seeds[0])
    ease_l2 = max(ease_validation, key=ease_validation.get)
    print(f"[recstack] EASE l2 {ease_l2:g} (validation NDCG@10 per l2: {ease_validation})", flush=True)
    models: dict[str, Any] = {}
    for number, (label, (config, overrides)) in enumerate(MODELS.items()):
        if (args.quick and label not in QUICK) or (args.only and config not in args.only):
            continue
        if config == "ease-recbole":
            overrides = overrides + [f"model.l2={ease_l2}"]
        runs = {}
        for seed in seeds:
            runs[seed] = train(config, COMMON + overrides + [split(workdir, seed)], workdir / f"{number}-{config}-{seed}")
            shown = ", ".join(f"{m} {runs[seed]['test'][m]:.4f}" for m in METRICS if m in runs[seed]["test"])
            print(f"[recstack] {label} seed {seed}: {shown} ({runs[seed]['train_seconds'] or 0:.1f} s)", flush=True)
        models[label] = {"config": config, "overrides": overrides, "runs": runs, "summary": {
            **{m: summary([float(r["test"][m]) for r in runs.values()]) for m in METRICS
               if all(m in r["test"] for r in runs.values())},
            "train_seconds": summary([float(r["train_seconds"] or 0.0) for r in runs.values()])}}
        (workdir / "recstack.partial.json").write_text(json.dumps(models, indent=1))

    print("[recstack] done; waiting for RecBole", flush=True)
    peer_thread.join()

    payload = {
        "benchmark": "top-k recommendation, MovieLens 100K, RecBole's general protocol",
        "protocol": {"split": "per user, random 8:1:1 (RecBole's RS with group_by user, order RO); recstack "
                              "trains and tests on the rows of RecBole's split of each seed (split.method: column)",
                     "ranking": "all items; the user's training items removed (validation items too at test)",
                     "metrics": "recall, NDCG, MRR, hit, precision @10 per user, mean over users with a test item",
                     "selection": "validation only"},
        "threads": {"recstack": 1, "recbole": 1},
        "seeds": seeds,
        "quick": args.quick,
        "ease_l2_validation_ndcg_at_10": {str(k): v for k, v in ease_validation.items()},
        "recstack": models,
        "recbole": {"models": peers, "summary": {m: recbole_summary(r) for m, r in peers.items()},
                    "note": "RecBole 1.2.1 defaults, its seed per split, its own copy of MovieLens 100K"},
        "seconds": time.perf_counter() - started,
        "environment": environment(),
    }
    if args.only:
        payload = merged_rerun(payload, args.only, chosen)
    path = write_json("general_quick.json" if args.quick else "general.json", payload)
    print(f"wrote {path}")
    print(table(payload["recstack"], payload["recbole"]["summary"]))


def merged_rerun(rerun: dict[str, Any], configs: list[str], recbole_models: list[str]) -> dict[str, Any]:
    """The existing general.json with the entries ``rerun`` (an ``--only`` run's payload) holds in
    place of the old ones, in :data:`MODELS` order, and a ``reruns`` record of what was replaced."""
    path = RESULTS / "general.json"
    if not path.exists():
        raise SystemExit(f"--only replaces entries of {path}, which does not exist: run the full benchmark first")
    payload = json.loads(path.read_text())
    if payload["seeds"] != rerun["seeds"]:
        raise SystemExit(f"{path} has seeds {payload['seeds']}, this rerun {rerun['seeds']}: rerun everything")
    kept = {**payload["recstack"], **rerun["recstack"]}
    payload["recstack"] = {label: kept[label] for label in MODELS if label in kept}
    for key in ("models", "summary"):
        payload["recbole"][key].update(rerun["recbole"][key])
    payload["ease_l2_validation_ndcg_at_10"] = rerun["ease_l2_validation_ndcg_at_10"]
    payload.setdefault("reruns", []).append({
        "recstack": list(rerun["recstack"]), "recbole": ["EASE", *recbole_models], "configs": configs,
        "seconds": rerun["seconds"], "environment": rerun["environment"],
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    return payload


def table(models: dict[str, Any], peers: dict[str, Any]) -> str:
    """Markdown: recstack's and RecBole's means ± sd over the seeds (``peers``: recbole_summary's)."""
    lines = ["| model | recall@10 | NDCG@10 | MRR@10 | hit@10 | precision@10 | train s |", "|---|---|---|---|---|---|---|"]
    for label, entry in models.items():
        s = entry["summary"]
        cells = [f"{s[m]['mean']:.4f} ± {s[m]['sd']:.4f}" if m in s else "-" for m in METRICS]
        lines.append(f"| recstack {label} | " + " | ".join(cells) + f" | {s['train_seconds']['mean']:.1f} |")
    for name, s in peers.items():
        if "error" in s:
            lines.append(f"| RecBole {name} | failed: {s['error'][:80]} | | | | | |")
            continue
        cells = [f"{s[m]['mean']:.4f} ± {s[m]['sd']:.4f}" for m in METRICS]
        lines.append(f"| RecBole {name} | " + " | ".join(cells) + f" | {s['train_seconds']['mean']:.1f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
