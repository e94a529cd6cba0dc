"""Kill a real training process with SIGKILL mid-epoch, resume it, and get the uninterrupted result."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from recstack.experiment.run import STALL_ENV
from recstack.cli.main import main

# Adam (stateful optimizer), reshuffled batches, a validation split and a rating head: every
# piece of state a resume has to restore exactly.
RESUMABLE = {"split": {"validation_fraction": 0.1},
             "tasks": {"rating": {"weight": 0.5}},
             "model": {"layer_sizes": [8]},
             "optimizer": {"name": "adam", "learning_rate": 0.02},
             "training": {"epochs": 6, "batch_size": 32, "shuffle": True, "checkpoint_every": 1,
                          "keep_checkpoints": 2}}
TIMING = ("epoch_seconds", "examples_per_second")


def _history(run: Path) -> dict:
    h = json.loads((run / "history.json").read_text())
    return {"epochs": h["epochs"], **{k: v for k, v in h["history"].items() if k not in TIMING}}


def _start_stalled_run(config: Path, run: Path, workdir: Path) -> subprocess.Popen:
    env = {**os.environ, STALL_ENV: "4", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")}
    return subprocess.Popen([sys.executable, "-m", "recstack", "train", str(config), "--run-dir", str(run),
                             "--progress", "quiet"], cwd=workdir, env=env, stdout=subprocess.DEVNULL,
                            stderr=open(workdir / "child.err", "w"))


def _wait_for(path: Path, process: subprocess.Popen, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if process.poll() is not None:
            raise AssertionError(f"the training process exited early ({process.returncode}): "
                                 f"{(path.parents[2] / 'child.err').read_text()[-2000:]}")
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"{path} did not appear within {timeout}s")
        time.sleep(0.05)


def test_sigkill_mid_training_then_resume_equals_uninterrupted_run(workdir, write_config, capsys):
    config = write_config(RESUMABLE)
    straight, killed = workdir / "straight", workdir / "killed"

    process = _start_stalled_run(config, killed, workdir)
    try:
        _wait_for(killed / "checkpoints" / "epoch-0003.pt", process)
        time.sleep(0.3)  # the child is now stalled inside epoch 4 (after its first batch)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL
    assert not (killed / "model.pt").exists() and not (killed / "metrics.json").exists()
    assert json.loads((killed / "status.json").read_text())["state"] == "running"
    assert sorted(p.name for p in (killed / "checkpoints").iterdir()) == ["epoch-0002.pt", "epoch-0003.pt"]
    checkpoint = torch.load(killed / "checkpoints" / "epoch-0003.pt", weights_only=True)
    assert checkpoint["epoch"] == 3 and checkpoint["optimizer"]["state"]  # Adam moments are saved

    killed_copy = workdir / "killed-copy"
    shutil.copytree(killed, killed_copy)
    assert main(["train", "--resume", str(killed), "--progress", "quiet"]) == 0
    assert main(["train", str(config), "--run-dir", str(straight), "--progress", "quiet"]) == 0
    capsys.readouterr()

    a = json.loads((straight / "metrics.json").read_text())
    b = json.loads((killed / "metrics.json").read_text())
    assert a["epochs"] == b["epochs"] == 6
    for protocol in ("all-items", "exclude-seen"):
        assert b["protocols"][protocol] == pytest.approx(a["protocols"][protocol], rel=1e-6, abs=1e-9)
    assert b["test"]["root_mean_squared_error"] == pytest.approx(a["test"]["root_mean_squared_error"], rel=1e-6)
    ha, hb = _history(straight), _history(killed)
    assert ha["epochs"] == hb["epochs"] == [1, 2, 3, 4, 5, 6]
    for key, values in ha.items():
        if key != "epochs":
            assert hb[key] == pytest.approx(values, rel=1e-6, nan_ok=True), key
    wa = torch.load(straight / "model.pt", weights_only=True)
    wb = torch.load(killed / "model.pt", weights_only=True)
    assert wa.keys() == wb.keys()
    for key in wa:
        torch.testing.assert_close(wb[key], wa[key], rtol=1e-6, atol=1e-7)
    assert json.loads((killed / "status.json").read_text())["state"] == "completed"

    # The same checkpoint resumed by two processes (torchrun, gloo) ends with the same result.
    if torch.distributed.is_available() and torch.distributed.is_gloo_available():
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        proc = subprocess.run([sys.executable, "-m", "recstack", "train", "--resume", str(killed_copy),
                               "--nproc", "2", "--progress", "quiet"], capture_output=True, text=True,
                              timeout=300, env=env)
        assert proc.returncode == 0, proc.stderr
        c = json.loads((killed_copy / "metrics.json").read_text())
        assert c["epochs"] == 6 and c["processes"] == 2
        for protocol in ("all-items", "exclude-seen"):
            assert c["protocols"][protocol] == pytest.approx(a["protocols"][protocol], rel=1e-4, abs=1e-6)


def test_resume_of_a_completed_run_is_a_no_op(workdir, write_config, capsys):
    run = workdir / "run"
    assert main(["train", str(write_config()), "--run-dir", str(run), "--progress", "quiet"]) == 0
    before = (run / "model.pt").read_bytes()
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--progress", "quiet"]) == 0
    assert "already complete; nothing to resume" in capsys.readouterr().err
    assert (run / "model.pt").read_bytes() == before


def test_resume_refuses_changed_data(workdir, write_config, capsys):
    run = workdir / "run"
    assert main(["train", str(write_config({"training": {"epochs": 3}})), "--run-dir", str(run),
                 "--progress", "quiet"]) == 0
    (run / "status.json").write_text(json.dumps({"state": "running"}))  # pretend it was interrupted
    with open(workdir / "ratings.csv", "a") as handle:
        handle.write("u0,m23,4.0,1600000999\n")
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--progress", "quiet"]) == 1
    err = capsys.readouterr().err
    assert "the input data changed since" in err and "ratings.csv has SHA-256" in err and "start a new run" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "failed" and "the input data changed" in status["error"]


def test_resume_of_an_unfinished_run_from_its_last_checkpoint(workdir, write_config, capsys):
    """In-process variant: drop the final checkpoint and outputs, resume, compare with the original."""
    run = workdir / "run"
    config = write_config({**RESUMABLE, "training": {**RESUMABLE["training"], "epochs": 4}})
    assert main(["train", str(config), "--run-dir", str(run), "--progress", "quiet"]) == 0
    original = json.loads((run / "metrics.json").read_text())
    for name in ("model.pt", "metrics.json", "checkpoints/epoch-0004.pt"):
        (run / name).unlink()
    (run / "status.json").write_text(json.dumps({"state": "running"}))
    assert main(["train", "--resume", str(run), "--progress", "quiet"]) == 0
    again = json.loads((run / "metrics.json").read_text())
    assert again["protocols"]["all-items"] == pytest.approx(original["protocols"]["all-items"], rel=1e-6)
