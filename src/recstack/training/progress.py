"""Progress display for fit/evaluate.

Three modes, picked with ``fit(..., verbose=...)``:

* ``"bar"`` (``verbose=True``): a tqdm bar per epoch on stderr with the live
  loss, metrics and throughput (examples/s), and a one-line summary per epoch
  on stdout. When stderr is not a terminal (a log file, a pipe, CI) there is no
  bar: carriage-return frames would pile up in the log, so instead a plain line
  every ``line_seconds`` (30 s) tells how far a long epoch has got, and the
  summary line per epoch follows as usual.
* ``"quiet"`` (``verbose=False``): nothing.
* ``"jsonl"``: one JSON object per line on stdout for scripts: ``train_begin``,
  ``epoch_end`` (all logs, ``examples_per_second``; NaN as null) and
  ``train_end`` events.

Any object implementing :class:`Progress` can be passed instead of a mode name.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable
from typing import IO, Any

from tqdm.auto import tqdm

PROGRESS_MODES = ("bar", "quiet", "jsonl")
_SHORT = {"examples_per_second": "ex/s", "regularization_loss": "reg_loss"}


def short_name(key: str) -> str:
    """Compact metric names for the bar: 'factorized_top_k/top_100_categorical_accuracy' -> 'top100'."""
    if key.startswith("val_"):
        return "val_" + short_name(key[len("val_"):])
    if key in _SHORT:
        return _SHORT[key]
    tail = key.rsplit("/", 1)[-1]
    if tail.startswith("top_") and tail.endswith("_categorical_accuracy"):
        return "top" + tail[len("top_"):-len("_categorical_accuracy")]
    return tail.replace("root_mean_squared_error", "rmse")


#: Seconds between two plain progress lines when the output is not a terminal.
LINE_SECONDS = 30.0


def is_terminal(stream: IO[str]) -> bool:
    """True when ``stream`` is an interactive terminal (closed or detached streams are not)."""
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


class ProgressBar:
    """A per-epoch progress display on ``stream`` (stderr); silent when ``enabled`` is False.

    On a terminal it is a tqdm bar whose live values refresh at most every
    ``refresh_seconds``, so computing them never dominates short steps. Anywhere else
    it writes one plain line (``Epoch 2/5: 120/500 batch (24%), 41s, loss=...``) each
    time ``line_seconds`` have passed since the start or the previous line, and nothing
    for a step that ends sooner: a log gets lines, never carriage-return frames.

    Args:
        interactive: force the bar (True) or the plain lines (False); by default
            ``is_terminal(stream)``.
    """

    def __init__(self, total: int, description: str, enabled: bool = True,
                 refresh_seconds: float = 0.5, unit: str = "batch", stream: IO[str] | None = None,
                 interactive: bool | None = None, line_seconds: float = LINE_SECONDS):
        self.enabled = enabled
        self.refresh_seconds = refresh_seconds
        self.line_seconds = line_seconds
        self.total, self.description, self.unit = total, description, unit
        self.stream = stream or sys.stderr
        self.interactive = is_terminal(self.stream) if interactive is None else interactive
        self.n = 0
        self._start = self._last = time.perf_counter()
        self._bar = None
        if enabled and self.interactive:
            self._last = 0.0
            self._bar = tqdm(total=total, desc=description, unit=unit, leave=True,
                             file=self.stream, dynamic_ncols=True)

    def update(self, n: int, values_fn: Callable[[], dict[str, float]]) -> None:
        """Advance by ``n``; ``values_fn()`` returns the live metrics (called lazily)."""
        if not self.enabled:
            return
        self.n += n
        now = time.perf_counter()
        if self._bar is None:
            if now - self._last >= self.line_seconds and self.n < self.total:
                self._last = now
                print(self._line(now, values_fn()), file=self.stream, flush=True)
            return
        self._bar.update(n)
        if now - self._last >= self.refresh_seconds or self.n >= self.total:
            self._last = now
            self._bar.set_postfix(_postfix(values_fn()), refresh=True)

    def close(self, values: dict[str, float] | None = None) -> None:
        if self._bar is None:
            return
        if values is not None:
            self._bar.set_postfix(_postfix(values), refresh=True)
        self._bar.close()

    def _line(self, now: float, values: dict[str, float]) -> str:
        done = f"{self.n}/{self.total} {self.unit}" + (f" ({100 * self.n / self.total:.0f}%)" if self.total else "")
        live = " ".join(f"{k}={v}" for k, v in _postfix(values).items())
        return f"{self.description}: {done}, {now - self._start:.0f}s" + (f", {live}" if live else "")


class Progress:
    """What the fit loop reports; every hook is a no-op (the "quiet" mode).

    Call order: ``train_begin``, then per epoch ``epoch_begin``, ``batch_end``
    after every step, ``epoch_end`` (after validation, with the epoch's full
    logs), and finally ``train_end``.
    """

    def train_begin(self, epochs: int, initial_epoch: int, num_rows: int, batch_size: int) -> None: ...

    def epoch_begin(self, epoch: int, epochs: int, num_batches: int) -> None: ...

    def batch_end(self, rows: int, values_fn: Callable[[], dict[str, float]]) -> None: ...

    def epoch_end(self, epoch: int, epochs: int, logs: dict[str, float]) -> None: ...

    def train_end(self, logs: dict[str, float]) -> None: ...


class _Throughput:
    """Examples per second since the start of the epoch."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.rows = 0

    def add(self, rows: int) -> None:
        self.rows += rows

    def rate(self) -> float:
        elapsed = time.perf_counter() - self.start
        return self.rows / elapsed if elapsed > 0 else math.nan


