"""The ``recstack`` subcommands. Each takes the parsed arguments and returns an exit code."""

from __future__ import annotations

import argparse
import copy
import json
import os
from pathlib import Path
from typing import Any

from ..core.errors import ConfigError, RecstackError
from ..experiment.checks import NEXT_ITEM_PROTOCOLS
from ..experiment.reporter import Reporter, clean_json
from .output import format_table

METRIC_COLUMNS = ("top_1_categorical_accuracy", "top_10_categorical_accuracy", "top_100_categorical_accuracy",
                  "recall_at_10", "ndcg_at_10", "mrr")


def cmd_train(args: argparse.Namespace) -> int:
    from ..core import distributed
    from ..core.errors import UsageError
    from ..experiment.config_files import load_config
    from ..experiment.run import resume, train

    if args.resume and (args.config or args.overrides or args.run_dir):
        raise UsageError("--resume RUN_DIR continues a run with its own config: do not also give CONFIG, "
                         "--set or --run-dir.")
    if not args.resume and not args.config:
        raise UsageError("train needs a CONFIG (a shipped config's name, e.g. basic-retrieval, or a file), or "
                         "--resume RUN_DIR; see recstack train --help and recstack configs.")
    if args.nproc > 1 and distributed.world_size() == 1 and "WORLD_SIZE" not in os.environ:
        return _launch_processes(args)
    in_group = distributed.init_from_env()
    if distributed.is_main_process():
        reporter = Reporter(args.progress)
    else:  # the other ranks train silently; rank 0 reports
        silent = open(os.devnull, "w")
        reporter = Reporter("quiet", out=silent, err=silent)
    try:
        if args.resume:
            result = resume(args.resume, reporter)
        else:
            config = load_config(args.config, args.overrides)
            result = train(config, reporter, run_dir=args.run_dir, argv=args.argv)
    finally:
        if in_group:
            distributed.shutdown()
    if distributed.is_main_process():
        written = load_config(args.config) if args.overrides and not args.resume else None
        _report_metrics(reporter, result.metrics, str(result.run_dir), result.config, written)
    return 0


def cmd_tune(args: argparse.Namespace) -> int:
    """``recstack tune CONFIG [--trials N] [--out DIR] [--set k=v ...]``: the study, then its trials table."""
    from ..experiment.config_files import load_config
    from ..experiment.tuning import search_space, table, tune

    reporter = Reporter(args.progress)
    config = load_config(args.config, args.overrides)
    result = tune(config, reporter, out=args.out, trials=args.trials)
    header, rows = table(result.trials, [p.key for p in search_space(config)])
    text = f"Trials of {result.out} (validation {config.tune.metric}, {config.tune.direction}):\n"
    text += format_table(header, rows)
    if result.best is not None:
        text += (f"\nbest: trial {result.best['number']}, validation {config.tune.metric} {result.best['value']:.4f}; "
                 f"recstack train {result.out / 'best_config.yaml'} reproduces it")
    else:
        text += "\nno trial completed yet."
    reporter.result(text, {"out": str(result.out), "best": result.best, "ran": result.ran,
                           "trials": clean_json(result.trials)})
    return 0


def cmd_reproduce(args: argparse.Namespace) -> int:
    """``recstack reproduce NAME``: ``recstack train NAME`` for a shipped config with a reference block."""
    from ..experiment.config_files import load_config, shipped_config

    name = shipped_config(args.name).name
    if load_config(name).reference is None:
        raise ConfigError(f"the shipped config {name!r} has no reference block (no published figures to compare "
                          f"with); train it with recstack train {name}.")
    args.config, args.resume = name, None
    return cmd_train(args)


def cmd_configs(args: argparse.Namespace) -> int:
    """``recstack configs``: one line per shipped config; ``recstack configs NAME``: its file."""
    from ..experiment.config_files import shipped_config, shipped_configs

    if args.name:
        print(shipped_config(args.name).text(), end="")
        return 0
    configs = shipped_configs()
    width = max(len(name) for name in configs)
    for name, config in configs.items():
        print(f"{name:<{width}}  {config.description()}")
    return 0


