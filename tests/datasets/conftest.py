"""Fixtures for the dataset tests: a tiny fake ml-100k, zips of it, and isolation.

MovieLens itself may not be copied into the repository (licence), so these
files are written from scratch in its formats. Every test runs with the data
and cache environment variables cleared and the network disabled.
"""

from __future__ import annotations

import hashlib
import io
import os
import urllib.error
import zipfile
from pathlib import Path
from typing import Callable

import pytest

from recstack.datasets import download

# Read at import, before the autouse fixture clears it for every test.
REAL_DATA_DIR = os.environ.get("RECSTACK_DATA_DIR")

# u.item genre flag order: unknown, Action, Adventure, Animation, Children's, Comedy, Crime,
# Documentary, Drama, Fantasy, Film-Noir, Horror, Musical, Mystery, Romance, Sci-Fi,
# Thriller, War, Western.


def _flags(*positions: int) -> str:
    return "|".join("1" if i in positions else "0" for i in range(19))


ITEM_LINES = [
    # Animation, Children's, Comedy -> TFDS ids [2, 3, 4]
    f"1|Toy Story (1995)|01-Jan-1995||http://us.imdb.com/M/title-exact?Toy|{_flags(3, 4, 5)}",
    # Latin-1 title; Drama, Romance -> [7, 14]
    f"2|Café Noir (1993)|01-Jan-1993||http://x|{_flags(8, 14)}",
    # The "unknown" flag -> [20]
    f"3|unknown||||{_flags(0)}",
    # Film-Noir, Musical, Western -> [9, 12, 18]
    f"4|Some Film (1950)|01-Jan-1950||http://y|{_flags(10, 12, 18)}",
]
USER_LINES = [
    "1|7|F|student|01002",     # bucket 1, label 17; zip with a leading zero
    "2|46|M|doctor|53211",     # bucket 45, label 4
    "3|18|M|none|T8H1N",       # bucket 18, label 11; alphanumeric zip
    "4|60|F|healthcare|00000",  # bucket 56, label 4
]
DATA_LINES = [
    "2\t2\t3\t881250950",
    "1\t1\t5\t881250949",
    "3\t3\t1\t881250000",
    "2\t1\t4\t881250900",
    "4\t4\t2\t881251000",
    "1\t2\t4\t881250960",
]

WriteMl100k = Callable[..., Path]


def write_ml100k(
    directory: Path,
    *,
    data: list[str] = DATA_LINES,
    items: list[str] = ITEM_LINES,
    users: list[str] = USER_LINES,
    newline: str = "\n",
) -> Path:
    """Write u.data, u.item and u.user (latin-1, like the real files) into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, lines in (("u.data", data), ("u.item", items), ("u.user", users)):
        text = "".join(line + newline for line in lines)
        (directory / name).write_bytes(text.encode("latin-1"))
    return directory


def make_zip(directory: Path) -> bytes:
    """A zip of ``directory``'s files under ``ml-100k/``, like the GroupLens archive."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in sorted(directory.iterdir()):
            archive.write(path, f"ml-100k/{path.name}")
    return buffer.getvalue()


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No real data, no real cache, no network, whatever the developer's environment."""
    monkeypatch.delenv("RECSTACK_DATA_DIR", raising=False)
    monkeypatch.setenv("RECSTACK_CACHE_DIR", str(tmp_path / "env-cache"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))

    def offline(url: str, progress: bool = True) -> bytes:
        raise urllib.error.URLError("network disabled in tests")

    monkeypatch.setattr(download, "_fetch", offline)


@pytest.fixture
def make_ml100k(tmp_path: Path) -> WriteMl100k:
    """``make_ml100k(directory=None, **overrides)`` writes a fake ml-100k (default tmp/ml-100k)."""

    def make(directory: Path | None = None, **overrides: object) -> Path:
        target = directory or tmp_path / "ml-100k"
        return write_ml100k(target, **overrides)  # type: ignore[arg-type]

    return make


@pytest.fixture
def ml100k_dir(make_ml100k: WriteMl100k) -> Path:
    """A valid tiny ml-100k directory (4 movies, 4 users, 6 ratings)."""
    return make_ml100k()


@pytest.fixture
def ml100k_zip(tmp_path: Path) -> tuple[bytes, str]:
    """``(zip bytes, their SHA-256)`` of the tiny dataset, built outside any cache."""
    data = make_zip(write_ml100k(tmp_path / "zip-src"))
    return data, hashlib.sha256(data).hexdigest()


@pytest.fixture
def real_data_dir() -> Path:
    """The real MovieLens 100K named by RECSTACK_DATA_DIR, else skip."""
    if not REAL_DATA_DIR or not (Path(REAL_DATA_DIR) / "u.data").is_file():
        pytest.skip("set RECSTACK_DATA_DIR to an ml-100k directory to run real-data tests")
    return Path(REAL_DATA_DIR)
