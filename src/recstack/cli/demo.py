"""``make demo``: MovieLens 100K through the same experiment code as ``recstack train``.

1. Finds MovieLens 100K (``--data-dir``, ``$RECSTACK_DATA_DIR``, the cache, or a
   checksum-verified download).
2. Trains five shipped configs, by name, exactly as ``recstack train NAME`` does:
   ``basic-retrieval`` (the TFRS retrieval tutorial), ``movielens-best`` (the tuned
   two-tower model), the ``popularity`` and ``ease`` baselines, and ``ensemble`` (EASE,
   Mult-VAE and iALS blended with weights tuned on validation: the strongest model here).
3. Evaluates every model under both protocols ("all-items": TFRS top-k accuracy over the
   catalogue; "exclude-seen": per-user recall/NDCG without already-seen items),
   prints a comparison table and recommendations for user 42, and leaves the run
   folders (with their plots and report.html) under ``--runs-dir``.
4. Writes a comparison page of the five runs (``--runs-dir``/comparison.html) and ends by
   printing the paths of the five reports and of that page.

The configs are package data, so this runs from an installed wheel as well as from a
checkout. ``python -m recstack.cli.demo --help`` lists the options.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core.errors import ConfigError, RecstackError
from ..experiment.config_files import load_config
from ..experiment.reporter import Reporter
from ..training.progress import PROGRESS_MODES
from .output import format_table


@dataclass
class DemoModel:
    label: str
    config: str               # a shipped config's name
    optional: bool = False    # a failure is reported in the table instead of stopping the demo


MODELS = [DemoModel("basic retrieval (seed 002)", "basic-retrieval"),
          DemoModel("best recstack config", "movielens-best"),
          DemoModel("popularity", "popularity", optional=True),
          DemoModel("EASE", "ease", optional=True),
          DemoModel("ensemble (EASE+Mult-VAE+iALS)", "ensemble", optional=True)]
#: The model whose run gives the recommendations printed at the end.
RECOMMENDER = "movielens-best"


def run_demo(data_dir: str | None, runs_dir: Path, progress: str, user: str = "42",
             quick: bool = False) -> int:
    reporter = Reporter(progress)
    start = time.perf_counter()
    if data_dir:
        os.environ["RECSTACK_DATA_DIR"] = str(data_dir)  # the configs' "movielens-100k" source reads it
    from ..datasets import load_movielens_100k

    data = load_movielens_100k(progress=progress == "bar")
    reporter.info(f"MovieLens 100K from {data.source}: {len(data.ratings):,} ratings, {len(data.movies):,} movies")
    overrides = ["training.epochs=1"] if quick else []  # CI-sized: one epoch each
    results: list[tuple[DemoModel, Any]] = []
    from ..experiment.run import train

    for m in MODELS:
        config = load_config(m.config, overrides)
        reporter.info(f"\n== {m.label}: {m.config} ==")
        try:
            result = train(config, reporter, run_dir=runs_dir / f"{config.name}-{time.strftime('%Y%m%d-%H%M%S')}",
                           argv=["recstack.cli.demo"])
        except Exception as exc:  # an optional baseline must not stop the demo
            if not m.optional:
                raise
            reporter.note(f"{m.label} skipped: {exc}")
            result = None
        results.append((m, result))
    reporter.result(comparison_table(results), {"models": [
        {"label": m.label, "run_dir": str(r.run_dir) if r else None, "metrics": r.metrics if r else None}
        for m, r in results]})
    best = next((r for m, r in results if m.config == RECOMMENDER and r), None)
    if best is not None:
        from ..experiment.saved_run import load_run, recommend

        recs = recommend(load_run(best.run_dir), user, k=5, exclude_seen=True)
        lines = [f"\nTop 5 new recommendations for user {user} (best configuration, seen movies excluded):"]
        lines += [f"  {i}. {item['item']}" for i, item in enumerate(recs["items"], 1)]
        reporter.result("\n".join(lines), recs)
    folders = [f"  {r.run_dir}  (plots: {', '.join(p.name for p in sorted((r.run_dir / 'plots').glob('*.png'))) or 'none'})"
               for _, r in results if r is not None]
    reporter.info("\nRun folders:\n" + "\n".join(folders))
    reporter.info(f"\nDemo finished in {time.perf_counter() - start:.0f}s.")
    text, data = reports_text(results, runs_dir)
    reporter.result(text, data)
    return 0


def reports_text(results: list[tuple[DemoModel, Any]], runs_dir: Path) -> tuple[str, dict[str, Any]]:
    """The last lines of the demo: each run's report.html and the comparison page of all of them
    (written here, to ``runs_dir/comparison.html``)."""
    from ..experiment.report import write_comparison

    done = [(m, r) for m, r in results if r is not None]
    lines = ["\nReports (open in a browser; each is one self-contained file):"]
    lines += [f"  {m.label + ':':<28} {r.run_dir / 'report.html'}" for m, r in done]
    data: dict[str, Any] = {"reports": [str(r.run_dir / "report.html") for _, r in done], "comparison": None}
    if len(done) >= 2:
        page, _ = write_comparison([r.run_dir for _, r in done], runs_dir / "comparison.html")
        lines.append(f"  {'comparison of the runs:':<28} {page}")
        data["comparison"] = str(page)
    return "\n".join(lines), data


COLUMNS = [("all-items", "top_10_categorical_accuracy", "top-10"),
           ("all-items", "top_100_categorical_accuracy", "top-100"),
           ("exclude-seen", "recall_at_10", "recall@10*"), ("exclude-seen", "ndcg_at_10", "ndcg@10*"),
           ("exclude-seen", "mrr", "mrr*")]


def comparison_table(results: list[tuple[DemoModel, Any]]) -> str:
    """Models x metrics (all-items protocol, then exclude-seen*) and training time."""
    header = ["model", *(c[2] for c in COLUMNS), "train s"]
    rows = []
    for m, r in results:
        if r is None:
            rows.append([m.label, *([None] * len(COLUMNS)), None])
            continue
        protocols = r.metrics["protocols"]
        rows.append([m.label, *(protocols.get(p, {}).get(f"factorized_top_k/{k}", math.nan) for p, k, _ in COLUMNS),
                     f"{r.metrics.get('train_seconds', math.nan):.1f}"])
    note = ("top-k: TFRS top-k categorical accuracy (each test rating ranks its movie among all titles); "
            "* exclude-seen: per user, movies rated in training removed from the ranking.")
    return "\nTest metrics (MovieLens 100K, 80/20 random split, 20,000 test ratings):\n" + \
        format_table(header, rows) + "\n" + note


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m recstack.cli.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None, help="MovieLens 100K folder (default: $RECSTACK_DATA_DIR, "
                                                          "the cache, or a download)")
    parser.add_argument("--runs-dir", default="runs/demo", help="where the run folders go (default: runs/demo)")
    parser.add_argument("--user", default="42", help="user to recommend for (default: 42)")
    parser.add_argument("--progress", choices=PROGRESS_MODES, default="bar")
    parser.add_argument("--quick", action="store_true", help="one epoch per model (a smoke test)")
    args = parser.parse_args(argv)
    try:
        return run_demo(args.data_dir, Path(args.runs_dir), args.progress, args.user, args.quick)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (RecstackError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
