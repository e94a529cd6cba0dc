"""The configs shipped with recstack (by name) and the demo, on synthetic MovieLens files."""

from __future__ import annotations

import json
import sys
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
import yaml

from recstack.cli import demo
from recstack.cli.main import main
from recstack.core.errors import ConfigError
from recstack.experiment.config_files import load_config, shipped_configs
from recstack.experiment.reference import unreported_metrics

from .conftest import make_items, make_ratings

MOVIELENS_CONFIGS = ["basic-retrieval", "deep-retrieval", "multitask", "movielens-best", "popularity", "ease",
                     "ensemble"]
PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


def test_every_shipped_config_is_valid_and_named_after_its_file():
    configs = shipped_configs()
    assert set(MOVIELENS_CONFIGS) | {"autorec", "my-ratings"} <= set(configs)
    for name, shipped in configs.items():
        config = load_config(name)
        assert config.name == name and shipped.file.name == name.replace("-", "_") + ".yaml"
        assert config.description and config.description == shipped.description()
        assert unreported_metrics(config) == []     # every published figure is one its run reports


def test_the_configs_are_package_data_of_the_wheel():
    """pyproject.toml ships recstack/configs/*.yaml, which importlib.resources finds in the package."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    package_data = tomllib.loads(PYPROJECT.read_text())["tool"]["setuptools"]["package-data"]
    assert "configs/*.yaml" in package_data["recstack"]
    folder = resources.files("recstack").joinpath("configs")
    assert {entry.name for entry in folder.iterdir() if entry.name.endswith(".yaml")} == \
        {shipped.file.name for shipped in shipped_configs().values()}


def test_configs_lists_one_line_per_config_and_prints_one(capsys):
    assert main(["configs"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == list(shipped_configs())
    basic = next(line for line in lines if line.startswith("basic-retrieval "))
    assert "TFRS" in basic and "retrieval" in basic
    assert main(["configs", "my_ratings"]) == 0          # underscores work too
    assert yaml.safe_load(capsys.readouterr().out)["name"] == "my-ratings"
    assert main(["configs", "basic-retreival"]) == 2
    assert "did you mean 'basic-retrieval'" in capsys.readouterr().err


def test_a_name_is_a_shipped_config_and_a_path_is_a_file(tmp_path, monkeypatch):
    assert load_config("basic-retrieval").training.batch_size == 8192
    raw = yaml.safe_load(shipped_configs()["basic-retrieval"].text())
    local = tmp_path / "basic-retrieval.yaml"
    local.write_text(yaml.safe_dump({**raw, "training": {"epochs": 1}}))
    assert load_config(local).training.epochs == 1            # a path is read as a file, as always
    with pytest.raises(ConfigError, match="config file .*missing.yml does not exist"):
        load_config(tmp_path / "missing.yml")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "basic-retrieval").write_text("name: x\n")
    with pytest.raises(ConfigError, match="unknown config format ''"):
        load_config("basic-retrieval")                        # an existing file wins over the shipped name


def test_a_shipped_template_reads_its_files_from_the_working_directory(tmp_path, monkeypatch, capsys):
    make_ratings().to_csv(tmp_path / "ratings.csv", index=False)
    make_items().rename(columns={"genre": "genres"}).to_csv(tmp_path / "movies.csv", index=False)
    monkeypatch.chdir(tmp_path)
    assert main(["train", "my-ratings", "--run-dir", "run", "--progress", "quiet", "--set", "training.epochs=1",
                 "--set", "output.plots=false"]) == 0, capsys.readouterr().err
    data = json.loads((tmp_path / "run" / "data.json").read_text())
    assert {Path(f["path"]).name for f in data["files"]} == {"ratings.csv", "movies.csv"}


@pytest.mark.parametrize("name", MOVIELENS_CONFIGS)
def test_recstack_train_runs_each_movielens_config(name, synthetic_ml100k, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RECSTACK_DATA_DIR", str(synthetic_ml100k))
    run = tmp_path / "run"
    code = main(["train", name, "--run-dir", str(run), "--progress", "quiet",
                 "--set", "training.epochs=1", "--set", "training.batch_size=512", "--set", "output.plots=false"])
    assert code == 0, capsys.readouterr().err
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics["protocols"]) == {"all-items", "exclude-seen"}
    # 45 synthetic movies < 100: every positive is within the top 100.
    assert metrics["protocols"]["all-items"]["factorized_top_k/top_100_categorical_accuracy"] == pytest.approx(1.0)


def test_recstack_train_runs_the_autorec_config(synthetic_ml100k, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RECSTACK_DATA_DIR", str(synthetic_ml100k))
    run = tmp_path / "run"
    code = main(["train", "autorec", "--run-dir", str(run), "--progress", "quiet",
                 "--set", "training.epochs=2", "--set", "model.hidden_sizes=[32]", "--set", "output.plots=false"])
    assert code == 0, capsys.readouterr().err
    metrics = json.loads((run / "metrics.json").read_text())
    assert 0 < metrics["test"]["root_mean_squared_error"] < 4
    assert set(metrics["protocols"]) == {"exclude-seen"}
    assert "test/root_mean_squared_error" in capsys.readouterr().out     # beside d2l's figure


def test_multitask_config_reports_rating_rmse(synthetic_ml100k, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RECSTACK_DATA_DIR", str(synthetic_ml100k))
    run = tmp_path / "run"
    assert main(["train", "multitask", "--run-dir", str(run), "--progress", "quiet",
                 "--set", "training.epochs=1", "--set", "training.batch_size=512", "--set", "output.plots=false"]) == 0
    assert "rating RMSE" in capsys.readouterr().out


def test_demo_quick_prints_the_comparison_and_recommendations(synthetic_ml100k, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RECSTACK_DATA_DIR", str(synthetic_ml100k))  # restored after the test
    monkeypatch.chdir(tmp_path)                                     # the configs come from the package
    assert demo.main(["--data-dir", str(synthetic_ml100k), "--runs-dir", str(tmp_path / "runs"),
                      "--progress", "quiet", "--quick"]) == 0
    out = capsys.readouterr().out
    assert "basic retrieval (seed 002)" in out and "best recstack config" in out and "popularity" in out
    assert "recall@10*" in out and "Top 5 new recommendations for user 42" in out
    header = next(line for line in out.splitlines() if line.startswith("model "))
    assert header.split() == ["model", "top-10", "top-100", "recall@10*", "ndcg@10*", "mrr*", "train", "s"]
    folders = [p for p in (tmp_path / "runs").iterdir() if p.is_dir()]
    runs = sorted(p.name.rsplit("-", 2)[0] for p in folders)
    assert runs == ["basic-retrieval", "ease", "ensemble", "movielens-best", "popularity"]
    assert "ensemble (EASE+Mult-VAE+iALS)" in out and "skipped" not in out
    # it ends with the five reports and the comparison page of the five, which it wrote
    order = ["basic-retrieval", "movielens-best", "popularity", "ease", "ensemble"]
    tail = out.rstrip().splitlines()[-6:]
    assert [line.split()[-1] for line in tail[:5]] == [str(f / "report.html") for f in sorted(
        folders, key=lambda f: order.index(f.name.rsplit("-", 2)[0]))]
    assert tail[5].split()[-1] == str(tmp_path / "runs" / "comparison.html")
    assert all((f / "report.html").exists() for f in folders) and (tmp_path / "runs" / "comparison.html").exists()


@pytest.mark.parametrize("name", ["sasrec", "gru4rec", "transitions"])
def test_recstack_train_runs_each_next_item_config(name, synthetic_ml100k, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RECSTACK_DATA_DIR", str(synthetic_ml100k))
    run = tmp_path / "run"
    code = main(["train", name, "--run-dir", str(run), "--progress", "quiet", "--set", "training.epochs=1",
                 "--set", "output.plots=false", "--set", "evaluation.next_item.sampled_negatives=20"])
    assert code == 0, capsys.readouterr().err
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics["protocols"]) == {"next-item", "next-item-sampled"}
    users = json.loads((run / "data.json").read_text())["users"]
    assert 0 < metrics["protocols"]["next-item"]["rows"] <= users          # one held-out item per user
    assert metrics["validation"]["protocol"] == "next-item"


def test_the_ml1m_config_reads_movielens_1m_and_prints_the_published_figures(tmp_path, monkeypatch, capsys):
    """sasrec-ml1m on tiny files in ML-1M's formats (the real data cannot be fetched here)."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "ml-1m"
    folder.mkdir()
    (folder / "movies.dat").write_bytes("".join(f"{m}::Movie {m} (1990)::Drama\n" for m in range(1, 31))
                                        .encode("latin-1"))
    (folder / "users.dat").write_text("".join(f"{u}::F::25::4::0{u:04d}\n" for u in range(1, 41)))
    ratings = [f"{u}::{m}::4::{978300000 + 60 * t}\n" for u in range(1, 41)
               for t, m in enumerate(rng.choice(30, 8, replace=False) + 1)]
    (folder / "ratings.dat").write_text("".join(ratings))
    monkeypatch.setenv("RECSTACK_ML_1M_DIR", str(folder))
    run = tmp_path / "run"
    assert main(["train", "sasrec-ml1m", "--run-dir", str(run), "--progress", "quiet", "--set", "training.epochs=1",
                 "--set", "model.max_length=8", "--set", "evaluation.next_item.sampled_negatives=10",
                 "--set", "output.plots=false"]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "Published (SASRec, leave-one-out, full-catalogue ranking): Meta generative-recommenders" in out
    assert "next-item/hr_at_10" in out and "0.2853" in out
    assert "this run changes model.max_length, training.epochs" in out
    assert json.loads((run / "data.json").read_text())["rows"]["test"] == 40


def test_the_recbole_ml1m_config_filters_and_trains_on_movielens_1m_files(tmp_path, monkeypatch, capsys):
    """ease-recbole-ml1m on files in ML-1M's formats, built so each filter bites: user 32 rated only 2s
    and movie 23 only 1s (min_rating 3 drops them); user 31 has 5 ratings and movie 21 has 9 (the
    10-core drops them in its first pass); movie 22's 12 ratings of exactly 3 stay."""
    folder = tmp_path / "ml-1m"
    folder.mkdir()
    (folder / "movies.dat").write_bytes("".join(f"{m}::Movie {m} (1990)::Drama\n" for m in range(1, 24))
                                        .encode("latin-1"))
    (folder / "users.dat").write_text("".join(f"{u}::M::25::4::0{u:04d}\n" for u in range(1, 33)))
    rows = [(u, m, 4) for u in range(1, 31) for m in range(1, 21)]
    rows += [(31, m, 5) for m in range(1, 6)] + [(32, m, 2) for m in range(1, 16)]
    rows += [(u, 21, 5) for u in range(1, 10)] + [(u, 22, 3) for u in range(1, 13)]
    rows += [(u, 23, 1) for u in range(1, 31)]
    (folder / "ratings.dat").write_text("".join(f"{u}::{m}::{r}::{978300000 + t}\n"
                                                for t, (u, m, r) in enumerate(rows)))
    monkeypatch.setenv("RECSTACK_ML_1M_DIR", str(folder))
    run = tmp_path / "run"
    assert main(["train", "ease-recbole-ml1m", "--run-dir", str(run), "--progress", "quiet",
                 "--set", "output.plots=false"]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "Published (RecBole's EASE, ratings >= 3, 10-core" in out and "0.2139" in out and "0.2865" in out
    data = json.loads((run / "data.json").read_text())
    assert data["rows"]["read"] == 671 and data["rows"]["after_duplicates"] == 671
    assert data["rows"]["after_filters"] == 612 and (data["users"], data["items"]) == (30, 21)
    assert data["filters"]["min_rating"] == {"value": 3.0, "rows_dropped": 45, "users_dropped": 1,
                                             "items_dropped": 1}
    assert data["filters"]["k_core"] == {"k": 10, "passes": 2, "rows_dropped": 14, "users_dropped": 1,
                                         "items_dropped": 1}
    assert data["filters"]["total"] == {"rows_dropped": 59, "users_dropped": 2, "items_dropped": 2}
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics["protocols"]) == {"exclude-seen"}
    assert 0 <= metrics["protocols"]["exclude-seen"]["factorized_top_k/recall_at_10"] <= 1
    report = (run / "report.html").read_text()
    assert "after filters" in report and "filter 10-core (2 passes): dropped 14 rows, 1 users, 1 items" in report
