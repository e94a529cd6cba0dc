"""Run folders under failure: the status is always accurate, a resume compares data by content,
and a damaged run folder is a one-line error naming the file, never a traceback."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from recstack.cli.main import main
from recstack.core.errors import ConfigError

from .conftest import BASE, make_ratings, merge
from .test_user_errors import one_line_error


def _train(config: Path, run: Path, capsys) -> None:
    assert main(["train", str(config), "--run-dir", str(run), "--progress", "quiet"]) == 0, capsys.readouterr().err
    capsys.readouterr()


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """One trained run (module-wide); tests copy it before damaging it."""
    root = tmp_path_factory.mktemp("finished")
    make_ratings().to_csv(root / "ratings.csv", index=False)
    config = merge(BASE, {"output": {"runs_dir": str(root / "runs"), "plots": False}})
    (root / "config.yaml").write_text(yaml.safe_dump(config))
    torch.set_num_threads(1)
    assert main(["train", str(root / "config.yaml"), "--run-dir", str(root / "run"), "--progress", "quiet"]) == 0
    return root / "run"


@pytest.fixture
def run_copy(finished_run, tmp_path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(finished_run, copy)
    return copy


def _states(runs: Path) -> list[str]:
    return [json.loads((d / "status.json").read_text())["state"] for d in sorted(runs.iterdir())]


# -- status.json is always accurate ------------------------------------------------------------------
def _fail_in_prepare(monkeypatch, workdir):
    (workdir / "ratings.csv").write_text("userId,movieId\nu1,m1\n")  # no rating/timestamp columns


def _fail_building_the_model(monkeypatch, workdir):
    def refuse(*args, **kwargs):
        raise ConfigError("model kind 'two_tower' cannot be built here")
    monkeypatch.setattr("recstack.experiment.run.build_model", refuse)


def _fail_for_lack_of_memory(monkeypatch, workdir):
    monkeypatch.setattr("recstack.experiment.limits.machine_memory", lambda: 1024)


def _interrupt_while_evaluating(monkeypatch, workdir):
    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr("recstack.experiment.run.evaluate_run", interrupt)


@pytest.mark.parametrize("fail, code, reason", [
    (_fail_in_prepare, 1, "DataError: ratings.csv: column 'rating' (data.columns.rating) not found"),
    (_fail_building_the_model, 2, "ConfigError: model kind 'two_tower' cannot be built here"),
    (_fail_for_lack_of_memory, 2, "ConfigError: model kind 'two_tower' would need about"),
    (_interrupt_while_evaluating, 130, "interrupted (Ctrl-C)"),
])
def test_a_failure_at_any_stage_marks_the_run_failed_with_the_reason(workdir, write_config, capsys, monkeypatch,
                                                                     fail, code, reason):
    config = write_config()
    fail(monkeypatch, workdir)
    assert main(["train", str(config), "--progress", "quiet"]) == code
    assert "Traceback" not in capsys.readouterr().err
    (run,) = (workdir / "runs").iterdir()
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "failed" and status["error"].startswith(reason)


def test_no_run_folder_is_left_preparing_or_running_after_errors(workdir, write_config, capsys, monkeypatch):
    config = write_config()
    for fail in (_fail_in_prepare, _fail_building_the_model, _fail_for_lack_of_memory, _interrupt_while_evaluating):
        with monkeypatch.context() as patch:
            make_ratings().to_csv(workdir / "ratings.csv", index=False)
            fail(patch, workdir)
            assert main(["train", str(config), "--progress", "quiet"]) != 0
    capsys.readouterr()
    assert _states(workdir / "runs") == ["failed"] * 4


def test_a_model_too_large_for_memory_is_refused_before_it_is_built(workdir, write_config, capsys, monkeypatch):
    built = []

    def build(*args, **kwargs):
        built.append(args)
        raise AssertionError("the builder ran")

    monkeypatch.setattr("recstack.experiment.limits.machine_memory", lambda: 8_000)
    monkeypatch.setattr("recstack.models.feature_tower.FeatureTower.__init__", build)
    line = one_line_error(["train", write_config(), "--progress", "quiet"], capsys, 2)
    # 41 users + 25 items (OOV rows included) x 8 dims x 16 bytes (weights, gradients, 2 optimizer states).
    assert "would need about 8.2 KiB of memory (66 embedding rows (ids and feature values) x embedding_dim 8" in line
    assert "more than this machine's 7.8 KiB" in line and not built


# -- resume compares data by content ----------------------------------------------------------------
def _interrupted_run(workdir: Path, write_config, capsys) -> Path:
    run = workdir / "run"
    _train(write_config({"training": {"epochs": 3}}), run, capsys)
    for name in ("model.pt", "metrics.json", "checkpoints/epoch-0003.pt"):
        (run / name).unlink()
    (run / "status.json").write_text(json.dumps({"state": "running", "epoch": 2}))
    return run


def test_resume_accepts_byte_identical_data_at_a_new_path(workdir, write_config, capsys):
    run = _interrupted_run(workdir, write_config, capsys)
    moved = workdir / "elsewhere" / "copy.csv"
    moved.parent.mkdir()
    shutil.copy(workdir / "ratings.csv", moved)
    (workdir / "ratings.csv").unlink()
    config = (run / "config.yaml").read_text()
    (run / "config.yaml").write_text(config.replace(str(workdir / "ratings.csv"), str(moved)))
    assert main(["train", "--resume", str(run), "--progress", "quiet"]) == 0
    err = capsys.readouterr().err
    assert f"the data moved: {moved} has the contents recorded for {workdir / 'ratings.csv'}" in err
    assert json.loads((run / "status.json").read_text())["state"] == "completed"


def test_resume_refuses_a_changed_file_at_a_new_path(workdir, write_config, capsys):
    run = _interrupted_run(workdir, write_config, capsys)
    moved = workdir / "copy.csv"
    moved.write_text((workdir / "ratings.csv").read_text() + "u0,m23,4.0,1600000999\n")
    config = (run / "config.yaml").read_text()
    (run / "config.yaml").write_text(config.replace(str(workdir / "ratings.csv"), str(moved)))
    line = one_line_error(["train", "--resume", run, "--progress", "quiet"], capsys, 1)
    assert f"{moved} (recorded: {workdir / 'ratings.csv'}) has SHA-256" in line
    assert "their contents are compared, not their paths" in line
    assert json.loads((run / "status.json").read_text())["state"] == "failed"


# -- damaged run folders ----------------------------------------------------------------------------
def _write(name: str, text: str):
    return lambda run: (run / name).write_text(text)


def _save(name: str, obj):
    return lambda run: torch.save(obj, run / name)


def _tower_claiming_ids(run: Path) -> None:
    """A user feature whose hashing layer claims 10^12 ids: an embedding table of 10^12 rows."""
    pre = json.loads((run / "preprocessing.json").read_text())
    pre["user_features"] = {"class": "FeatureSet", "version": 1, "features": [
        {"output": "cat:x", "input": "cat:x", "layer": {"class": "HashingLookup", "num_bins": 10**12, "salt": 0}}]}
    (run / "preprocessing.json").write_text(json.dumps(pre))


@pytest.mark.parametrize("damage, message", [
    (_write("preprocessing.json", "[]"), "preprocessing.json is not a JSON object as recstack writes it"),
    (_write("preprocessing.json", '{"format": "recstack.cli.Preprocessing"}'),
     "preprocessing.json is not a valid recstack preprocessing file (KeyError: 'users')"),
    (_write("preprocessing.json", "{broken"), "cannot read"),
    (_tower_claiming_ids, "cannot be built: model kind 'two_tower' would need about"),
    (_save("model.pt", torch.zeros(3)), "model.pt does not hold what recstack writes there"),
    (_write("model.pt", "not a tensor file"), "model.pt is not a readable recstack tensor file"),
    (_save("model.pt", {"x": torch.zeros(1)}), "model.pt does not match the model its config describes"),
    (_save("seen.pt", {"a": torch.zeros(1)}), "seen.pt does not hold what recstack writes there (expected indptr"),
    (_save("seen.pt", {"indptr": torch.tensor([0, 1]), "indices": torch.tensor([10**6])}),
     "seen.pt lists users or items outside the run's vocabularies"),
    (_write("item_labels.json", '{"a": 1}'), "item_labels.json is not a JSON list"),
    (_write("config.yaml", "[1, 2"), "config.yaml is not valid YAML"),
])
def test_a_damaged_run_folder_is_one_line_naming_the_file(run_copy, capsys, damage, message):
    damage(run_copy)
    code = 2 if "config.yaml" in message else 1
    for command in (["recommend", run_copy, "--user", "u1"], ["evaluate", run_copy]):
        assert message in one_line_error(command, capsys, code)


def test_a_damaged_test_split_is_refused_by_evaluate(run_copy, capsys):
    torch.save({"user": torch.tensor([1]), "item": torch.tensor([10**6]), "query_key": torch.tensor([1])},
               run_copy / "test.pt")
    line = one_line_error(["evaluate", run_copy], capsys, 1)
    assert "test.pt: column 'item' must hold ids in [0, 25)" in line


@pytest.mark.parametrize("damage, message", [
    (_write("status.json", "[]"), "status.json is not a JSON object"),
    (_write("data.json", "{}"), "data.json has no valid input-file fingerprint"),
])
def test_resume_of_a_damaged_run_folder(run_copy, capsys, damage, message):
    (run_copy / "status.json").write_text(json.dumps({"state": "running"}))
    damage(run_copy)
    assert message in one_line_error(["train", "--resume", run_copy, "--progress", "quiet"], capsys, 1)


def test_resume_from_a_checkpoint_that_does_not_match_the_model(run_copy, capsys):
    (run_copy / "status.json").write_text(json.dumps({"state": "running"}))
    for path in (run_copy / "checkpoints").iterdir():
        path.unlink()
    torch.save({"format": "recstack.checkpoint", "version": 1, "epoch": 1, "model": {"x": torch.zeros(1)},
                "optimizer": {}, "history": {}, "torch_rng_state": torch.get_rng_state()},
               run_copy / "checkpoints" / "epoch-0001.pt")
    line = one_line_error(["train", "--resume", run_copy, "--progress", "quiet"], capsys, 1)
    assert "epoch-0001.pt does not match the run's model and optimizer" in line
    assert "delete it to resume from an older checkpoint" in line
