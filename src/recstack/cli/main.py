"""The ``recstack`` command line: argument parsing, dispatch and exit codes.

Exit codes: 0 success; 1 runtime failure (bad data, missing files, a failed
run); 2 usage error (bad arguments, invalid config); 130 interrupted.
"""

from __future__ import annotations

import argparse
import sys
import traceback
import warnings
from collections.abc import Sequence
from typing import NoReturn

from ..core.errors import ConfigError, RecstackError, UsageError  # noqa: F401 (re-exported)
from ..experiment.config import PROTOCOLS, separator_problem
from ..experiment.deprecations import DEPRECATED_PROTOCOLS, ConfigDeprecationWarning
from ..training.progress import PROGRESS_MODES

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class _Parser(argparse.ArgumentParser):
    """argparse with usage errors on one line ("recstack serve: error: ... (see recstack serve --help)")
    instead of the usage block followed by the error; subcommand parsers inherit it."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {' '.join(message.split())} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    from . import commands
    from ..experiment.config_files import shipped_configs
    from ..experiment.model_kinds import MODEL_KINDS

    kinds = "\n".join(f"  {n:<12} {MODEL_KINDS.get(n).description}" for n in MODEL_KINDS.names())
    names = ", ".join(shipped_configs())
    parser = _Parser(
        prog="recstack", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Config-driven recommender experiments: train, evaluate, recommend, export, serve.",
        epilog="Run 'recstack COMMAND --help' for a command's options. Exit codes: 0 ok, 1 runtime failure, "
               "2 usage or config error.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    def command(name: str, help_text: str, func, description: str | None = None, epilog: str | None = None):
        p = sub.add_parser(name, help=help_text, description=description or help_text, epilog=epilog,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        p.set_defaults(func=func)
        return p

    def progress_option(p: argparse.ArgumentParser) -> None:
        p.add_argument("--progress", choices=PROGRESS_MODES, default="bar",
                       help="bar: progress bars and summaries; quiet: results only; jsonl: JSON lines on stdout "
                            "(default: bar)")

    def format_option(p: argparse.ArgumentParser) -> None:
        p.add_argument("--format", choices=("table", "json"), default="table", help="output format (default: table)")

    def train_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config value, e.g. training.epochs=5 (repeatable; values are YAML)")
        p.add_argument("--run-dir", metavar="DIR", help="run folder to create (default: output.runs_dir/NAME-TIME)")
        p.add_argument("--nproc", type=_positive_int, default=1, metavar="N",
                       help="data-parallel training in N processes (torch.distributed, gloo on CPU / NCCL on GPU, "
                            "launched with torchrun); the global batch stays training.batch_size, so results "
                            "match one process (default: 1)")
        progress_option(p)

    p = command("train", "train a model from a config (a shipped config's name or a file), or resume a run",
                commands.cmd_train,
                epilog=f"shipped configs (recstack configs lists them): {names}\n\n"
                       "model kinds (model.kind):\n" + kinds + "\n\nexamples:\n"
                       "  recstack train basic-retrieval\n"
                       "  recstack train my.yaml --set training.epochs=20 --set model.layer_sizes=[64,32]\n"
                       "  recstack train --resume runs/my-20250101-120000\n"
                       "  recstack train deep-retrieval --nproc 2")
    p.add_argument("config", nargs="?", metavar="CONFIG",
                   help="a shipped config's name (e.g. basic-retrieval) or a .yaml/.yml/.toml/.json file")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run from its last checkpoint")
    train_options(p)

    p = command("tune", "search hyperparameters on the validation split (Optuna), resumable",
                commands.cmd_tune,
                description="Train one trial per sample of the config's tune.space and score it on the validation "
                            "split (never the test split); TPE sampling and median pruning by the validation metric "
                            "of early epochs. Running the same command again continues the study. The folder gets "
                            "study.json, trials.csv, trials.png and best_config.yaml (recstack train it to "
                            "reproduce the best trial).",
                epilog="the config's tune section, e.g.:\n"
                       "  tune:\n"
                       "    metric: ndcg_at_10\n"
                       "    space:\n"
                       "      optimizer.learning_rate: {low: 1.0e-4, high: 0.1, log: true}\n"
                       "      model.embedding_dim: {choices: [32, 64, 128]}\n"
                       "      training.epochs: {low: 5, high: 50, int: true}\n\n"
                       "examples:\n"
                       "  recstack tune my.yaml --trials 20\n"
                       "  recstack tune ease --set split.validation_fraction=0.1 \\\n"
                       "      --set 'tune.space={model.l2: {low: 10, high: 2000, log: true}}' --trials 6")
    p.add_argument("config", metavar="CONFIG",
                   help="a shipped config's name or a .yaml/.yml/.toml/.json file with a tune section")
    p.add_argument("--trials", type=_positive_int, metavar="N",
                   help="finished trials the study should have (default: tune.trials); earlier ones count")
    p.add_argument("--out", metavar="DIR", help="the study's folder (default: output.runs_dir/NAME-tune)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. training.epochs=5 or tune.metric=recall_at_10 (repeatable)")
    progress_option(p)

    p = command("configs", "list the configs shipped with recstack, or print one", commands.cmd_configs,
                epilog="examples:\n  recstack configs\n  recstack configs my-ratings > my.yaml")
    p.add_argument("name", nargs="?", metavar="NAME", help="print this config's file (to copy and edit)")

    p = command("reproduce", "train a shipped config and compare the result with its published figures",
                commands.cmd_reproduce,
                description="The same run as 'recstack train NAME' for a shipped config with a reference block "
                            "(the published figures it reproduces), printed side by side with the result.",
                epilog=f"shipped configs: {names}")
    p.add_argument("name", metavar="NAME", help="a shipped config with a reference block, e.g. basic-retrieval")
    train_options(p)

    p = command("evaluate", "evaluate a trained run on its test split", commands.cmd_evaluate)
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--protocol", type=_protocol, metavar="{" + ",".join(PROTOCOLS) + "}",
                   help="all-items: rank each test item among all items (TFRS top-k accuracy); exclude-seen: "
                        "per-user metrics with items seen before the test split removed; next-item: rank each "
                        "user's held-out item among all items given the history (leave-one-out runs); "
                        "next-item-sampled: among sampled items only (default: the config's protocols)")
    p.add_argument("--exclude-history", action="store_true",
                   help="next-item protocols: remove each user's earlier items from the ranking (as "
                        "evaluation.next_item.exclude_history: true; the held-out item is always ranked)")
    format_option(p)

    p = command("report", "write a run's report.html, or a comparison page of several runs", commands.cmd_report,
                description="One run: writes RUN/report.html (a single self-contained file: data summary, config, "
                            "curves, test metrics beside the published figures and the popularity baseline, sample "
                            "recommendations, coverage and long tail; recstack train writes it too). Several runs: "
                            "writes a comparison page (metrics side by side with differences, curves overlaid, "
                            "config differences highlighted) and prints the metrics table.",
                epilog="examples:\n  recstack report runs/basic-retrieval-20250101-120000\n"
                       "  recstack report runs/demo/* --out compare.html")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    p.add_argument("--out", metavar="FILE", help="the comparison page (default: comparison.html in the folder that "
                                                 "holds the runs)")
    format_option(p)

    p = command("recommend", "top-k items for a user, or for an ad-hoc history, of a trained run",
                commands.cmd_recommend,
                description="Top-k items of a trained run for a user (--user) or for a history of items "
                            "(--history). Runs of the sequential kinds (sasrec, gru4rec, transitions) rank the "
                            "items that follow the user's stored history (the items before the test split, in "
                            "time order); other kinds score the user.",
                epilog="The history (a sequential run's stored one, or --history) is left out of the results "
                       "unless --keep-history is given. --history takes raw item ids, oldest first; ids not in "
                       "the run's catalogue are dropped with a note naming them. It needs a kind that reads "
                       "histories (sasrec, gru4rec, transitions, ease, popularity, multvae).\n\nexamples:\n"
                       "  recstack recommend runs/sasrec-20250101-120000 --user 42\n"
                       "  recstack recommend runs/sasrec-20250101-120000 --history 50,172,133 -k 5")
    p.add_argument("run_dir", metavar="RUN_DIR")
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--user", metavar="ID", help="raw user id as in the data")
    who.add_argument("--history", metavar="ID,ID,...", help="raw item ids of an ad-hoc history, oldest first, "
                                                            "separated by commas")
    p.add_argument("-k", type=_positive_int, default=10, help="number of items (default: 10)")
    p.add_argument("--exclude-seen", action="store_true", help="leave out items the user interacted with before "
                                                               "the test split (always so for sequential runs "
                                                               "unless --keep-history)")
    p.add_argument("--keep-history", action="store_true",
                   help="keep the history's items in the results (default: a sequential run's stored history, "
                        "or --history, is left out)")
    format_option(p)

    p = command("similar", "items most similar to an item (cosine of item embeddings)", commands.cmd_similar)
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--item", required=True, metavar="ID", help="raw item id as in the data")
    p.add_argument("-k", type=_positive_int, default=10, help="number of items (default: 10)")
    format_option(p)

    p = command("export", "export a trained run as a serving bundle (recstack.serving)", commands.cmd_export)
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("bundle_dir", metavar="BUNDLE_DIR")
    p.add_argument("--queries", choices=("users", "histories"), default=None,
                   help="what the bundle's queries are: users (a user tower on raw user ids) or histories "
                        "(item ids; a stored user is their stored history). Default: histories for sasrec, "
                        "gru4rec and the fold-in kinds (ease, itemknn, ials, multvae, ensemble), users for "
                        "two_tower; a two_tower with model.user_history takes either")

    p = command("serve", "serve a bundle over HTTP (recstack.serving)", commands.cmd_serve)
    p.add_argument("bundle", metavar="BUNDLE")
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default: 127.0.0.1)")
    p.add_argument("--port", type=_port, default=8000, help="TCP port, 1-65535 (default: 8000)")
    p.add_argument("--workers", type=_positive_int, default=1, help="worker processes (default: 1)")
    p.add_argument("--batch-window-ms", type=_window_ms, default=None, metavar="MS",
                   help="dynamic batching: score the requests that arrive within MS milliseconds (0-1000; 0: "
                        "those already waiting) in one matmul (default: off)")
    p.add_argument("--batch-max-queries", type=_positive_int, default=64, metavar="N",
                   help="most queries in one dynamic batch (default: 64)")
    p.add_argument("--access-log", action="store_true", help="log one line per request (default: off)")
    p.add_argument("--index-dsn", metavar="DSN", help="PostgreSQL connection of a pgvector-backed bundle (bundles "
                   "never store one)")

    data = command("data", "fetch datasets and describe interaction files", None)
    data_sub = data.add_subparsers(dest="data_command", metavar="SUBCOMMAND")
    data_sub.required = True
    p = data_sub.add_parser("fetch", help="download a dataset into the cache (checksum-verified)",
                            description="Download a dataset into the cache (SHA-256-verified): movielens-100k, "
                                        "movielens-1m or movielens-20m.")
    p.set_defaults(func=commands.cmd_data_fetch)
    p.add_argument("dataset", choices=("movielens-100k", "movielens-1m", "movielens-20m"))
    p.add_argument("--cache-dir", help="cache root (default: $RECSTACK_CACHE_DIR or ~/.cache/recstack)")
    p = data_sub.add_parser("info", help="rows, users, items, density, ratings and time range of interactions",
                            description="Describe an interactions table: a CSV/Parquet file, an ml-100k folder, "
                                        "or movielens-100k. Columns are guessed from common names unless given.")
    p.set_defaults(func=commands.cmd_data_info)
    p.add_argument("path", metavar="PATH")
    for role in ("user", "item", "rating", "timestamp"):
        p.add_argument(f"--{role}", metavar="COLUMN", help=f"{role} column")
    p.add_argument("--sep", type=_separator, default=",", help="CSV separator, one character (default: ',')")
    format_option(p)
    return parser


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _number_in(text: str, parse: type, low: float, high: float, expected: str) -> float:
    """``parse(text)`` if it lies in [low, high], else argparse's error saying ``expected``."""
    try:
        value = parse(text)
    except ValueError:
        value = None
    if value is None or not low <= value <= high:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
    return value


