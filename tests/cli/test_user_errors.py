"""Every user error of the command line: exit 1 (runtime/data) or 2 (usage/config), one clear line on
stderr, no traceback; config values are checked before any data is read (no run folder is made)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from recstack.cli.main import build_parser, main
from recstack.core.errors import ConfigError
from recstack.experiment.config_files import load_config

from .conftest import make_ratings


def one_line_error(args: list, capsys, code: int) -> str:
    """Run the CLI; assert the exit code and that stderr is one line without a traceback; return it."""
    assert main([str(a) for a in args]) == code, capsys.readouterr().err
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    return lines[0]


def train(config: Path, *extra) -> list:
    return ["train", config, "--progress", "quiet", *extra]


# -- data files -------------------------------------------------------------------------------------
def test_a_parquet_file_that_is_not_parquet(workdir, write_config, capsys):
    (workdir / "ratings.parquet").write_text("userId,movieId\nu1,m1\n")
    line = one_line_error(train(write_config({"data": {"interactions": "ratings.parquet"}})), capsys, 1)
    assert "ratings.parquet is not a readable Parquet file" in line
    line = one_line_error(["data", "info", workdir / "ratings.parquet"], capsys, 1)
    assert "ratings.parquet is not a readable Parquet file" in line


def test_an_empty_csv_separator_is_a_config_error_before_any_data_work(workdir, write_config, capsys):
    line = one_line_error(train(write_config({"data": {"csv_separator": ""}})), capsys, 2)
    assert "data.csv_separator: a CSV separator is one character" in line and "got '' (empty)" in line
    assert not (workdir / "runs").exists()
    line = one_line_error(["data", "info", workdir / "ratings.csv", "--sep", ""], capsys, 2)
    assert "argument --sep: a CSV separator is one character" in line
    line = one_line_error(train(write_config({"data": {"csv_separator": '"'}})), capsys, 2)
    assert "cannot separate CSV columns" in line


@pytest.mark.parametrize("column, value, key", [("rating", "inf", "data.columns.rating"),
                                                ("rating", "-inf", "data.columns.rating"),
                                                ("timestamp", "inf", "data.columns.timestamp")])
def test_infinite_ratings_and_timestamps_are_refused_with_their_rows(workdir, write_config, capsys, column, value,
                                                                     key):
    df = make_ratings()
    df[column] = df[column].astype(object)
    df.loc[[2, 9], column] = value
    df.to_csv(workdir / "ratings.csv", index=False)
    line = one_line_error(train(write_config()), capsys, 1)
    assert f"column {column!r} ({key}) has 2 infinite value(s): {value} at row 2 (line 4), {value} at row 9 " \
           "(line 11)" in line


def test_nan_and_unparsable_values_are_refused_with_their_rows(workdir, write_config, capsys):
    df = make_ratings()
    df["rating"] = df["rating"].astype(object)
    df.loc[[1, 5], "rating"] = "NaN"
    df.to_csv(workdir / "ratings.csv", index=False)
    line = one_line_error(train(write_config()), capsys, 1)
    assert "column 'rating' (data.columns.rating) has 2 missing value(s), first at row 1 (line 3), row 5" in line
    df = make_ratings()
    df["timestamp"] = df["timestamp"].astype(object)
    df.loc[4, "timestamp"] = "yesterday-ish"
    df.to_csv(workdir / "ratings.csv", index=False)
    line = one_line_error(train(write_config()), capsys, 1)
    assert "column 'timestamp' (data.columns.timestamp) must be numeric but has 1 non-numeric value(s): " \
           "'yesterday-ish' at row 4 (line 6)" in line


def test_infinite_weights_and_numeric_features_are_refused(workdir, write_config, capsys):
    df = make_ratings()
    df["w"] = 1.0
    df.loc[7, "w"] = np.inf
    df.to_csv(workdir / "ratings.csv", index=False)
    line = one_line_error(train(write_config({"data": {"columns": {"weight": "w"}}})), capsys, 1)
    assert "column 'w' (data.columns.weight) has 1 infinite value(s): inf at row 7 (line 9)" in line
    items = {"data": {"items": {"path": "items.csv", "id": "movieId", "numeric": ["year"]}}}
    make_ratings().to_csv(workdir / "ratings.csv", index=False)
    text = (workdir / "items.csv").read_text().splitlines()
    text[3] = text[3].replace(",1982,", ",-inf,")
    (workdir / "items.csv").write_text("\n".join(text) + "\n")
    line = one_line_error(train(write_config(items)), capsys, 1)
    assert "items.csv: column 'year' (data.items.numeric) has 1 infinite value(s): -inf at row 2 (line 4)" in line


# -- config values: bounded, checked before any data is read ------------------------------------------
@pytest.mark.parametrize("extra, message", [
    ({"model": {"embedding_dim": 10**9}}, "model.embedding_dim: must be at most 65,536"),
    ({"model": {"layer_sizes": [64, 10**9]}}, "model.layer_sizes[1]: must be at most 65,536"),
    ({"model": {"rating_layer_sizes": [0]}}, "model.rating_layer_sizes[0]: must be >= 1"),
    ({"model": {"timestamp_buckets": 10**12}}, "model.timestamp_buckets: must be at most 1,000,000"),
    ({"model": {"activation": "swoosh"}}, "model.activation: Unknown activation 'swoosh'"),
    ({"model": {"kind": "autorec", "hidden_sizes": [10**9]}}, "model.hidden_sizes[0]: must be at most 65,536"),
    ({"model": {"kind": "autorec", "based": "movie"}}, "model.based: must be one of 'item', 'user'"),
    ({"model": {"kind": "ease", "l2": 0}}, "model.l2: must be > 0"),
    ({"tasks": {"retrieval": {"sampled_negatives": 10**9}}}, "tasks.retrieval.sampled_negatives: must be at most"),
    ({"features": {"text_max_length": 10**9}}, "features.text_max_length: must be at most 4,096"),
    ({"training": {"threads": 10**9}}, "training.threads: must be at most 1,024"),
    ({"evaluation": {"ks": [10, 10**12]}}, "evaluation.ks[1]: must be at most 1,000,000"),
    ({"optimizer": {"learning_rate": float("inf")}}, "optimizer.learning_rate: must be a finite number, got inf"),
    ({"tasks": {"retrieval": {"temperature": 0.0}}}, "tasks.retrieval.temperature: must be > 0"),
])
def test_absurd_sizes_are_refused_at_validation_with_the_bound(workdir, write_config, capsys, extra, message):
    line = one_line_error(train(write_config(extra)), capsys, 2)
    assert message in line
    assert not (workdir / "runs").exists()  # refused before a run folder or any data work


def test_the_bound_says_why(write_config, capsys):
    line = one_line_error(train(write_config({"model": {"embedding_dim": 10**9}})), capsys, 2)
    assert "published recommenders use 16-1,024; a typo such as 10^9 would try to allocate terabytes" in line


def test_several_problems_are_listed_one_per_line(write_config, capsys):
    assert main([str(a) for a in train(write_config({"model": {"embedding_dim": 0, "layer_sizes": [0]}}))]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "invalid config:\n  - model.embedding_dim" in err


# -- YAML --------------------------------------------------------------------------------------------
def _alias_bomb(levels: int) -> str:
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]")
    return "\n".join(lines + [f"name: *a{levels - 1}", "data: {interactions: ratings.csv}"]) + "\n"


def test_a_yaml_alias_bomb_is_refused_before_it_expands(tmp_path, capsys):
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(_alias_bomb(6))  # 9^6 = 531,441 strings from 6 lines
    with pytest.raises(ConfigError, match="expands to more than 100,000 values through its aliases"):
        load_config(bomb)
    bomb.write_text(_alias_bomb(12))  # 9^12 = 2.8e11: counted on the node graph, never expanded
    line = one_line_error(train(bomb), capsys, 2)
    assert "bomb.yaml: the YAML expands to more than 100,000 values through its aliases" in line


def test_ordinary_yaml_aliases_still_work(workdir):
    path = workdir / "aliases.yaml"
    path.write_text("data: {interactions: ratings.csv, columns: {user: userId, item: movieId}}\n"
                    "training: {epochs: 1, batch_size: &batch 64}\n"
                    "evaluation: {batch_size: *batch, ks: &ks [1, 5]}\n"
                    "reference: {source: here, metrics: {all-items/top_5_categorical_accuracy: 0.5}}\n")
    config = load_config(path)
    assert config.training.batch_size == config.evaluation.batch_size == 64 and config.evaluation.ks == [1, 5]


def test_a_recursive_yaml_alias_is_refused(tmp_path, capsys):
    path = tmp_path / "loop.yaml"
    path.write_text("data: &d {interactions: ratings.csv, again: *d}\n")
    line = one_line_error(train(path), capsys, 2)
    assert "loop.yaml: the YAML contains an alias to a collection inside itself" in line


def test_yaml_syntax_errors_are_one_line_with_the_position(tmp_path, write_config, capsys):
    path = tmp_path / "broken.yaml"
    path.write_text("data:\n  interactions: [unclosed\n")
    line = one_line_error(train(path), capsys, 2)
    assert line.startswith("error: ") and "broken.yaml is not valid YAML" in line and "line 3, column 1" in line
    line = one_line_error(train(write_config(), "--set", "model.layer_sizes=[1"), capsys, 2)
    assert "--set 'model.layer_sizes=[1': the value is not valid YAML" in line


# -- config files and arguments ----------------------------------------------------------------------
def test_config_paths_that_are_not_config_files(tmp_path, capsys):
    line = one_line_error(["train", tmp_path / "missing.yaml"], capsys, 2)
    assert "config file" in line and "missing.yaml does not exist" in line
    line = one_line_error(["train", tmp_path], capsys, 2)
    assert "is a folder, not a config file" in line
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"\xff\xfe\x00\x81 data")
    line = one_line_error(["train", binary], capsys, 2)
    assert "binary.yaml is not UTF-8 text" in line


def test_bad_set_syntax(write_config, capsys):
    for bad in ("epochs", "=5", "training..epochs=5"):
        line = one_line_error(train(write_config(), "--set", bad), capsys, 2)
        assert "--set expects KEY=VALUE with a dotted KEY" in line
    line = one_line_error(train(write_config(), "--set", "training.epochs.x=5"), capsys, 2)
    assert "training.epochs is a value, not a section" in line


@pytest.mark.parametrize("port", ["70000", "65536", "0", "-1", "http"])
def test_serve_port_must_be_a_tcp_port(port, capsys):
    line = one_line_error(["serve", "bundle", "--port", port], capsys, 2)
    assert line.startswith("recstack serve: error: argument --port: expected a port number 1-65535")


def test_serve_accepts_every_tcp_port():
    for port in (1, 8000, 65535):
        assert build_parser().parse_args(["serve", "bundle", "--port", str(port)]).port == port


def test_usage_errors_are_one_line_with_a_help_hint(capsys):
    line = one_line_error(["recommend", "somewhere"], capsys, 2)
    assert line == ("recstack recommend: error: one of the arguments --user --history is required "
                    "(see recstack recommend --help)")
    line = one_line_error(["frobnicate"], capsys, 2)
    assert "invalid choice: 'frobnicate'" in line and line.endswith("(see recstack --help)")


def test_run_folder_arguments_that_are_not_run_folders(workdir, capsys):
    line = one_line_error(["evaluate", workdir / "nothing"], capsys, 1)
    assert "run folder" in line and "does not exist" in line
    line = one_line_error(["recommend", workdir / "ratings.csv", "--user", "u1"], capsys, 1)
    assert "ratings.csv is a file, not a run folder" in line
    (workdir / "empty").mkdir()
    line = one_line_error(["similar", workdir / "empty", "--item", "m1"], capsys, 1)
    assert "is not a complete recstack run folder: missing config.yaml" in line


def test_help_still_prints_usage(capsys):
    assert main(["serve", "--help"]) == 0
    assert "TCP port, 1-65535" in capsys.readouterr().out


def test_serve_passes_batching_access_log_and_the_index_connection(monkeypatch, capsys):
    import recstack.serving.server as server

    calls = []
    monkeypatch.setattr(server, "run_server", lambda *args, **kwargs: calls.append((args, kwargs)))
    assert main(["serve", "bundle", "--batch-window-ms", "2", "--batch-max-queries", "16", "--access-log",
                 "--index-dsn", "postgresql://localhost/x"]) == 0
    (args, kwargs), = calls
    assert args == ("bundle", "127.0.0.1", 8000, 1)
    assert kwargs == {"access_log": True, "batch_window_ms": 2.0, "batch_max_queries": 16,
                      "index_connection": {"dsn": "postgresql://localhost/x"}}
    assert main(["serve", "bundle"]) == 0
    assert calls[-1][1] == {"access_log": False, "batch_window_ms": None, "batch_max_queries": 64,
                            "index_connection": None}


@pytest.mark.parametrize("window", ["-1", "1001", "soon"])
def test_serve_refuses_a_bad_batch_window(window, capsys):
    line = one_line_error(["serve", "bundle", "--batch-window-ms", window], capsys, 2)
    assert "milliseconds between 0 and 1000" in line
