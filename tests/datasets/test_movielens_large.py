"""MovieLens 1M / 20M loaders on tiny files written in the real formats (the data cannot be
fetched here): parsing, source order, verified download, malformed files with line numbers."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest

from recstack.core.errors import ChecksumError, DataError, DataNotFoundError
from recstack.datasets.movielens import GENRE_LABELS, OCCUPATION_LABELS
from recstack.datasets.movielens_large import (
    ML_1M,
    ML_20M,
    load_movielens_1m,
    load_movielens_20m,
    read_movielens_1m,
    read_movielens_20m,
)

MOVIES_1M = ["1::Toy Story (1995)::Animation|Children's|Comedy",
             "2::Café Noir (1993)::Drama|Romance",
             "10::Film-Noir Thing (1950)::Film-Noir"]
USERS_1M = ["1::F::1::10::48067", "2::M::56::16::70072", "3::M::25::4::55117"]
RATINGS_1M = ["1::1::5::978300760", "1::10::3::978302109", "2::2::4::978301968", "3::1::1::978300275"]

MOVIES_20M = ["movieId,title,genres",
              "1,Toy Story (1995),Adventure|Animation|Children|Comedy|Fantasy",
              '11,"American President, The (1995)",Comedy|Drama|Romance',
              "131262,Innocence (2014),(no genres listed)"]
RATINGS_20M = ["userId,movieId,rating,timestamp", "1,1,3.5,1112486027", "1,11,4.0,1112484676",
               "7,131262,0.5,1427784002"]


def write(directory: Path, files: dict[str, list[str]], encoding: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, lines in files.items():
        (directory / name).write_bytes("".join(line + "\n" for line in lines).encode(encoding))
    return directory


def ml1m(directory: Path, **overrides: list[str]) -> Path:
    files = {"movies.dat": MOVIES_1M, "users.dat": USERS_1M, "ratings.dat": RATINGS_1M, **overrides}
    return write(directory, files, "latin-1")


def ml20m(directory: Path, **overrides: list[str]) -> Path:
    return write(directory, {"movies.csv": MOVIES_20M, "ratings.csv": RATINGS_20M, **overrides}, "utf-8")


def zipped(directory: Path) -> bytes:
    """A zip of ``directory`` under its own name as top folder, like the GroupLens archives."""
    archive = shutil.make_archive(str(directory.parent / "archive"), "zip", root_dir=directory.parent,
                                  base_dir=directory.name)
    return Path(archive).read_bytes()


@pytest.fixture(autouse=True)
def _no_dataset_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ML_1M.env_var, raising=False)
    monkeypatch.delenv(ML_20M.env_var, raising=False)


def test_ml1m_tables(tmp_path: Path) -> None:
    ds = read_movielens_1m(ml1m(tmp_path / "ml-1m"))
    r = ds.ratings
    assert list(r.columns) == ["user_id", "movie_id", "user_rating", "timestamp"]
    assert r["user_id"].tolist() == [1, 1, 2, 3] and r["movie_id"].tolist() == [1, 10, 2, 1]
    assert r["user_rating"].dtype == np.float32 and r["timestamp"].dtype == np.int64
    assert r["timestamp"].tolist() == [978300760, 978302109, 978301968, 978300275]
    m = ds.movies
    assert m["movie_title"].tolist() == ["Toy Story (1995)", "Café Noir (1993)", "Film-Noir Thing (1950)"]
    assert m["movie_genres"][0] == [GENRE_LABELS.index(g) for g in ("Animation", "Children", "Comedy")]
    assert m["movie_genres"][2] == [GENRE_LABELS.index("Film-Noir")]
    u = ds.users
    assert u["user_gender"].tolist() == [False, True, True]
    assert u["bucketized_user_age"].tolist() == [1.0, 56.0, 25.0]
    labels = [OCCUPATION_LABELS[i] for i in u["user_occupation_label"]]
    assert labels == ["student", "self-employed", "student"]          # K-12 and college students merge
    assert u["user_occupation_text"].tolist() == ["K-12 student", "self-employed", "college/grad student"]
    assert u["user_zip_code"].tolist() == ["48067", "70072", "55117"]


def test_ml20m_tables(tmp_path: Path) -> None:
    ds = read_movielens_20m(ml20m(tmp_path / "ml-20m"))
    assert ds.users is None
    assert ds.ratings["movie_id"].tolist() == [1, 11, 131262]
    assert ds.ratings["user_rating"].tolist() == [3.5, 4.0, 0.5]
    assert ds.movies["movie_title"].tolist()[1] == "American President, The (1995)"   # quoted comma
    assert ds.movies["movie_genres"][2] == [GENRE_LABELS.index("(no genres listed)")]


@pytest.mark.parametrize("files, message", [
    ({"ratings.dat": ["1::1::5::978300760", "1::10::x::978302109"]}, r"ratings.dat, line 2: user_rating 'x'"),
    ({"ratings.dat": ["1::1::5::978300760", "1::10::3"]}, r"ratings.dat, line 2: expected 4 fields"),
    ({"ratings.dat": ["1::1::5::97.5"]}, r"ratings.dat, line 1: timestamp '97.5' is not an integer"),
    ({"ratings.dat": ["1::1::5::1", "3::99::1::1"]}, r"ratings.dat, line 2: .*unknown movie id 99"),
    ({"ratings.dat": ["1::1::nan::1"]}, r"line 1: user_rating 'nan' is not a number"),
    ({"ratings.dat": ["1::1::5::1", "1::1::inf::1"]}, r"line 2: rating inf is not a finite number"),
    ({"movies.dat": MOVIES_1M + ["11::X::Space Opera"]}, r"movies.dat, line 4: unknown genre"),
    ({"movies.dat": MOVIES_1M + ["1::Again::Drama"]}, r"movies.dat, line 4: duplicate movie id 1"),
    ({"users.dat": USERS_1M[:2] + ["3::M::26::4::55117"]}, r"users.dat, line 3: age code 26"),
    ({"users.dat": USERS_1M[:2] + ["3::M::25::21::55117"]}, r"users.dat, line 3: occupation code 21"),
])
def test_ml1m_malformed_files_name_the_line(tmp_path: Path, files: dict[str, list[str]], message: str) -> None:
    with pytest.raises(DataError, match=message):
        read_movielens_1m(ml1m(tmp_path / "ml-1m", **files))


@pytest.mark.parametrize("files, message", [
    ({"ratings.csv": RATINGS_20M + ["7,1,4.0,soon"]}, r"ratings.csv, line 5: timestamp 'soon'"),
    ({"ratings.csv": ["user,movie,rating,time"] + RATINGS_20M[1:]}, r"expected the header userId,movieId"),
    ({"ratings.csv": RATINGS_20M + ["7,5,4.0,1"]}, r"ratings.csv, line 5: .*unknown movie id 5"),
    ({"movies.csv": MOVIES_20M + ["12,Y (2000),Musicals"]}, r"movies.csv, line 5: unknown genre"),
])
def test_ml20m_malformed_files_name_the_line(tmp_path: Path, files: dict[str, list[str]], message: str) -> None:
    with pytest.raises(DataError, match=message):
        read_movielens_20m(ml20m(tmp_path / "ml-20m", **files))


def test_sources_in_order_dir_then_env_then_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    named = ml1m(tmp_path / "named")
    env = ml1m(tmp_path / "env")
    cached = ml1m(tmp_path / "cache" / "ml-1m")
    monkeypatch.setenv(ML_1M.env_var, str(env))
    fail = lambda url: pytest.fail("no download expected")  # noqa: E731
    assert load_movielens_1m(named, cache_dir=tmp_path / "cache", fetch=fail).source == named
    assert load_movielens_1m(cache_dir=tmp_path / "cache", fetch=fail).source == env
    monkeypatch.delenv(ML_1M.env_var)
    assert load_movielens_1m(cache_dir=tmp_path / "cache", fetch=fail).source == cached
    monkeypatch.setenv(ML_1M.env_var, str(tmp_path / "typo"))
    with pytest.raises(DataNotFoundError, match="RECSTACK_ML_1M_DIR"):     # a set variable is a choice
        load_movielens_1m(cache_dir=tmp_path / "cache", fetch=fail)


def test_verified_download_into_the_cache(tmp_path: Path) -> None:
    payload = zipped(ml20m(tmp_path / "src" / "ml-20m"))
    digest = hashlib.sha256(payload).hexdigest()
    calls: list[str] = []
    fetch = lambda url: calls.append(url) or payload  # noqa: E731
    cache = tmp_path / "cache"
    ds = load_movielens_20m(cache_dir=cache, sha256=digest, fetch=fetch)
    assert ds.source == cache / "ml-20m" and calls == [ML_20M.url]
    assert load_movielens_20m(cache_dir=cache, sha256=digest, fetch=fetch).ratings.shape[0] == 3
    assert len(calls) == 1                                          # the second load reads the cache


def test_wrong_checksum_writes_nothing(tmp_path: Path) -> None:
    payload = zipped(ml1m(tmp_path / "src" / "ml-1m"))
    cache = tmp_path / "cache"
    with pytest.raises(ChecksumError, match="SHA-256 mismatch"):
        load_movielens_1m(cache_dir=cache, fetch=lambda url: payload)   # the official hash: no match
    assert not (cache / "ml-1m").exists() and not (cache / "ml-1m.zip").exists()


def test_not_found_without_download_or_network(tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError, match="download=False"):
        load_movielens_1m(cache_dir=tmp_path / "c", download=False)
    with pytest.raises(DataNotFoundError, match="downloading .*ml-20m.zip failed"):
        load_movielens_20m(cache_dir=tmp_path / "c")                 # the test network is off
    with pytest.raises(DataNotFoundError, match="missing users.dat"):
        load_movielens_1m(write(tmp_path / "partial", {"ratings.dat": RATINGS_1M, "movies.dat": MOVIES_1M},
                                "latin-1"))


def test_pinned_checksums_look_like_sha256() -> None:
    for archive in (ML_1M, ML_20M):
        assert len(archive.sha256) == 64 and int(archive.sha256, 16) >= 0
        assert archive.url.endswith(f"/{archive.folder}.zip")
