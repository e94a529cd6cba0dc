"""MovieLens 100K loader: schema, source resolution, download/caching, malformed files."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recstack.datasets import (
    GENRE_LABELS,
    ML_100K_URL,
    OCCUPATION_LABELS,
    MovieLens100K,
    load_movielens_100k,
)
from recstack.core.errors import ChecksumError, DataError, DataNotFoundError

RATING_COLUMNS = [
    "user_id", "movie_id", "movie_title", "movie_genres", "timestamp", "user_rating",
    "raw_user_age", "bucketized_user_age", "user_gender", "user_occupation_label",
    "user_occupation_text", "user_zip_code",
]


class CountingFetch:
    """A fake ``fetch`` that returns fixed bytes and counts its calls."""

    def __init__(self, payload: bytes) -> None:
        self.payload = payload
        self.urls: list[str] = []

    def __call__(self, url: str) -> bytes:
        self.urls.append(url)
        return self.payload


def no_fetch(url: str) -> bytes:
    raise AssertionError(f"unexpected download of {url}")


def leftovers(directory: Path) -> list[str]:
    """Hidden temporary files/dirs that atomic writes must not leave behind."""
    return sorted(p.name for p in directory.rglob(".*")) if directory.exists() else []


# --- schema --------------------------------------------------------------------------------


def test_label_tables_match_tfds() -> None:
    assert GENRE_LABELS.index("Drama") == 7 and GENRE_LABELS.index("Comedy") == 4
    assert GENRE_LABELS.index("Unknown") == 20 and len(GENRE_LABELS) == 21
    assert OCCUPATION_LABELS.index("doctor/health care") == 4 and len(OCCUPATION_LABELS) == 22


def test_ratings_schema_and_values(ml100k_dir: Path) -> None:
    ds = load_movielens_100k(ml100k_dir)
    r = ds.ratings
    assert isinstance(ds, MovieLens100K) and ds.source == ml100k_dir
    assert list(r.columns) == RATING_COLUMNS
    assert r["timestamp"].dtype == np.int64
    assert r["user_occupation_label"].dtype == np.int64
    for column in ("user_rating", "raw_user_age", "bucketized_user_age"):
        assert r[column].dtype == np.float32, column
    assert r["user_gender"].dtype == bool
    for column in ("user_id", "movie_id", "movie_title", "user_occupation_text", "user_zip_code"):
        assert pd.api.types.is_string_dtype(r[column]), column
        assert all(isinstance(v, str) for v in r[column]), column
    # Row order is u.data order (see DATA_LINES in conftest).
    assert r["user_id"].tolist() == ["2", "1", "3", "2", "4", "1"]
    assert r["movie_id"].tolist() == ["2", "1", "3", "1", "4", "2"]
    assert r["timestamp"].tolist() == [881250950, 881250949, 881250000, 881250900, 881251000,
                                       881250960]
    assert r["user_rating"].tolist() == [3.0, 5.0, 1.0, 4.0, 2.0, 4.0]
    assert r["movie_title"].tolist()[:3] == ["Café Noir (1993)", "Toy Story (1995)", "unknown"]
    assert r["movie_genres"].tolist() == [[7, 14], [2, 3, 4], [20], [2, 3, 4], [9, 12, 18],
                                          [7, 14]]


def test_user_features(ml100k_dir: Path) -> None:
    r = load_movielens_100k(ml100k_dir).ratings
    by_user = r.drop_duplicates("user_id").set_index("user_id").sort_index()
    assert by_user["raw_user_age"].tolist() == [7.0, 46.0, 18.0, 60.0]
    # TFDS buckets: largest of [18, 25, 35, 45, 50, 56] <= age, else 1.
    assert by_user["bucketized_user_age"].tolist() == [1.0, 45.0, 18.0, 56.0]
    assert by_user["user_gender"].tolist() == [False, True, True, False]
    assert by_user["user_occupation_text"].tolist() == ["student", "doctor", "none", "healthcare"]
    assert by_user["user_occupation_label"].tolist() == [17, 4, 11, 4]
    # Zip codes stay strings: leading zeros and letters survive.
    assert by_user["user_zip_code"].tolist() == ["01002", "53211", "T8H1N", "00000"]


def test_movies_table(ml100k_dir: Path) -> None:
    movies = load_movielens_100k(ml100k_dir).movies
    assert list(movies.columns) == ["movie_id", "movie_title", "movie_genres"]
    assert movies["movie_id"].tolist() == ["1", "2", "3", "4"]
    assert movies["movie_title"].tolist() == ["Toy Story (1995)", "Café Noir (1993)", "unknown",
                                              "Some Film (1950)"]
    assert movies["movie_genres"].tolist() == [[2, 3, 4], [7, 14], [20], [9, 12, 18]]


def test_crlf_and_trailing_blank_lines_are_accepted(make_ml100k) -> None:
    directory = make_ml100k(newline="\r\n")
    (directory / "u.data").write_bytes((directory / "u.data").read_bytes() + b"\r\n\r\n")
    r = load_movielens_100k(directory).ratings
    assert len(r) == 6 and r["user_zip_code"].iloc[0] == "53211"


# --- where the data comes from -------------------------------------------------------------


def test_missing_data_dir_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(DataNotFoundError, match="does not exist") as info:
        load_movielens_100k(missing, fetch=no_fetch)
    assert str(missing) in str(info.value)


def test_data_dir_lacking_files_names_them(ml100k_dir: Path) -> None:
    (ml100k_dir / "u.item").unlink()
    (ml100k_dir / "u.user").unlink()
    with pytest.raises(DataNotFoundError) as info:
        load_movielens_100k(ml100k_dir, fetch=no_fetch)
    assert f"{ml100k_dir} is missing u.item, u.user." in str(info.value)


def test_env_data_dir_is_used(ml100k_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECSTACK_DATA_DIR", str(ml100k_dir))
    assert load_movielens_100k(fetch=no_fetch).source == ml100k_dir


def test_explicit_data_dir_beats_env(make_ml100k, tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    explicit = make_ml100k(tmp_path / "explicit")
    monkeypatch.setenv("RECSTACK_DATA_DIR", str(tmp_path / "does-not-exist"))
    assert load_movielens_100k(explicit, fetch=no_fetch).source == explicit


def test_bad_env_data_dir_fails_instead_of_downloading(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECSTACK_DATA_DIR", str(tmp_path / "typo"))
    with pytest.raises(DataNotFoundError, match=r"\$RECSTACK_DATA_DIR .*typo does not exist"):
        load_movielens_100k(fetch=no_fetch)


def test_existing_cache_is_used_without_fetching(make_ml100k, tmp_path: Path) -> None:
    cached = make_ml100k(tmp_path / "cache" / "ml-100k")
    ds = load_movielens_100k(cache_dir=tmp_path / "cache", fetch=no_fetch)
    assert ds.source == cached and len(ds.ratings) == 6


def test_cache_dir_defaults_to_env(make_ml100k, tmp_path: Path) -> None:
    # conftest points RECSTACK_CACHE_DIR at tmp_path / "env-cache".
    cached = make_ml100k(tmp_path / "env-cache" / "ml-100k")
    assert load_movielens_100k(fetch=no_fetch).source == cached


# --- downloading ---------------------------------------------------------------------------


def test_download_verifies_caches_and_is_reused(tmp_path: Path, ml100k_zip) -> None:
    payload, sha = ml100k_zip
    cache = tmp_path / "cache"
    fetch = CountingFetch(payload)
    first = load_movielens_100k(cache_dir=cache, fetch=fetch, sha256=sha, url="https://m/x.zip",
                                progress=False)
    assert fetch.urls == ["https://m/x.zip"]
    assert first.source == cache / "ml-100k" and len(first.ratings) == 6
    assert (cache / "ml-100k.zip").read_bytes() == payload
    assert leftovers(cache) == []
    # Second load: served from the cache, the network is not touched.
    second = load_movielens_100k(cache_dir=cache, fetch=no_fetch, sha256=sha)
    pd.testing.assert_frame_equal(first.ratings, second.ratings)


def test_checksum_mismatch_raises_and_leaves_nothing(tmp_path: Path, ml100k_zip) -> None:
    payload, _ = ml100k_zip
    cache = tmp_path / "cache"
    expected = "0" * 64
    with pytest.raises(ChecksumError) as info:
        load_movielens_100k(cache_dir=cache, fetch=CountingFetch(payload), sha256=expected)
    message = str(info.value)
    assert expected in message and hashlib.sha256(payload).hexdigest() in message
    assert not (cache / "ml-100k.zip").exists() and not (cache / "ml-100k").exists()
    assert leftovers(cache) == []


def test_official_checksum_mismatch_mentions_expected_size(tmp_path: Path) -> None:
    with pytest.raises(ChecksumError, match="3 bytes; expected 4924029 bytes"):
        load_movielens_100k(cache_dir=tmp_path, fetch=CountingFetch(b"bad"))
    assert not (tmp_path / "ml-100k.zip").exists()


def test_network_failure_says_what_to_do(tmp_path: Path) -> None:
    # conftest replaces the real HTTP client with one that raises URLError.
    with pytest.raises(DataNotFoundError) as info:
        load_movielens_100k(cache_dir=tmp_path / "cache")
    message = str(info.value)
    for fragment in ("data_dir=", "RECSTACK_DATA_DIR", ML_100K_URL, "network disabled in tests",
                     f"unzip it into {tmp_path / 'cache'}"):
        assert fragment in message, fragment
    assert not (tmp_path / "cache" / "ml-100k.zip").exists()


def test_download_false_never_fetches(tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError) as info:
        load_movielens_100k(cache_dir=tmp_path, download=False, fetch=no_fetch)
    message = str(info.value)
    for fragment in ("download=False", "data_dir=", "RECSTACK_DATA_DIR", ML_100K_URL):
        assert fragment in message, fragment


def test_verified_zip_in_cache_is_extracted_offline(tmp_path: Path, ml100k_zip) -> None:
    payload, sha = ml100k_zip
    (tmp_path / "ml-100k.zip").write_bytes(payload)
    ds = load_movielens_100k(cache_dir=tmp_path, download=False, fetch=no_fetch, sha256=sha)
    assert ds.source == tmp_path / "ml-100k" and len(ds.movies) == 4


def test_corrupt_cached_zip_is_replaced(tmp_path: Path, ml100k_zip) -> None:
    payload, sha = ml100k_zip
    (tmp_path / "ml-100k.zip").write_bytes(b"truncated")
    fetch = CountingFetch(payload)
    load_movielens_100k(cache_dir=tmp_path, fetch=fetch, sha256=sha)
    assert len(fetch.urls) == 1 and (tmp_path / "ml-100k.zip").read_bytes() == payload


def test_incomplete_cache_dir_is_rebuilt(tmp_path: Path, ml100k_zip) -> None:
    payload, sha = ml100k_zip
    partial = tmp_path / "ml-100k"
    partial.mkdir()
    (partial / "u.data").write_text("half a file")
    ds = load_movielens_100k(cache_dir=tmp_path, fetch=CountingFetch(payload), sha256=sha)
    assert len(ds.ratings) == 6 and sorted(p.name for p in partial.iterdir()) == [
        "u.data", "u.item", "u.user"]
    assert leftovers(tmp_path) == []


def test_zip_without_the_files_is_a_data_error(tmp_path: Path) -> None:
    import io
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("ml-100k/README", "no data here")
    payload = buffer.getvalue()
    with pytest.raises(DataError, match="does not contain ml-100k/u.data"):
        load_movielens_100k(cache_dir=tmp_path, fetch=CountingFetch(payload),
                            sha256=hashlib.sha256(payload).hexdigest())


# --- malformed files -----------------------------------------------------------------------

NO_GENRES = "|".join(["0"] * 19)


@pytest.mark.parametrize(
    ("override", "fragments"),
    [
        ({"data": ["1\t1\t5\t881250949", "1\t2\t4"]},
         ["u.data, line 2", "expected 4 tab-separated fields, got 3"]),
        ({"data": ["1\t1\t5\t881250949", "1\t2\t4\t881250960", "1\t3\t4\t1\t9"]},
         ["u.data, line 3", "expected 4 tab-separated fields, got 5"]),
        ({"data": ["1\t1\t5\t881250949", "", "1\t2\t4\t881250960"]},
         ["u.data, line 2", "got 1"]),
        ({"data": ["1\t1\t5\t881250949", "1\t2\tfive\t881250960"]},
         ["u.data, line 2", "rating 'five' is not a number"]),
        ({"data": ["1\t1\t5\t881250949", "1\t2\t4\tyesterday"]},
         ["u.data, line 2", "timestamp 'yesterday' is not an integer"]),
        ({"data": ["1\t1\t5\t881250949", "1\t2\t4\t1.5"]},
         ["u.data, line 2", "timestamp '1.5' is not an integer"]),
        ({"data": ["1\t1\t5\t881250949", "1\t2\t4\t881250960", "1\t99\t4\t881250960"]},
         ["u.data, line 3", "unknown movie id '99'", "u.item"]),
        ({"data": ["7\t1\t5\t881250949"]},
         ["u.data, line 1", "unknown user id '7'", "u.user"]),
        ({"data": []}, ["u.data is empty"]),
        ({"items": ["1|Toy Story (1995)|01-Jan-1995||http://x|0|0"]},
         ["u.item, line 1", "expected 24 '|'-separated fields, got 7"]),
        ({"items": ["1|A||||" + "|".join(["0"] * 18 + ["x"])]},
         ["u.item, line 1", "genre flags must be 0 or 1"]),
        ({"items": [f"1|A||||{NO_GENRES}", f"2|B||||{NO_GENRES}", f"1|C||||{NO_GENRES}"]},
         ["u.item, line 3", "duplicate movie id '1'"]),
        ({"users": ["1|7|F|student|01002", "2|46|M|wizard|53211"]},
         ["u.user, line 2", "unknown occupation 'wizard'", "doctor"]),
        ({"users": ["1|7|X|student|01002"]}, ["u.user, line 1", "gender 'X' is not 'M' or 'F'"]),
        ({"users": ["1|old|F|student|01002"]}, ["u.user, line 1", "age 'old' is not a number"]),
        ({"users": ["1|7|F|student"]},
         ["u.user, line 1", "expected 5 '|'-separated fields, got 4"]),
    ],
)
def test_malformed_rows_name_file_line_and_problem(make_ml100k, override, fragments) -> None:
    directory = make_ml100k(**override)
    with pytest.raises(DataError) as info:
        load_movielens_100k(directory, fetch=no_fetch)
    message = str(info.value)
    assert str(directory) in message
    for fragment in fragments:
        assert fragment in message, (fragment, message)


# --- the real thing ------------------------------------------------------------------------


@pytest.mark.real_data
def test_real_movielens_100k(real_data_dir: Path) -> None:
    ds = load_movielens_100k(real_data_dir, download=False)
    r = ds.ratings
    assert len(r) == 100_000 and len(ds.movies) == 1682 and r["user_id"].nunique() == 943
    assert list(r.columns) == RATING_COLUMNS
    row = r[(r["user_id"] == "138") & (r["movie_id"] == "357")]
    assert len(row) == 1
    row = row.iloc[0]
    assert row["movie_title"] == "One Flew Over the Cuckoo's Nest (1975)"
    assert row["movie_genres"] == [7]
    assert row["raw_user_age"] == 46 and row["bucketized_user_age"] == 45
    assert bool(row["user_gender"]) is True
    assert row["user_occupation_text"] == "doctor" and row["user_occupation_label"] == 4
    assert row["user_zip_code"] == "53211"
