"""What the commands print, in the three ``--progress`` modes.

* ``bar``: progress bars (stderr), notes and results as text (stdout).
* ``quiet``: no progress, no chatter; notes go to stderr, results to stdout.
* ``jsonl``: stdout is only JSON objects, one per line: the training events of
  :class:`recstack.training.progress.JsonlProgress` plus ``note``, ``info`` and
  ``result`` events; nothing else is written to stdout.
"""

from __future__ import annotations

import json
import math
import sys
from typing import IO, Any

from ..training.progress import PROGRESS_MODES, BarProgress, JsonlProgress, Progress


class Reporter:
    def __init__(self, mode: str = "bar", out: IO[str] | None = None, err: IO[str] | None = None):
        if mode not in PROGRESS_MODES:
            raise ValueError(f"mode must be one of {PROGRESS_MODES}; got {mode!r}")
        self.mode = mode
        self._out, self._err = out, err

    @property
    def out(self) -> IO[str]:
        return self._out or sys.stdout

    @property
    def err(self) -> IO[str]:
        return self._err or sys.stderr

    def progress(self) -> Progress:
        """The training progress display for this mode."""
        if self.mode == "bar":
            return BarProgress(self._out)
        if self.mode == "jsonl":
            return JsonlProgress(self._out)
        return Progress()

    def event(self, name: str, **fields: Any) -> None:
        """A JSON-lines event (only in jsonl mode)."""
        if self.mode == "jsonl":
            print(json.dumps({"event": name, **clean_json(fields)}, ensure_ascii=False), file=self.out, flush=True)

    def note(self, message: str) -> None:
        """Something the user should know about their data or run (duplicates, cold start, skips)."""
        if self.mode == "jsonl":
            self.event("note", message=message)
        elif self.mode == "quiet":
            print(f"note: {message}", file=self.err, flush=True)
        else:
            print(f"note: {message}", file=self.out, flush=True)

    def info(self, message: str, **fields: Any) -> None:
        """Chatter: shown in bar mode, an ``info`` event in jsonl mode, dropped when quiet."""
        if self.mode == "jsonl":
            self.event("info", message=message, **fields)
        elif self.mode == "bar":
            print(message, file=self.out, flush=True)

    def result(self, text: str, data: Any = None) -> None:
        """The command's answer: text in bar/quiet mode, a ``result`` event in jsonl mode."""
        if self.mode == "jsonl":
            self.event("result", data=data if data is not None else text)
        else:
            print(text, file=self.out, flush=True)


def clean_json(value: Any) -> Any:
    """NaN/inf -> None, recursively (JSON has no NaN)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): clean_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean_json(v) for v in value]
    return value
