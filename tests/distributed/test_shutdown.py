"""distributed.shutdown: a barrier before leaving the group on success, none while an exception propagates."""

from __future__ import annotations

import pytest

from recstack.core import distributed


@pytest.fixture
def calls(monkeypatch):
    """A joined process group, faked: records barrier / destroy calls."""
    seen: list[str] = []
    monkeypatch.setattr(distributed.dist, "is_available", lambda: True)
    monkeypatch.setattr(distributed.dist, "is_initialized", lambda: True)
    monkeypatch.setattr(distributed.dist, "barrier", lambda: seen.append("barrier"))
    monkeypatch.setattr(distributed.dist, "destroy_process_group", lambda: seen.append("destroy"))
    return seen


def test_after_success_every_rank_waits_for_the_others_before_the_teardown(calls):
    try:
        pass
    finally:
        distributed.shutdown()
    assert calls == ["barrier", "destroy"]


def test_a_failing_rank_leaves_without_waiting(calls):
    with pytest.raises(RuntimeError):
        try:
            raise RuntimeError("training failed on this rank")
        finally:
            distributed.shutdown()
    assert calls == ["destroy"]


def test_explicit_choice_wins(calls):
    distributed.shutdown(synchronize=False)
    distributed.shutdown(synchronize=True)
    assert calls == ["destroy", "barrier", "destroy"]
