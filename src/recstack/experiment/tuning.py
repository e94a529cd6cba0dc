"""Hyperparameter search on the validation split: ``recstack tune CONFIG --trials N`` (Optuna).

The config's ``tune`` section (:class:`recstack.experiment.schema.TuneConfig`) declares the
search space with the dotted keys ``--set`` takes::

    tune:
      metric: ndcg_at_10            # of evaluation.validation_protocol, K in evaluation.ks
      direction: maximize
      space:
        optimizer.learning_rate: {low: 1.0e-4, high: 0.1, log: true}
        model.embedding_dim: {choices: [32, 64, 128]}
        training.epochs: {low: 5, high: 50, int: true}

The space and the metric are validated by :mod:`recstack.experiment.tuning_space`. Every
trial is the config with one sample applied (validated like a ``--set``), trained by
:func:`recstack.experiment.run.fit_for_validation`: the same model building, seeds, fit loop,
per-epoch validation and model selection as ``recstack train``, without a run folder and
without ever reading the test split. Its value is the validation metric of the model
``recstack train`` would keep (the next-item selection's best epoch, else the last validated
epoch). Gradient-trained kinds report each epoch's validation value to Optuna, whose pruner may
stop a trial early; closed forms report their one value.

The output folder holds the Optuna study in a journal file (``study.journal``): running the
same command again continues the study (finished and pruned trials count and are not rerun; a
trial left running by a killed process is marked failed and does not count), refusing a study
of a different config, search space or data. After every invocation the folder also gets
``study.json`` (every trial: number, params, value, state, seconds, per-epoch values),
``trials.csv``, ``trials.png`` (value per trial and the best so far; needs matplotlib) and
``best_config.yaml``: the full config with the best trial's settings and no ``tune`` section,
so that ``recstack train best_config.yaml`` reproduces that trial.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import math
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core.errors import ConfigError, DataError, DivergedError
from ..core.io import atomic_write_bytes, atomic_write_json, atomic_write_text
from ..training.callbacks import Callback
from .config import ExperimentConfig, TuneConfig, dump_config, with_settings
from .prepare import Prepared, prepare
from .reporter import Reporter, clean_json
from .run import ValidationFit, fit_for_validation
from .run_dir import fingerprint
from .tuning_space import SearchParam, require_tune, search_space, untuned, validation_key

OPTUNA_MISSING = ("recstack tune needs Optuna, which is not installed: pip install 'recstack[tune]' "
                  "(or pip install 'optuna>=3.5').")
STUDY_NAME = "recstack-tune"


# -- a trial's validation values ----------------------------------------------------------------------
def _history_value(history_keys: Sequence[str], key: str) -> str | None:
    """The history column that holds ``key`` (a ``/metric`` suffix: prefer the retrieval task's)."""
    if not key.startswith("/"):
        return key if key in history_keys else None
    found = [k for k in history_keys if k.startswith("val_") and k.endswith(key)]
    preferred = f"val_factorized_top_k{key}"
    return preferred if preferred in found else (found[0] if found else None)


class TrialReport(Callback):
    """Each epoch's validation value of a trial: kept in ``values`` and reported to Optuna, which
    may prune the trial (``prune``: raises ``optuna.TrialPruned`` from inside ``fit``)."""

    def __init__(self, trial: Any, key: str, prune: bool):
        self.trial, self.key, self.prune = trial, key, prune
        self.values: dict[int, float] = {}
        self.column: str | None = None

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        logs = logs or {}
        self.column = self.column or _history_value(list(logs), self.key)
        value = logs.get(self.column) if self.column else None
        if value is None or not math.isfinite(float(value)):
            return   # no validation this epoch (validation_freq)
        self.values[epoch] = float(value)
        self.trial.report(float(value), epoch)
        if self.prune and self.trial.should_prune():
            import optuna

            raise optuna.TrialPruned(f"validation {self.key.lstrip('/')} {value:.4f} after epoch {epoch}")


def trial_value(fit: ValidationFit, report: TrialReport, config: ExperimentConfig, metric: str) -> float:
    """The validation ``metric`` of the model ``recstack train`` keeps: the next-item selection's
    best epoch (restore_best), else the last validated epoch."""
    v = fit.validation
    if v is not None and fit.selected and config.training.early_stopping.restore_best:
        value = v.best_metrics.get(metric)
    else:
        value = report.values[max(report.values)] if report.values else None
    if value is None or not math.isfinite(float(value)):
        raise DataError(f"the trial produced no finite validation {metric} (the logs hold no {report.key.lstrip('/')}"
                        " value); check evaluation.validation_protocol and training.validation_freq (a freq above "
                        "training.epochs never validates).")
    return float(value)


# -- the study -----------------------------------------------------------------------------------------
@dataclass
class TuneResult:
    """What a ``tune`` call leaves: the folder, every trial's row, the best trial (None before one
    completes), and how many trials this call ran."""

    out: Path
    trials: list[dict[str, Any]]
    best: dict[str, Any] | None
    ran: int
    written: list[Path]


def default_out(config: ExperimentConfig) -> Path:
    return Path(config.output.runs_dir) / f"{config.name}-tune"


def tune(config: ExperimentConfig, reporter: Reporter, out: str | Path | None = None,
         trials: int | None = None) -> TuneResult:
    """Run (or continue) the study of ``config.tune`` in ``out`` until ``trials`` (default
    ``tune.trials``) trials have finished (completed or pruned). See the module docstring."""
    try:
        import optuna
    except ImportError:
        raise ConfigError(OPTUNA_MISSING) from None
    space = search_space(config)
    t = require_tune(config)
    target = t.trials if trials is None else trials
    if target < 1:
        raise ConfigError(f"--trials must be >= 1, got {target}.")
    key = validation_key(config)
    base = untuned(config)
    folder = Path(out) if out is not None else default_out(config)
    folder.mkdir(parents=True, exist_ok=True)
    prepared = prepare(base, reporter)
    if prepared.validation is None or prepared.validation.num_rows == 0:
        raise ConfigError(f"{config.name}: recstack tune scores every trial on the validation split, and this "
                          "config has none: set split.validation_fraction (e.g. --set split.validation_fraction=0.1), "
                          "or use a leave-one-out or per-user-random split with a validation part.")
    kind_prunes = _gradient_trained(base)
    with _quiet_optuna(optuna):
        study = _open_study(optuna, folder, base, t, space, prepared, reporter)
    finished = _finished(study)
    todo = max(0, target - finished)
    if todo == 0:
        reporter.note(f"{folder} holds {finished} finished trials already (asked for {target}); nothing to run.")
    data_cache: dict[str, Prepared] = {_data_key(base): prepared}
    started = time.perf_counter()

    def objective(trial: Any) -> float:
        settings = {p.key: p.suggest(trial) for p in space}
        trial_config = with_settings(base, settings)
        data = _data_for(trial_config, data_cache)
        report = TrialReport(trial, key, prune=kind_prunes and t.pruner != "none")
        quiet = Reporter("quiet", out=io.StringIO(), err=io.StringIO())
        start = time.perf_counter()
        try:
            fit = fit_for_validation(trial_config, data, quiet, [report])
            value = trial_value(fit, report, trial_config, t.metric)
        except BaseException as exc:
            if not isinstance(exc, optuna.TrialPruned):
                trial.set_user_attr("error", "interrupted (Ctrl-C)" if isinstance(exc, KeyboardInterrupt)
                                    else f"{type(exc).__name__}: {' '.join(str(exc).split())[:500]}")
            raise
        finally:
            trial.set_user_attr("train_seconds", time.perf_counter() - start)
        return value

    def progress(study: Any, frozen: Any) -> None:
        reporter.info(_progress_line(study, frozen, target, t.direction), trial=frozen.number,
                      state=frozen.state.name, value=frozen.value, params=frozen.params)

    try:
        if todo:
            reporter.info(f"study {folder}: {finished} finished trials, running {todo} more "
                          f"({t.sampler} sampler, pruner {t.pruner}; validation {t.metric}, {t.direction})")
            with _quiet_optuna(optuna):
                study.optimize(objective, n_trials=todo, catch=(DivergedError,), callbacks=[progress],
                               gc_after_trial=False)
    finally:
        rows, best = study_rows(study), _best(study)
        written = write_outputs(folder, base, t, space, rows, best, reporter)
    ran = _finished(study) - finished
    reporter.info(f"{ran} trials in {time.perf_counter() - started:.1f}s; study in {folder}", out=str(folder))
    return TuneResult(folder, rows, best, ran, written)


def _gradient_trained(config: ExperimentConfig) -> bool:
    from .model_kinds import MODEL_KINDS

    return MODEL_KINDS.get(config.model.kind).gradient_trained


def _data_key(config: ExperimentConfig) -> str:
    """What the prepared data depends on besides data and split (fixed): the features section."""
    return json.dumps(dataclasses.asdict(config.features), sort_keys=True)


def _data_for(config: ExperimentConfig, cache: dict[str, Prepared]) -> Prepared:
    """The prepared data of ``config``: reused while the features section is unchanged (the last one kept)."""
    key = _data_key(config)
    if key not in cache:
        cache.clear()
        cache[key] = prepare(config, Reporter("quiet", out=io.StringIO(), err=io.StringIO()))
    return cache[key]


@contextmanager
def _quiet_optuna(optuna: Any) -> Iterator[None]:
    """Optuna's own log lines off (recstack prints one line per trial, failures included)."""
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(verbosity)


def _storage(optuna: Any, path: Path) -> Any:
    """A journal-file storage (Optuna >= 4: JournalFileBackend; 3.x: JournalFileStorage)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # ExperimentalWarning on Optuna 3.x
        try:
            from optuna.storages.journal import JournalFileBackend
        except ImportError:  # pragma: no cover - Optuna 3.x
            from optuna.storages import JournalFileStorage as JournalFileBackend
        return optuna.storages.JournalStorage(JournalFileBackend(str(path)))


def study_fingerprint(base: ExperimentConfig, tune_config: TuneConfig, space: list[SearchParam],
                      prepared: Prepared) -> str:
    """SHA-256 of what makes two invocations the same study: the config without ``tune``, the search
    (space, metric, direction, sampler, pruner, seed; not the number of trials) and the data's contents."""
    search = {k: v for k, v in dataclasses.asdict(tune_config).items() if k not in ("trials", "space")}
    blob = json.dumps({"config": base.to_dict(), "search": search, "space": [dataclasses.asdict(p) for p in space],
                       "data": [f["sha256"] for f in fingerprint_files(prepared)]}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def fingerprint_files(prepared: Prepared) -> list[dict[str, Any]]:
    files = prepared.info.get("files")
    return files if isinstance(files, list) else fingerprint(prepared.data.files)


def _open_study(optuna: Any, folder: Path, base: ExperimentConfig, t: TuneConfig, space: list[SearchParam],
                prepared: Prepared, reporter: Reporter) -> Any:
    """Create or load the study in ``folder``; refuse another config's; fail trials a killed process left running."""
    storage = _storage(optuna, folder / "study.journal")
    print_key = study_fingerprint(base, t, space, prepared)
    existing = [s.study_name for s in optuna.get_all_study_summaries(storage)]
    count = 0
    if STUDY_NAME in existing:
        study = optuna.load_study(study_name=STUDY_NAME, storage=storage)
        if study.user_attrs.get("fingerprint") != print_key:
            raise ConfigError(f"{folder} holds a study of another config, search space or data; continuing it would "
                              "mix incomparable trials. Give another --out folder, or delete this one to start over.")
        count = len(study.trials)
    seed = base.seed if t.seed is None else t.seed
    # Seeded by the number of trials so far: a continued study does not redraw its first samples.
    sampler = (optuna.samplers.TPESampler(seed=seed + count, n_startup_trials=t.startup_trials)
               if t.sampler == "tpe" else optuna.samplers.RandomSampler(seed=seed + count))
    pruner = (optuna.pruners.MedianPruner(n_startup_trials=t.startup_trials, n_warmup_steps=t.warmup_epochs)
              if t.pruner == "median" else optuna.pruners.NopPruner())
    study = optuna.create_study(study_name=STUDY_NAME, storage=storage, sampler=sampler, pruner=pruner,
                                direction=t.direction, load_if_exists=True)
    if not count:
        study.set_user_attr("fingerprint", print_key)
        study.set_user_attr("config", base.name)
    running = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
    for trial in running:
        storage.set_trial_user_attr(trial._trial_id, "error", "interrupted: the process ended during the trial")
        storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.FAIL)
    if running:
        reporter.note(f"trial {', '.join(str(t.number) for t in running)} of {folder} was left running by an "
                      "interrupted process: marked failed (it does not count).")
    return study


def _finished(study: Any) -> int:
    from optuna.trial import TrialState

    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))


