"""Run folders: what a training run leaves on disk, written atomically.

Layout of ``RUN/``::

    config.yaml            the full config (defaults included); `train --resume` reads it
    environment.json       Python/library versions, platform, device, command line
    data.json              fingerprint (sha256 + size of every input file), row counts,
                           split sizes, users/items, what was done about duplicates and cold start
    preprocessing.json     fitted vocabularies and feature layers (JSON, no pickle)
    item_labels.json       display text per item id (only with an item text column)
    seen.pt                items each user had before the test split (exclude-seen, recommend)
    histories.pt           the same items per user in time order (next-item protocols, recommend)
    test.pt                the encoded test split (evaluate needs no data files)
    history.csv/.json      per-epoch losses and metrics (rewritten after every epoch)
    checkpoints/epoch-NNNN.pt  model + optimizer state, epoch, history, torch RNG state
    model.pt               final weights (state_dict; with training.early_stopping.restore_best,
                           those of the best validation)
    best.pt                the best validation's weights so far (training.early_stopping)
    metrics.json           final test metrics per evaluation protocol
    plots/*.png            one figure per metric family per epoch, test metrics as bars, the long
                           tail (with matplotlib; recstack.experiment.plots)
    report.html            the self-contained report (recstack.experiment.report; output.report)
    mlflow.json            the MLflow run of this run (with tracking.mlflow: true)
    tensorboard/           event files (with `output.tensorboard: true` and tensorboard)
    status.json            {"state": "running" | "completed" | "failed", "epoch": ...}

Every ``.pt`` file holds only tensors and plain containers: it loads with
``recstack.core.io.load_tensors`` (weights-only: never unpickles objects).
"""

from __future__ import annotations

import io
import json
import os
import platform
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..core.io import atomic_write_bytes, atomic_write_json, atomic_write_text, load_tensors, sha256_file
from ..core.errors import ConfigError, DataError, UnsafeFileError
from ..core.exclusions import Exclusions
from ..core.id_lists import IdLists
from ..training.history import History

CHECKPOINT_FORMAT = "recstack.checkpoint"
CHECKPOINT_KEYS = ("epoch", "model", "optimizer", "history", "torch_rng_state")
_CHECKPOINT_RE = re.compile(r"^epoch-(\d+)\.pt$")


