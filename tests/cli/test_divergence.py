"""A diverged run is an error (exit 1, status failed, last checkpoint named), never a result."""

import json

from recstack.cli.main import main


def run_cli(args, capsys):
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_a_diverging_run_fails_with_its_checkpoint_and_writes_no_metrics(workdir, write_config, capsys):
    # A huge finite learning rate (config validation already refuses .inf) overflows the
    # weights within the first epochs.
    path = write_config({"optimizer": {"name": "sgd", "learning_rate": 1e30}, "training": {"epochs": 4}})
    run = workdir / "run"
    code, out, err = run_cli(["train", path, "--run-dir", run, "--progress", "quiet"], capsys)
    assert code == 1, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err and any("diverged" in line for line in lines)
    assert "--set optimizer.learning_rate=1e+29" in err and "training.clip_grad_norm" in err
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "failed" and status["diverged"]["quantity"] in {"loss", "gradient", "parameters"}
    assert not (run / "metrics.json").exists() and not (run / "model.pt").exists()
    if status["last_checkpoint"] is not None:     # a checkpoint before the divergence stays, and is named
        assert (run / "checkpoints").exists() and status["last_checkpoint"]["path"] in err
    # resuming would diverge again: refused with a usage error naming what to change
    code, _, err = run_cli(["train", "--resume", run, "--progress", "quiet"], capsys)
    assert code == 2 and "diverged" in err and "learning_rate" in err


def test_clip_grad_norm_is_validated_and_reaches_fit(workdir, write_config, capsys):
    code, _, err = run_cli(["train", write_config({"training": {"clip_grad_norm": -1}}), "--progress", "quiet"],
                           capsys)
    assert code == 2 and "training.clip_grad_norm" in err
    from recstack.experiment.building import fit_options
    from recstack.experiment.config_files import load_config
    config = load_config(write_config({"training": {"clip_grad_norm": 0.5}}, name="clip.yaml"))
    assert fit_options(config)["clip_grad_norm"] == 0.5
    assert fit_options(load_config(write_config(name="plain.yaml")))["clip_grad_norm"] is None
