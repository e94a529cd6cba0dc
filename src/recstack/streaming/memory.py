"""Resident-set-size readings for memory budgets (Linux first; other platforms best effort)."""

from __future__ import annotations

import os
import resource
import sys

__all__ = ["current_rss_bytes", "peak_rss_bytes", "ru_maxrss_bytes"]


def _status_kib(field: str) -> int | None:
    """A ``kB`` field of ``/proc/self/status`` in bytes, or None where there is no /proc."""
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def peak_rss_bytes() -> int:
    """This process's peak resident set size so far.

    Linux: ``VmHWM`` of ``/proc/self/status``, the high-water mark of this
    process image. Not ``getrusage().ru_maxrss``: across ``exec`` Linux keeps
    the maximum of the image it replaced, so in a child started by
    ``subprocess`` ru_maxrss can report the *parent's* RSS (the pre-exec
    fork/vfork shares or copies it); see :func:`ru_maxrss_bytes`. Elsewhere:
    ru_maxrss (KiB on Linux, bytes on macOS).
    """
    peak = _status_kib("VmHWM")
    return peak if peak is not None else ru_maxrss_bytes()


def ru_maxrss_bytes() -> int:
    """``getrusage(RUSAGE_SELF).ru_maxrss`` in bytes (KiB on Linux, bytes on macOS); includes a pre-exec image."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def current_rss_bytes() -> int:
    """This process's resident set size now (``/proc/self/statm``); the peak where /proc is missing."""
    try:
        with open("/proc/self/statm") as handle:
            resident_pages = int(handle.read().split()[1])
        return resident_pages * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return peak_rss_bytes()