@dataclass
class RunDir:
    """Paths of one run folder."""

    root: Path

    def __post_init__(self) -> None:
        self.root = Path(self.root)

    config = property(lambda self: self.root / "config.yaml")
    environment = property(lambda self: self.root / "environment.json")
    data = property(lambda self: self.root / "data.json")
    preprocessing = property(lambda self: self.root / "preprocessing.json")
    item_labels = property(lambda self: self.root / "item_labels.json")
    seen = property(lambda self: self.root / "seen.pt")
    histories = property(lambda self: self.root / "histories.pt")
    best = property(lambda self: self.root / "best.pt")
    test = property(lambda self: self.root / "test.pt")
    history_csv = property(lambda self: self.root / "history.csv")
    history_json = property(lambda self: self.root / "history.json")
    checkpoints = property(lambda self: self.root / "checkpoints")
    model = property(lambda self: self.root / "model.pt")
    metrics = property(lambda self: self.root / "metrics.json")
    plots = property(lambda self: self.root / "plots")
    tensorboard = property(lambda self: self.root / "tensorboard")
    status = property(lambda self: self.root / "status.json")

    # -- lifecycle -----------------------------------------------------------------------------
    @classmethod
    def create(cls, root: Path) -> "RunDir":
        """A new, empty run folder (an existing non-empty one is refused)."""
        root = Path(root)
        if root.exists() and any(root.iterdir()):
            raise ConfigError(f"run folder {root} already exists and is not empty; pass another --run-dir, "
                              f"or continue it with: recstack train --resume {root}")
        root.mkdir(parents=True, exist_ok=True)
        return cls(root)

    @classmethod
    def open(cls, root: Path, need: tuple[str, ...] = ("config",)) -> "RunDir":
        """An existing run folder holding the files named in ``need`` (attribute names)."""
        run = cls(Path(root))
        if run.root.is_file():
            raise DataError(f"{run.root} is a file, not a run folder (a folder made by recstack train).")
        if not run.root.is_dir():
            raise DataError(f"run folder {run.root} does not exist.")
        missing = [getattr(run, n).name for n in need if not getattr(run, n).exists()]
        if missing:
            hint = ("; the run has not finished: continue it with recstack train --resume "
                    f"{run.root}" if "model" in need and run.config.exists() else "")
            raise DataError(f"{run.root} is not a complete recstack run folder: missing {', '.join(missing)}{hint}.")
        return run

    def write_status(self, state: str, **extra: Any) -> None:
        atomic_write_json(self.status, {"state": state, "updated": _now(), **extra})

    def read_status(self) -> dict[str, Any]:
        """status.json ({} when missing); a file that is not a JSON object is a DataError."""
        if not self.status.exists():
            return {}
        return self.read_json(self.status, expect=dict)

    def read_json(self, path: Path, expect: type | None = None) -> Any:
        """A JSON file of the run; unreadable, not JSON, or (``expect`` given) not that type: a DataError."""
        try:
            value = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise DataError(f"{path} does not exist; the run folder is incomplete.") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DataError(f"cannot read {path}: {exc}") from None
        if expect is not None and not isinstance(value, expect):
            kind = {dict: "a JSON object", list: "a JSON list"}.get(expect, expect.__name__)
            raise DataError(f"{path} is not {kind} as recstack writes it (found {type(value).__name__}); the run "
                            "folder is damaged.")
        return value

    # -- tensors ---------------------------------------------------------------------------------
    @staticmethod
    def save_tensors(path: Path, obj: Any) -> None:
        buffer = io.BytesIO()
        torch.save(obj, buffer)
        atomic_write_bytes(path, buffer.getvalue())

    @staticmethod
    def load_tensors(path: Path) -> Any:
        try:
            return load_tensors(path)
        except FileNotFoundError:
            raise DataError(f"{path} does not exist.") from None
        except (UnsafeFileError, IsADirectoryError, PermissionError) as exc:  # truncated, foreign, or more than tensors
            raise DataError(f"{path} is not a readable recstack tensor file (truncated, damaged or not written "
                            f"by recstack; only tensors are loaded, never pickled objects): {exc}") from None

    def load_tensor_dict(self, path: Path, keys: tuple[str, ...] = ()) -> dict[str, Any]:
        """A tensor file holding a dict with (at least) ``keys``; anything else is a DataError."""
        value = self.load_tensors(path)
        missing = [k for k in keys if not isinstance(value, dict) or k not in value]
        if not isinstance(value, dict) or missing:
            found = f"keys {sorted(map(str, value))[:8]}" if isinstance(value, dict) else type(value).__name__
            raise DataError(f"{path} does not hold what recstack writes there (expected {', '.join(keys) or 'a dict'}"
                            f"; found {found}); the run folder is damaged.")
        return value

    def save_seen(self, seen: Exclusions) -> None:
        self.save_tensors(self.seen, seen.state_dict())

    def load_seen(self) -> Exclusions:
        state = self.load_tensor_dict(self.seen, ("indptr", "indices"))
        try:
            return Exclusions(state["indptr"], state["indices"])
        except (TypeError, ValueError, IndexError, RuntimeError) as exc:
            raise DataError(f"{self.seen} is not a valid seen-items file ({exc}); the run folder is damaged.") from None

    def save_histories(self, histories: IdLists) -> None:
        self.save_tensors(self.histories, histories.state_dict())

    def load_histories(self, num_users: int, num_items: int) -> IdLists | None:
        """histories.pt (None when the folder has none: made before recstack wrote it)."""
        if not self.histories.exists():
            return None
        state = self.load_tensor_dict(self.histories, ("indptr", "indices"))
        try:
            lists = IdLists.from_state_dict(state)
        except (TypeError, ValueError, IndexError, RuntimeError, DataError) as exc:
            raise DataError(f"{self.histories} is not a valid histories file ({exc}); the run folder is "
                            "damaged.") from None
        ids = lists.ids
        if lists.num_rows > num_users or (len(ids) and (ids.min() < 1 or ids.max() >= num_items)):
            raise DataError(f"{self.histories} lists users or items outside the run's vocabularies ({num_users} "
                            f"users, {num_items} items); the run folder is damaged.")
        return lists

    # -- checkpoints ----------------------------------------------------------------------------------
    def checkpoint_path(self, epoch: int) -> Path:
        return self.checkpoints / f"epoch-{epoch:04d}.pt"

    def save_checkpoint(self, epoch: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None,
                        history: History, keep: int) -> Path:
        """Write ``checkpoints/epoch-NNNN.pt`` atomically, then drop all but the ``keep`` newest."""
        state = {"format": CHECKPOINT_FORMAT, "version": 1, "epoch": int(epoch), "model": model.state_dict(),
                 "optimizer": optimizer.state_dict() if optimizer is not None else {},
                 "history": history.to_dict(), "torch_rng_state": torch.get_rng_state()}
        path = self.checkpoint_path(epoch)
        self.save_tensors(path, state)
        for old in self.list_checkpoints()[keep:]:
            old[1].unlink(missing_ok=True)
        return path

    def list_checkpoints(self) -> list[tuple[int, Path]]:
        """(epoch, path), newest first."""
        if not self.checkpoints.is_dir():
            return []
        found = [(int(m.group(1)), p) for p in self.checkpoints.iterdir() if (m := _CHECKPOINT_RE.match(p.name))]
        return sorted(found, reverse=True)

    def latest_checkpoint(self) -> dict[str, Any] | None:
        """The newest checkpoint that loads (older ones are tried if the newest is unreadable)."""
        for _, path in self.list_checkpoints():
            try:
                state = self.load_tensors(path)
            except DataError:
                continue
            if isinstance(state, dict) and state.get("format") == CHECKPOINT_FORMAT and \
                    all(k in state for k in CHECKPOINT_KEYS) and isinstance(state["epoch"], int):
                state["path"] = str(path)
                return state
        return None

    # -- history, plots --------------------------------------------------------------------------------
    def save_history(self, history: History) -> None:
        history.save_csv(self.history_csv)
        history.save_json(self.history_json)