def _launch_processes(args: argparse.Namespace) -> int:
    """``train --nproc N``: run this command in N processes under torchrun (torch.distributed.run),
    all writing to one run folder, and return its exit code."""
    import subprocess
    import sys

    from ..experiment.config_files import load_config
    from ..experiment.model_kinds import MODEL_KINDS
    from ..experiment.run_dir import default_run_dir

    argv = [a for a in args.argv[1:]]
    if args.resume:
        run_dir = args.resume
    else:
        config = load_config(args.config, args.overrides)
        if not MODEL_KINDS.get(config.model.kind).gradient_trained:
            raise ConfigError(f"model kind {config.model.kind!r} is fitted in closed form; --nproc applies to "
                              "gradient-trained kinds only.")
        run_dir = args.run_dir or str(default_run_dir(config.output.runs_dir, config.name))
        if not args.run_dir:
            argv += ["--run-dir", run_dir]
    argv = _without_option(argv, "--nproc")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={args.nproc}",
               "-m", "recstack", *argv]
    print(f"launching {args.nproc} processes (torchrun): run folder {run_dir}", file=sys.stderr, flush=True)
    return subprocess.call(command)


def _without_option(argv: list[str], option: str) -> list[str]:
    """``argv`` without ``option VALUE`` / ``option=VALUE``."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == option:
            skip = True
        elif not arg.startswith(option + "="):
            out.append(arg)
    return out


def cmd_report(args: argparse.Namespace) -> int:
    """``recstack report RUN``: RUN/report.html; ``recstack report RUN_A RUN_B ...``: a comparison page
    (``--out``, default comparison.html beside the runs) and the metrics table on stdout."""
    from ..experiment.report import write_comparison, write_run_report

    if args.out and len(args.run_dirs) == 1:
        from ..core.errors import UsageError

        raise UsageError("--out names a comparison page (two or more runs); one run's report is RUN/report.html.")
    if len(args.run_dirs) == 1:
        path, report = write_run_report(args.run_dirs[0])
        for note in report.notes:
            print(f"note: {note}", file=__import__("sys").stderr)
        print(f"wrote {path} ({report.seconds:.1f} s)")
        return 0
    from ..experiment.report import comparison_table
    from ..experiment.report.comparison import run_labels

    path, runs = write_comparison(args.run_dirs, args.out)
    labels = run_labels(runs)
    header, rows = comparison_table(runs, labels)
    if args.format == "json":
        print(json.dumps(clean_json({"comparison": str(path), "runs": dict(zip(labels, (str(c.run.root) for c in runs))),
                                     "header": header, "rows": rows}), indent=2))
        return 0
    print("\n".join(f"{label} = {c.run.root}" for label, c in zip(labels, runs)))
    print(format_table(header, rows))
    print(f"\nwrote {path}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from ..experiment.config import wants_test_loss
    from ..experiment.evaluation import evaluate_run
    from ..experiment.saved_run import load_run

    loaded = load_run(args.run_dir)
    if not loaded.run.test.exists():
        raise RecstackError(f"{loaded.run.root} has no test.pt (the encoded test split).")
    protocols = [args.protocol] if args.protocol else list(loaded.config.evaluation.protocols)
    _check_protocols(loaded.config, protocols)
    config, written = loaded.config, None
    if args.exclude_history:
        from ..core.errors import UsageError

        if not any(p in NEXT_ITEM_PROTOCOLS for p in protocols):
            raise UsageError("--exclude-history applies to the next-item protocols; evaluate with --protocol "
                             "next-item or next-item-sampled.")
        written, config = config, copy.deepcopy(config)
        config.evaluation.next_item.exclude_history = True
    metrics = evaluate_run(config, loaded.model, loaded.test_columns(), loaded.pre, loaded.seen, protocols,
                           with_loss=wants_test_loss(config), histories=loaded.histories)
    if args.format == "json":
        print(json.dumps(clean_json(metrics), indent=2))
    else:
        _report_metrics(Reporter("quiet"), metrics, str(loaded.run.root), config, written)
    return 0


def _check_protocols(config: Any, protocols: list[str]) -> None:
    """A UsageError for a protocol this run cannot be evaluated with (``evaluate --protocol``)."""
    from ..core.errors import UsageError
    from ..experiment.model_kinds import MODEL_KINDS

    for protocol in protocols:
        if protocol in NEXT_ITEM_PROTOCOLS and config.split.method != "leave-one-out":
            raise UsageError(f"--protocol {protocol} ranks each user's held-out next item; this run's split is "
                             f"{config.split.method!r}, not leave-one-out.")
        if protocol not in NEXT_ITEM_PROTOCOLS and MODEL_KINDS.get(config.model.kind).sequential:
            raise UsageError(f"model kind {config.model.kind!r} ranks items given a history: evaluate it with "
                             f"--protocol {' or '.join(NEXT_ITEM_PROTOCOLS)}, not {protocol}.")


def cmd_recommend(args: argparse.Namespace) -> int:
    import sys

    from ..core.errors import UsageError
    from ..experiment.model_kinds import MODEL_KINDS
    from ..experiment.saved_run import load_run, recommend

    history = None if args.history is None else [x.strip() for x in args.history.split(",") if x.strip()]
    if history is not None and not history:
        raise UsageError("--history lists no item ids; give them oldest first, separated by commas (--history "
                         "50,172,133).")
    loaded = load_run(args.run_dir)
    result = recommend(loaded, args.user, args.k, args.exclude_seen, history=history, keep_history=args.keep_history)
    sequential = MODEL_KINDS.get(loaded.config.model.kind).sequential
    if history is not None and result["unknown"]:
        dropped = ", ".join(map(repr, result["unknown"]))
        print(f"note: {len(result['unknown'])} of the {len(history)} history item(s) are not in this run's catalogue "
              f"and were dropped: {dropped}" + ("; the history is empty: these are the most popular items."
                                                if not result["known"] else "."), file=sys.stderr)
    if args.format == "json":
        print(json.dumps(result, indent=2, ensure_ascii=False))
        return 0
    if history is not None:
        kept = " (history kept)" if args.keep_history else " (excluding the history)"
        print(f"Top {len(result['items'])} next items after the history {', '.join(result['history'])}{kept}:")
    else:
        if not result["known"]:
            print(f"note: user {args.user!r} was not in the training data; these are the recommendations for an "
                  "unknown user (cold start).")
        if sequential:
            kept = " (history kept)" if args.keep_history and not args.exclude_seen else " (excluding the history)"
            what = f" after their {result['history_length']} stored item(s){kept}"
        else:
            what = " (excluding seen items)" if args.exclude_seen else ""
        print(f"Top {len(result['items'])} items for user {args.user}{what}:")
    print(_items_table(result["items"]))
    return 0


def cmd_similar(args: argparse.Namespace) -> int:
    from ..experiment.saved_run import load_run, similar

    result = similar(load_run(args.run_dir), args.item, args.k)
    if args.format == "json":
        print(json.dumps(result, indent=2, ensure_ascii=False))
        return 0
    print(f"Items most similar to {args.item} (cosine similarity):")
    print(_items_table(result["items"]))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from ..experiment.saved_run import load_run

    serving = _serving("export")
    loaded = load_run(args.run_dir)
    path = export_bundle(serving, loaded, Path(args.bundle_dir), queries=getattr(args, "queries", None))
    print(f"exported {loaded.run.root} to {path}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    serving = _serving("serve")
    run_server = getattr(serving, "run_server", None)
    if run_server is None:
        try:
            from recstack.serving.server import run_server
        except ImportError as exc:
            raise RecstackError(f"recstack serve needs recstack.serving.server ({exc}).") from None
    try:
        run_server(args.bundle, args.host, args.port, args.workers, access_log=args.access_log,
                   batch_window_ms=args.batch_window_ms, batch_max_queries=args.batch_max_queries,
                   index_connection={"dsn": args.index_dsn} if args.index_dsn else None)
    except ImportError as exc:  # the server's optional dependencies (fastapi, uvicorn)
        raise RecstackError(str(exc)) from None
    return 0


def cmd_data_fetch(args: argparse.Namespace) -> int:
    from ..datasets import load_movielens_100k
    from ..datasets.movielens_large import load_movielens_1m, load_movielens_20m

    load, title = {"movielens-100k": (load_movielens_100k, "MovieLens 100K"),
                   "movielens-1m": (load_movielens_1m, "MovieLens 1M"),
                   "movielens-20m": (load_movielens_20m, "MovieLens 20M")}[args.dataset]
    data = load(cache_dir=args.cache_dir, progress=True)
    print(f"{title} is available at {data.source} ({len(data.ratings):,} ratings, {len(data.movies):,} movies).")
    return 0


def cmd_data_info(args: argparse.Namespace) -> int:
    from ..experiment.tables import describe_table

    columns = {role: getattr(args, role) for role in ("user", "item", "rating", "timestamp") if getattr(args, role)}
    info = describe_table(args.path, columns, args.sep)
    if args.format == "json":
        print(json.dumps(info, indent=2))
        return 0
    mapping = ", ".join(f"{k}={v}" for k, v in info["mapping"].items()) or "none recognised (use --user/--item)"
    lines = [f"source:     {info['source']}", f"rows:       {info['rows']:,}", f"columns:    {', '.join(info['columns'])}",
             f"mapping:    {mapping}"]
    if "users" in info:
        lines.append(f"users:      {info['users']:,}")
    if "items" in info:
        lines.append(f"items:      {info['items']:,}")
    if "density" in info:
        lines.append(f"density:    {info['density']:.6f} (distinct user-item pairs / (users x items))")
        lines.append(f"duplicates: {info['duplicate_pairs']:,} rows repeat an earlier (user, item) pair")
    if "rating" in info:
        r = info["rating"]
        lines.append(f"ratings:    min {r['min']:g}, max {r['max']:g}, mean {r['mean']:.4f}, std {r['std']:.4f}, "
                     f"missing {r['missing']}")
        if "distribution" in r:
            lines.append("            " + ", ".join(f"{k}: {v:,}" for k, v in r["distribution"].items()))
    if "timestamp" in info:
        t = info["timestamp"]
        extra = f" ({t['min_utc']} .. {t['max_utc']})" if "min_utc" in t else ""
        lines.append(f"timestamps: {t['min']} .. {t['max']}{extra}")
    print("\n".join(lines))
    return 0


# -- helpers ---------------------------------------------------------------------------------------
def _serving(command: str) -> Any:
    try:
        import recstack.serving as serving
    except ImportError as exc:
        raise RecstackError(f"recstack {command} needs recstack.serving, which is not available in this "
                            f"installation ({exc}).") from None
    return serving


def export_bundle(serving: Any, loaded: Any, bundle_dir: Path, queries: str | None = None) -> Path:
    """Adapter from a run folder to ``recstack.serving.export``.

    ``queries="users"`` (two_tower's default): the bundle's query field is the config's user
    column (e.g. ``{"user_id": "42"}``): the exported query tower is ``Sequential(StringLookup,
    user tower)`` on raw ids. The candidates are the catalogue's raw item ids with their
    embeddings, the seen lists are the run's (items each user had before the test split), and a
    rating head travels along when the model has one. ``queries="histories"`` (the default of
    the next-item and fold-in kinds, and an option for a two_tower with ``model.user_history``):
    a history bundle (:mod:`recstack.experiment.history_export`).
    """
    import numpy as np
    import torch
    from torch import nn

    from ..experiment.history_export import FOLD_IN_KINDS, export_fold_in_bundle, export_history_bundle

    model, pre, config = loaded.model, loaded.pre, loaded.config
    kind = config.model.kind
    history_tower = kind == "two_tower" and getattr(getattr(model, "query_tower", None), "history", None) is not None
    if queries == "histories" and kind == "two_tower" and not history_tower:
        raise RecstackError("--queries histories needs a two_tower trained with model.user_history (its user "
                            "tower reads the user's items); this one reads user ids only: export it without "
                            "--queries.")
    if queries == "users" and (kind in FOLD_IN_KINDS or hasattr(model, "popularity")):
        raise RecstackError(f"a {kind} bundle answers users through their stored histories: export it without "
                            "--queries (or with --queries histories).")
    if hasattr(model, "encoder") and hasattr(model, "popularity"):      # sasrec, gru4rec
        return export_history_bundle(serving, loaded, bundle_dir)
    if kind in FOLD_IN_KINDS or (history_tower and queries == "histories"):
        return export_fold_in_bundle(serving, loaded, bundle_dir)
    if not hasattr(model, "query_tower"):
        raise RecstackError(f"model kind {config.model.kind!r} has no user tower to export; two-tower, next-item "
                            f"(sasrec, gru4rec) and {', '.join(FOLD_IN_KINDS)} runs can be bundled.")
    user_field, item_field = config.data.columns.user, config.data.columns.item
    with torch.no_grad():
        embeddings = model.item_embeddings(pre.catalogue())
    item_ids = np.asarray(pre.items.get_vocabulary()[1:], dtype=str)
    seen = loaded.seen
    counts = seen.counts
    seen_table = {user_field: pre.users.lookup_inverse(np.repeat(np.arange(seen.num_keys), counts)),
                  item_field: pre.items.lookup_inverse(seen.ids)}
    head = getattr(model, "rating_head", None)
    spec = serving.ServingSpec(query_tower=nn.Sequential(pre.users, model.query_tower), query_inputs=user_field,
                               rating_head=head, kind="multitask" if head is not None else "two_tower")
    try:
        result = serving.export(spec, bundle_dir, candidate_key=item_field, candidate_identifiers=item_ids,
                                candidate_embeddings=embeddings, seen=seen_table, seen_key=user_field,
                                extra={"run_dir": str(loaded.run.root), "experiment": config.name,
                                       "model_kind": config.model.kind})
    except TypeError as exc:
        raise RecstackError(f"recstack.serving.export does not take the arguments this command passes ({exc}); "
                            "the CLI adapter (recstack.cli.commands.export_bundle) needs updating.") from None
    return Path(result) if isinstance(result, (str, Path)) else bundle_dir


def _items_table(items: list[dict[str, Any]]) -> str:
    with_labels = any("label" in i for i in items)
    header = ["rank", "item", *(["label"] if with_labels else []), "score"]
    rows = [[str(r), i["item"], *([i.get("label", "")] if with_labels else []), i["score"]]
            for r, i in enumerate(items, 1)]
    return format_table(header, rows)


def _report_metrics(reporter: Reporter, metrics: dict[str, Any], run_dir: str, config: Any = None,
                    written: Any = None) -> None:
    """The test metrics table, then (when the config has a reference block) the published figures
    beside the run's values; ``written`` is the config before ``--set`` overrides, if any."""
    rows, next_item = [], {}
    for protocol, values in metrics.get("protocols", {}).items():
        if protocol in NEXT_ITEM_PROTOCOLS:
            next_item[protocol] = values
        else:
            rows.append([protocol, *(values.get(f"factorized_top_k/{c}") for c in METRIC_COLUMNS)])
    header = ["protocol", "top1", "top10", "top100", "recall@10", "ndcg@10", "mrr"]
    text = f"Test metrics ({metrics.get('test_rows', '?')} test rows), run {run_dir}:"
    if rows:
        text += "\n" + format_table(header, rows)
    if next_item:
        text += "\n" + _next_item_table(next_item)
    validation = metrics.get("validation")
    if isinstance(validation, dict):
        best = f", weights of epoch {metrics['best_epoch']}" if "best_epoch" in metrics else ""
        shown = ", ".join(f"{k} {v:.4f}" for k, v in validation.items() if k in _next_item_shown(validation))
        text += f"\nvalidation ({validation.get('protocol', '?')}{best}): {shown}"
    test = metrics.get("test", {})
    if "root_mean_squared_error" in test:
        text += f"\nrating RMSE: {test['root_mean_squared_error']:.4f}"
    if "loss" in test:
        text += f"\ntest loss: {test['loss']:.4f}"
    data: dict[str, Any] = {"run_dir": run_dir, **clean_json(metrics)}
    reference = _reference_text(metrics, config, written, data) if config is not None else ""
    reporter.result(text + reference, data)


def _next_item_shown(values: dict[str, Any]) -> list[str]:
    """The next-item metrics a table shows: HR and NDCG at K = 5, 10, 20 (those evaluated; else the two
    smallest K), and MRR."""
    ks = sorted({int(k.rsplit("_", 1)[1]) for k in values if k.startswith("hr_at_")})
    shown = [k for k in ks if k in (5, 10, 20)] or ks[:2]
    return [name for k in shown for name in (f"hr_at_{k}", f"ndcg_at_{k}")] + ["mrr"]


def _next_item_table(protocols: dict[str, dict[str, Any]]) -> str:
    names = _next_item_shown(next(iter(protocols.values())))
    header = ["protocol", *(n.replace("_at_", "@") for n in names), "users"]
    rows = [[p, *(v.get(n) for n in names), str(int(v.get("rows", 0)))] for p, v in protocols.items()]
    return format_table(header, rows)


def _reference_text(metrics: dict[str, Any], config: Any, written: Any, data: dict[str, Any]) -> str:
    from ..experiment.reference import applicable_reference, compare

    applied = applicable_reference(config, written)
    if applied is None:
        return ""
    rows = compare(metrics, applied)
    label = f" ({applied.label})" if applied.label else ""
    lines = [f"\n\nPublished{label}: {applied.source}",
             format_table(["metric", "recstack", "published", "difference"],
                          [[r.metric, r.result, _figure(r.reference), r.difference] for r in rows])]
    if applied.note:
        lines.append(f"note: {applied.note}")
    if applied.differs_in:
        lines.append(f"note: this run changes {', '.join(applied.differs_in)} (--set); the published figures are "
                     "for the setting as written.")
    data["reference"] = {"source": applied.source, "label": applied.label, "differs_in": applied.differs_in,
                         "metrics": {r.metric: {"recstack": r.result, "published": r.reference} for r in rows}}
    return "\n".join(lines)


def _figure(value: float) -> str:
    """A published figure with the digits it was published with (0.00012 stays 0.00012 instead of 0.0001);
    long reprs (1/3) get 4 decimals like the other columns."""
    return f"{value:.4f}" if len(repr(value)) > 8 else repr(value)