def _best(study: Any) -> dict[str, Any] | None:
    from optuna.trial import TrialState

    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not done:
        return None
    best = study.best_trial
    return {"number": best.number, "value": best.value, "params": dict(best.params)}


def study_rows(study: Any) -> list[dict[str, Any]]:
    """One dict per trial: number, state, value, seconds, params, per-epoch values, error."""
    rows = []
    for trial in study.get_trials(deepcopy=False):
        seconds = ((trial.datetime_complete - trial.datetime_start).total_seconds()
                   if trial.datetime_complete and trial.datetime_start else None)
        rows.append({"number": trial.number, "state": trial.state.name, "value": trial.value,
                     "seconds": seconds, "params": dict(trial.params),
                     "epoch_values": {str(k): v for k, v in sorted(trial.intermediate_values.items())},
                     **({"error": trial.user_attrs["error"]} if "error" in trial.user_attrs else {})})
    return rows


def _progress_line(study: Any, frozen: Any, target: int, direction: str) -> str:
    from optuna.trial import TrialState

    params = " ".join(f"{k}={_short(v)}" for k, v in frozen.params.items())
    seconds = ((frozen.datetime_complete - frozen.datetime_start).total_seconds()
               if frozen.datetime_complete and frozen.datetime_start else math.nan)
    if frozen.state == TrialState.COMPLETE:
        what = f"value {frozen.value:.4f}"
    elif frozen.state == TrialState.PRUNED:
        last = max(frozen.intermediate_values) if frozen.intermediate_values else 0
        what = f"pruned after epoch {last}"
    else:
        what = f"failed ({frozen.user_attrs.get('error', 'error')})"
    best = _best(study)
    best_text = f"; best {best['value']:.4f} (trial {best['number']})" if best else ""
    return f"trial {frozen.number} [{_finished(study)}/{target}]: {what} in {seconds:.1f}s{best_text}  {params}"


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