class BarProgress(Progress):
    """A summary line per epoch (``stream``, stdout), and during the epoch a live display on ``err``.

    On ``err`` (stderr): a tqdm bar with the live loss/metrics and examples/s when it is a
    terminal, else a plain line every ``line_seconds`` (see :class:`ProgressBar`).
    """

    def __init__(self, stream: IO[str] | None = None, err: IO[str] | None = None,
                 line_seconds: float = LINE_SECONDS):
        self.stream = stream
        self.err = err
        self.line_seconds = line_seconds
        self._bar: ProgressBar | None = None
        self._speed = _Throughput()

    def epoch_begin(self, epoch: int, epochs: int, num_batches: int) -> None:
        self._bar = ProgressBar(num_batches, f"Epoch {epoch}/{epochs}", enabled=True, unit="batch",
                                stream=self.err, line_seconds=self.line_seconds)
        self._speed = _Throughput()

    def batch_end(self, rows: int, values_fn: Callable[[], dict[str, float]]) -> None:
        self._speed.add(rows)
        if self._bar is not None:
            self._bar.update(1, lambda: {**values_fn(), "examples_per_second": self._speed.rate()})

    def epoch_end(self, epoch: int, epochs: int, logs: dict[str, float]) -> None:
        if self._bar is not None:
            self._bar.close({k: v for k, v in logs.items() if not k.startswith("val_") and k != "epoch_seconds"})
            self._bar = None
        print(summary_line(epoch, epochs, logs), file=self.stream or sys.stdout, flush=True)


class EpochsProgress(Progress):
    """One display over all the epochs on ``err`` (stderr), no per-epoch lines: a tqdm bar of
    epochs with the last epoch's loss on a terminal, else a plain line every ``line_seconds``.
    For training that is a part of something larger (an ensemble's members), whose own output
    says when each part starts and ends."""

    def __init__(self, description: str, err: IO[str] | None = None, line_seconds: float = LINE_SECONDS):
        self.description, self.err, self.line_seconds = description, err, line_seconds
        self._bar: ProgressBar | None = None

    def train_begin(self, epochs: int, initial_epoch: int, num_rows: int, batch_size: int) -> None:
        self._bar = ProgressBar(max(epochs - initial_epoch, 0), self.description, enabled=True, unit="epoch",
                                stream=self.err, line_seconds=self.line_seconds)

    def epoch_end(self, epoch: int, epochs: int, logs: dict[str, float]) -> None:
        if self._bar is not None:
            shown = {k: v for k, v in logs.items() if k in ("loss", "total_loss")}
            self._bar.update(1, lambda: shown)

    def train_end(self, logs: dict[str, float]) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


class JsonlProgress(Progress):
    """One JSON object per line (stdout by default): train_begin, epoch_end, train_end."""

    def __init__(self, stream: IO[str] | None = None):
        self.stream = stream

    def _emit(self, event: str, **fields: Any) -> None:
        print(json.dumps({"event": event, **{k: _json_value(v) for k, v in fields.items()}}),
              file=self.stream or sys.stdout, flush=True)

    def train_begin(self, epochs: int, initial_epoch: int, num_rows: int, batch_size: int) -> None:
        self._emit("train_begin", epochs=epochs, initial_epoch=initial_epoch, num_rows=num_rows,
                   batch_size=batch_size)

    def epoch_end(self, epoch: int, epochs: int, logs: dict[str, float]) -> None:
        self._emit("epoch_end", epoch=epoch, epochs=epochs, logs={k: _json_value(v) for k, v in logs.items()})

    def train_end(self, logs: dict[str, float]) -> None:
        self._emit("train_end", logs={k: _json_value(v) for k, v in logs.items()})


def make_progress(verbose: "bool | str | Progress") -> Progress:
    """``True``/"bar" -> BarProgress, ``False``/"quiet" -> Progress (silent), "jsonl" -> JsonlProgress."""
    if isinstance(verbose, Progress):
        return verbose
    if verbose is True or verbose == "bar":
        return BarProgress()
    if verbose is False or verbose is None or verbose == "quiet":
        return Progress()
    if verbose == "jsonl":
        return JsonlProgress()
    raise ValueError(f"verbose must be a bool, one of {PROGRESS_MODES} or a Progress; got {verbose!r}.")


def summary_line(epoch: int, epochs: int, logs: dict[str, float]) -> str:
    """``epoch 3/10 (1.25s, 80,000 ex/s): loss=... top10=... val_top10=...``."""
    parts = [f"{short_name(k)}={_fmt(v)}"
             for k, v in logs.items() if k not in ("epoch_seconds", "examples_per_second")]
    timing = f"{logs.get('epoch_seconds', math.nan):.2f}s"
    if "examples_per_second" in logs:
        timing += f", {logs['examples_per_second']:,.0f} ex/s"
    return f"epoch {epoch}/{epochs} ({timing}): " + " ".join(parts)


def _postfix(values: dict[str, float]) -> dict[str, str]:
    return {short_name(k): (f"{v:,.0f}" if k == "examples_per_second" else _fmt(v)) for k, v in values.items()}


def _fmt(value: float) -> str:
    return f"{value:.4g}"


def _json_value(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
