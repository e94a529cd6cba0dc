"""Run folders for the report tests: trained once per session on synthetic MovieLens files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from recstack.cli.main import main
from synthetic_movielens import write_synthetic_ml100k

#: (folder name, shipped config, overrides): a trained retrieval run, the two closed forms the
#: demo runs, and a next-item run, each as small as the synthetic data allows.
RUNS = {
    "retrieval": ("basic-retrieval", ["training.epochs=3", "training.batch_size=256"]),
    "popularity": ("popularity", []),
    "ease": ("ease", []),
    "sasrec": ("sasrec", ["training.epochs=2", "model.max_length=8", "model.embedding_dim=8",
                          "evaluation.next_item.sampled_negatives=20"]),
}


def train(name: str, folder: Path, data: Path, extra: list[str] = ()) -> Path:
    config, overrides = RUNS[name]
    previous = os.environ.get("RECSTACK_DATA_DIR")
    os.environ["RECSTACK_DATA_DIR"] = str(data)
    try:
        args = ["train", config, "--run-dir", str(folder), "--progress", "quiet"]
        for item in [*overrides, *extra]:
            args += ["--set", item]
        assert main(args) == 0
    finally:
        if previous is None:
            os.environ.pop("RECSTACK_DATA_DIR", None)
        else:
            os.environ["RECSTACK_DATA_DIR"] = previous
    return folder


@pytest.fixture(scope="session")
def report_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The four runs of :data:`RUNS` (their report.html written by recstack train)."""
    root = tmp_path_factory.mktemp("report-runs")
    data = write_synthetic_ml100k(root / "ml-100k")
    return {name: train(name, root / name, data) for name in RUNS}