def _window_ms(text: str) -> float:
    return _number_in(text, float, 0, 1000, "milliseconds between 0 and 1000")


def _port(text: str) -> int:
    """A TCP port to listen on. 0 ("any free port") is refused: clients need to know the port, and
    the server would only report the 0 it was given."""
    return _number_in(text, int, 1, 65535, "a port number 1-65535")


def _separator(text: str) -> str:
    problem = separator_problem(text)
    if problem:
        raise argparse.ArgumentTypeError(problem)
    return text


def _protocol(text: str) -> str:
    """An evaluation protocol; the old name "seed" works with a deprecation warning."""
    if text in DEPRECATED_PROTOCOLS:
        warnings.warn(f"--protocol {text} is now called --protocol {DEPRECATED_PROTOCOLS[text]}; {text!r} still "
                      "works but will be removed.", ConfigDeprecationWarning, stacklevel=2)
        return DEPRECATED_PROTOCOLS[text]
    if text not in PROTOCOLS:
        raise argparse.ArgumentTypeError(f"invalid choice: {text!r} (choose from {', '.join(PROTOCOLS)})")
    return text


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (never calls sys.exit itself)."""
    with warnings.catch_warnings():
        # Python hides DeprecationWarnings outside __main__; whoever wrote the config should see these,
        # as one "warning:" line on stderr (other warnings print as Python prints them).
        warnings.simplefilter("default", ConfigDeprecationWarning)
        show = warnings.showwarning

        def show_deprecation(message, category, filename, lineno, file=None, line=None) -> None:
            if issubclass(category, ConfigDeprecationWarning):
                print(f"warning: {message}", file=sys.stderr, flush=True)
            else:
                show(message, category, filename, lineno, file, line)

        warnings.showwarning = show_deprecation
        return _main(list(sys.argv[1:] if argv is None else argv))


def _main(argv: list[str]) -> int:
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2), already printed by argparse
        return int(exc.code) if isinstance(exc.code, int) else EXIT_USAGE
    args.argv = ["recstack", *argv]
    try:
        return int(args.func(args) or EXIT_OK)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (RecstackError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception:  # a bug: show the traceback, still exit 1
        traceback.print_exc()
        print("error: recstack failed unexpectedly (traceback above); please report it.", file=sys.stderr)
        return EXIT_FAILURE


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
