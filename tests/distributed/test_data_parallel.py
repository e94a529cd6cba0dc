"""Two gloo processes train exactly like one process with the same global batch."""

from __future__ import annotations

import socket

import pytest
import torch

from recstack.core import distributed
from recstack.core.columns import Columns

from . import worker


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def two_process_results(tmp_path_factory):
    if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
        pytest.skip("this torch build has no gloo backend")
    out = tmp_path_factory.mktemp("ddp")
    torch.multiprocessing.spawn(worker.main, args=(2, _free_port(), str(out)), nprocs=2, join=True)
    return [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(2)]


@pytest.mark.parametrize("setting", worker.SETTING_NAMES)
def test_two_ranks_match_one_process(setting, two_process_results, one_thread):
    single = worker.train_all()[setting]
    for rank_results in two_process_results:
        ranked = rank_results[setting]
        assert ranked["history"].keys() == single["history"].keys()
        for key, values in single["history"].items():     # losses, train and validation metrics per epoch
            assert ranked["history"][key] == pytest.approx(values, rel=1e-5, abs=1e-6), key
        assert ranked["evaluate"] == pytest.approx(single["evaluate"], rel=1e-5, abs=1e-6)
        for name, weight in single["weights"].items():
            torch.testing.assert_close(ranked["weights"][name], weight, rtol=1e-4, atol=1e-6)


def test_sharded_source_splits_each_global_batch_in_rank_order():
    data = Columns({"x": torch.arange(10)})
    shards = [list(distributed.ShardedSource(data, r, 3).epoch_batches(4, shuffle=True, seed=1, epoch=2))
              for r in range(3)]
    whole = list(data.epoch_batches(4, shuffle=True, seed=1, epoch=2))
    for b, batch in enumerate(whole):
        torch.testing.assert_close(torch.cat([shards[r][b]["x"] for r in range(3)]), batch["x"])
    assert [len(s[-1]["x"]) for s in shards] == [1, 1, 0]   # a short last batch: ceil(2 / 3) rows each