# -- outputs -----------------------------------------------------------------------------------------
def write_outputs(folder: Path, base: ExperimentConfig, t: TuneConfig, space: list[SearchParam],
                  rows: list[dict[str, Any]], best: dict[str, Any] | None, reporter: Reporter) -> list[Path]:
    """study.json, trials.csv, trials.png (with matplotlib) and best_config.yaml (once a trial completed)."""
    summary = {"config": base.name, "metric": t.metric, "direction": t.direction, "sampler": t.sampler,
               "pruner": t.pruner,
               "validation_protocol": base.evaluation.validation_protocol,
               "space": {p.key: p.to_dict() for p in space}, "best": best, "trials": rows}
    written = [folder / "study.json", folder / "trials.csv"]
    atomic_write_json(written[0], clean_json(summary))
    atomic_write_text(written[1], trials_csv(rows, [p.key for p in space]))
    figure = _figure(rows, t.metric, t.direction, reporter)
    if figure is not None:
        atomic_write_bytes(folder / "trials.png", figure)
        written.append(folder / "trials.png")
    if best is not None:
        best_config = with_settings(base, best["params"])
        header = (f"# recstack tune: the best of {sum(r['state'] == 'COMPLETE' for r in rows)} completed trials "
                  f"(trial {best['number']}, validation {t.metric} {best['value']:.6g});\n"
                  f"# recstack train this file to reproduce it. Tuned: "
                  f"{', '.join(f'{k}={_short(v)}' for k, v in best['params'].items())}\n")
        atomic_write_text(folder / "best_config.yaml", header + dump_config(best_config))
        written.append(folder / "best_config.yaml")
    return written