def environment_info(device: str, argv: list[str] | None = None) -> dict[str, Any]:
    """Versions and platform, for environment.json."""
    import numpy
    import pandas

    from ..core.version import __version__

    versions: dict[str, str | None] = {"recstack": __version__, "python": platform.python_version(),
                                       "torch": torch.__version__, "numpy": numpy.__version__,
                                       "pandas": pandas.__version__}
    for name in ("yaml", "pyarrow", "matplotlib", "tqdm"):
        try:
            versions[name] = __import__(name).__version__
        except Exception:  # not installed, or no __version__
            versions[name] = None
    return {"created": _now(), "versions": versions, "platform": platform.platform(),
            "machine": platform.machine(), "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "device": device, "cuda_available": torch.cuda.is_available(),
            "command": argv if argv is not None else sys.argv, "cwd": os.getcwd()}


def fingerprint(files: list[Path]) -> list[dict[str, Any]]:
    """sha256 and size of every input file."""
    return [{"path": str(f), "bytes": f.stat().st_size, "sha256": sha256_file(f)} for f in files]


def write_text(path: Path, text: str) -> None:
    atomic_write_text(path, text)


def write_json(path: Path, obj: Any) -> None:
    atomic_write_json(path, obj)


def default_run_dir(runs_dir: str, name: str) -> Path:
    """``runs_dir/<name>-<YYYYmmdd-HHMMSS>`` (a numeric suffix if that exists already)."""
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") or "run"
    base = Path(runs_dir) / f"{safe}-{time.strftime('%Y%m%d-%H%M%S')}"
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    return path


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


__all__ = ["RunDir", "default_run_dir", "environment_info", "fingerprint", "write_json", "write_text"]
