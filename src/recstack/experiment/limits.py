"""Bounds on the sizes a config may ask for, and on the memory a model may need.

Two checks stop a run before it allocates without bound:

* **Config values** (:func:`bound`), checked when the config is parsed, before any data is
  read: widths, bucket counts, negatives, text lengths, threads. A value past its bound is a
  typo (``embedding_dim: 1000000000``), not a setting: the bound is far above any published
  model and far below what would exhaust a machine.
* **Model memory** (:func:`check_memory`), checked after the data is read (the number of ids
  is known only then) and before the model is built: the kind's estimate of its parameters,
  gradients and optimizer state must fit in this machine's memory. This also covers a run
  folder whose ``preprocessing.json`` claims more ids than any data could have.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from ..core.errors import ConfigError

#: Embedding widths and hidden-layer widths (published recommenders use 16-1024).
MAX_WIDTH = 65_536
#: Timestamp buckets of a time feature (the TFRS deep-retrieval tutorial uses 1,000).
MAX_TIME_BUCKETS = 1_000_000
#: Sampled or hard negatives per batch (each adds a logit per query: batch x negatives floats).
MAX_NEGATIVES = 65_536
#: Tokens kept per text (item titles use 10-50; each item stores this many token ids).
MAX_TEXT_LENGTH = 4_096
#: Items of a history a sequential model reads (SASRec uses 50-200; attention costs length^2 per row).
MAX_SEQUENCE_LENGTH = 4_096
#: CPU threads of a run (more threads than cores only make them wait on each other).
MAX_THREADS = 1_024
#: The largest cut-off K of the top-K metrics (a larger K ranks the whole catalogue anyway).
MAX_K = 1_000_000
#: Memory assumed when the machine's cannot be read (os.sysconf is missing on Windows).
FALLBACK_MEMORY_BYTES = 1 << 40


def bound(key: str, value: int, low: int, high: int, why: str) -> str | None:
    """The problem with ``value`` at ``key`` when outside [low, high] (``why`` says what the bound
    protects), else None."""
    if low <= value <= high:
        return None
    if value < low:
        return f"{key}: must be >= {low:,}, got {value:,}"
    return f"{key}: must be at most {high:,} ({why}), got {value:,}"


def width_problems(key: str, values: list[int]) -> list[str]:
    """Problems with a list of layer widths (each 1 .. MAX_WIDTH)."""
    out = []
    for i, value in enumerate(values):
        problem = bound(f"{key}[{i}]", value, 1, MAX_WIDTH, WIDTH_WHY)
        if problem:
            out.append(problem)
    return out


WIDTH_WHY = "published recommenders use 16-1,024; a typo such as 10^9 would try to allocate terabytes"


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes a model needs (parameters, gradients, optimizer state, dense buffers) and what they are."""

    bytes: int
    what: str


def machine_memory() -> int:
    """Physical memory of this machine in bytes (:data:`FALLBACK_MEMORY_BYTES` when unknown)."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, OSError, ValueError):
        return FALLBACK_MEMORY_BYTES


def check_memory(kind: str, estimate: MemoryEstimate, available: int | None = None) -> None:
    """ConfigError when ``estimate`` exceeds the machine's memory (``available`` bytes)."""
    available = machine_memory() if available is None else available
    if estimate.bytes > available:
        raise ConfigError(f"model kind {kind!r} would need about {human_bytes(estimate.bytes)} of memory "
                          f"({estimate.what}), more than this machine's {human_bytes(available)}; use smaller "
                          "model sizes or fewer features, or check the data's id columns.")


def human_bytes(n: float) -> str:
    """1536 -> '1.5 KiB'."""
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:,.0f} {unit}" if unit == "bytes" else f"{n:,.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


__all__ = ["FALLBACK_MEMORY_BYTES", "MAX_K", "MAX_NEGATIVES", "MAX_SEQUENCE_LENGTH", "MAX_TEXT_LENGTH", "MAX_THREADS",
           "MAX_TIME_BUCKETS", "MAX_WIDTH", "MemoryEstimate", "WIDTH_WHY", "bound", "check_memory", "human_bytes",
           "machine_memory", "width_problems"]
