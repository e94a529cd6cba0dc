"""Lazy pyarrow import: ``import recstack.streaming`` works without it, using it says what to install."""

from __future__ import annotations

from types import ModuleType


def pyarrow() -> ModuleType:
    """The ``pyarrow`` module, or ImportError naming the extra that provides it."""
    try:
        import pyarrow as pa
        import pyarrow.compute  # noqa: F401 - submodules used through ``pa``
        import pyarrow.dataset  # noqa: F401
        import pyarrow.parquet  # noqa: F401
    except ImportError as exc:  # pragma: no cover - the dev environment has pyarrow
        raise ImportError(
            "recstack.streaming needs pyarrow (>= 14): pip install 'recstack[parquet]'"
        ) from exc
    return pa