def trials_csv(rows: list[dict[str, Any]], keys: list[str]) -> str:
    """number, state, value, seconds, one column per tuned setting, epochs reported, error."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["number", "state", "value", "seconds", *keys, "epochs_reported", "error"])
    for r in rows:
        writer.writerow([r["number"], r["state"], "" if r["value"] is None else repr(r["value"]),
                         "" if r["seconds"] is None else f"{r['seconds']:.3f}",
                         *("" if r["params"].get(k) is None else r["params"][k] for k in keys),
                         len(r["epoch_values"]), r.get("error", "")])
    return buffer.getvalue()


def table(rows: list[dict[str, Any]], keys: list[str]) -> tuple[list[str], list[list[Any]]]:
    """(header, rows) of the printed trials table."""
    header = ["trial", "state", "value", "seconds", *keys]
    body = [[r["number"], r["state"].lower(), r["value"], None if r["seconds"] is None else f"{r['seconds']:.2f}",
             *(_short(r["params"][k]) if k in r["params"] else None for k in keys)] for r in rows]
    return header, body


def _figure(rows: list[dict[str, Any]], metric: str, direction: str, reporter: Reporter) -> bytes | None:
    from .plots import have_matplotlib, trials_figure

    if not have_matplotlib():
        reporter.note("trials.png not written: matplotlib is not installed (pip install 'recstack[plot]').")
        return None
    return trials_figure(rows, metric, direction)


__all__ = ["OPTUNA_MISSING", "STUDY_NAME", "SearchParam", "TrialReport", "TuneResult", "default_out", "search_space",
           "study_rows", "table", "trial_value", "trials_csv", "tune", "untuned", "validation_key", "write_outputs"]
