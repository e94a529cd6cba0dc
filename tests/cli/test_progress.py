"""Progress modes of the fit loop: bar (live bar + summary line per epoch), quiet, jsonl."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch

import recstack
from recstack import Columns
from recstack.layers import Embedding
from recstack.metrics import FactorizedTopK
from recstack.tasks import Retrieval
from recstack.training.progress import BarProgress, EpochsProgress, JsonlProgress, make_progress, summary_line


class Tiny(recstack.Model):
    def __init__(self):
        super().__init__()
        self.user, self.item = Embedding(10, 4), Embedding(8, 4)
        ids = torch.arange(8)
        self.task = Retrieval(metrics=FactorizedTopK(recstack.TowerCandidates(self.item, ids), ids, ks=(1, 5)))

    def compute_loss(self, batch, training=False):
        return self.task(self.user(batch["u"]), self.item(batch["i"]), candidate_ids=batch["i"],
                         compute_metrics=not training)


def data(n=100):
    rng = np.random.default_rng(0)
    return Columns({"u": rng.integers(0, 10, n), "i": rng.integers(0, 8, n)})


def fit(verbose, epochs=2, **kwargs):
    torch.manual_seed(0)
    return Tiny().fit(data(), epochs=epochs, batch_size=32, optimizer=lambda p: torch.optim.SGD(p, lr=0.1),
                      seed=1, verbose=verbose, **kwargs)


def test_jsonl_events_and_throughput(capsys):
    history = fit("jsonl", validation_data=data(40))
    lines = capsys.readouterr().out.splitlines()
    events = [json.loads(line) for line in lines]
    assert [e["event"] for e in events] == ["train_begin", "epoch_end", "epoch_end", "train_end"]
    assert events[0] == {"event": "train_begin", "epochs": 2, "initial_epoch": 0, "num_rows": 100, "batch_size": 32}
    logs = events[1]["logs"]
    assert logs["loss"] == pytest.approx(history.history["loss"][0])
    assert logs["examples_per_second"] == pytest.approx(100 / logs["epoch_seconds"], rel=1e-6)
    assert "val_factorized_top_k/top_5_categorical_accuracy" in logs


def test_quiet_prints_nothing_and_bar_prints_a_summary_every_epoch(capsys):
    fit("quiet")
    fit(False)
    assert capsys.readouterr() == ("", "")
    fit("bar")   # no validation data: a summary line per epoch all the same
    captured = capsys.readouterr()
    summaries = [line for line in captured.out.splitlines() if line.startswith("epoch ")]
    assert len(summaries) == 2 and "ex/s): loss=" in summaries[0]


def test_not_a_terminal_gets_one_line_per_epoch_and_no_carriage_returns(capsys):
    """Output to a log (capsys: neither stream is a terminal): no bar frames, a line per epoch."""
    fit("bar", epochs=3, validation_data=data(40))
    captured = capsys.readouterr()
    assert "\r" not in captured.out + captured.err
    assert captured.err == ""            # short epochs: nothing but the summary lines
    assert [line.split(" (")[0] for line in captured.out.splitlines()] == ["epoch 1/3", "epoch 2/3", "epoch 3/3"]
    model = Tiny()
    model.evaluate(data(), batch_size=32, verbose=True)
    assert "\r" not in "".join(capsys.readouterr())


def test_not_a_terminal_long_epochs_get_a_plain_line_every_line_seconds():
    out, err = io.StringIO(), io.StringIO()
    fit(BarProgress(out, err, line_seconds=0.0))   # every step is "long": 4 batches, a line for each but the last
    lines = err.getvalue().split("\n")
    assert "\r" not in err.getvalue() and lines[-1] == ""
    assert [line.split(",")[0] for line in lines[:-1]] == [f"Epoch {e}/2: {b}/4 batch ({25 * b}%)"
                                                           for e in (1, 2) for b in (1, 2, 3)]
    assert all("loss=" in line and "ex/s=" in line for line in lines[:-1])
    assert len(out.getvalue().splitlines()) == 2


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_a_terminal_gets_the_live_bar():
    out, err = io.StringIO(), _Terminal()
    fit(BarProgress(out, err))
    frames = err.getvalue()
    assert "\r" in frames and "Epoch 2/2" in frames and "4/4" in frames and "ex/s" in frames
    assert len(out.getvalue().splitlines()) == 2


def test_epochs_progress_is_one_display_over_the_epochs_and_no_epoch_lines(capsys):
    err = io.StringIO()
    fit(EpochsProgress("member 1/2 vae", err, line_seconds=0.0))   # 2 epochs: a plain line after the first
    lines = err.getvalue().splitlines()
    assert len(lines) == 1 and lines[0].startswith("member 1/2 vae: 1/2 epoch (50%)") and "loss=" in lines[0]
    assert capsys.readouterr().out == ""                          # nothing per epoch on stdout
    terminal = _Terminal()
    fit(EpochsProgress("member 1/2 vae", terminal))
    assert "\r" in terminal.getvalue() and "2/2" in terminal.getvalue() and "epoch" in terminal.getvalue()


def test_resume_with_initial_epoch_reports_only_the_remaining_epochs():
    out = io.StringIO()
    history = fit(JsonlProgress(out), epochs=3, initial_epoch=2)
    events = [json.loads(line) for line in out.getvalue().splitlines()]
    assert history.epochs == [3] and [e["epoch"] for e in events if e["event"] == "epoch_end"] == [3]
    with pytest.raises(recstack.core.errors.ConfigError, match="initial_epoch must be >= 0"):
        fit("quiet", initial_epoch=-1)


def test_make_progress_and_summary_line():
    assert isinstance(make_progress(True), BarProgress) and isinstance(make_progress("jsonl"), JsonlProgress)
    with pytest.raises(ValueError, match="verbose must be"):
        make_progress("loud")
    line = summary_line(3, 10, {"loss": 1.5, "factorized_top_k/top_10_categorical_accuracy": 0.25,
                                "val_factorized_top_k/top_10_categorical_accuracy": 0.2,
                                "epoch_seconds": 2.0, "examples_per_second": 40000.0})
    assert line == "epoch 3/10 (2.00s, 40,000 ex/s): loss=1.5 top10=0.25 val_top10=0.2"
