"""Cache directory resolution, checksummed fetching and atomic zip extraction."""

from __future__ import annotations

import hashlib
import io
import urllib.error
import zipfile
from pathlib import Path

import pytest

from recstack.datasets import download
from recstack.datasets.download import extract_zip, fetch_verified, resolve_cache_dir
from recstack.core.errors import ChecksumError, DataError

# The real HTTP client, captured before conftest's autouse fixture disables it.
REAL_FETCH = download._fetch


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


# --- resolve_cache_dir ---------------------------------------------------------------------


def test_cache_dir_explicit_beats_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECSTACK_CACHE_DIR", str(tmp_path / "env"))
    assert resolve_cache_dir(tmp_path / "mine") == tmp_path / "mine"
    assert resolve_cache_dir() == tmp_path / "env"


def test_cache_dir_falls_back_to_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RECSTACK_CACHE_DIR")
    # conftest sets HOME to tmp_path / "home".
    assert resolve_cache_dir() == tmp_path / "home" / ".cache" / "recstack"
    monkeypatch.setenv("RECSTACK_CACHE_DIR", "")  # empty counts as unset
    assert resolve_cache_dir() == tmp_path / "home" / ".cache" / "recstack"
    assert resolve_cache_dir("~/c") == tmp_path / "home" / "c"
    assert not (tmp_path / "home").exists()  # resolving creates nothing


# --- fetching ------------------------------------------------------------------------------


def test_fetch_verified_returns_matching_bytes() -> None:
    payload = b"hello"
    sha = hashlib.sha256(payload).hexdigest()
    assert fetch_verified("u", sha.upper(), fetch=lambda url: payload) == payload


def test_fetch_verified_mismatch_names_both_hashes() -> None:
    expected = "a" * 64
    with pytest.raises(ChecksumError) as info:
        fetch_verified("https://h/f.zip", expected, size=10, fetch=lambda url: b"abc")
    message = str(info.value)
    assert expected in message and hashlib.sha256(b"abc").hexdigest() in message
    assert "https://h/f.zip" in message and "3 bytes; expected 10 bytes" in message


def test_fetch_verified_uses_module_fetch_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, bool]] = []

    def fake(url: str, progress: bool = True) -> bytes:
        calls.append((url, progress))
        return b"x"

    monkeypatch.setattr(download, "_fetch", fake)
    fetch_verified("u", hashlib.sha256(b"x").hexdigest(), progress=False)
    assert calls == [("u", False)]


def test_real_http_client_reads_file_urls(tmp_path: Path) -> None:
    # The real urllib code path, with a file:// URL instead of the network.
    source = tmp_path / "blob.bin"
    source.write_bytes(b"\x00\x01" * 100_000)
    assert REAL_FETCH(source.as_uri(), progress=False) == source.read_bytes()
    with pytest.raises(OSError):
        REAL_FETCH((tmp_path / "absent.bin").as_uri(), progress=False)


def test_download_bar_writes_no_frames_when_stderr_is_not_a_terminal(tmp_path: Path, capsys) -> None:
    source = tmp_path / "blob.bin"
    source.write_bytes(b"\x00" * 300_000)
    assert REAL_FETCH(source.as_uri(), progress=True) == source.read_bytes()
    assert capsys.readouterr() == ("", "")


def test_network_errors_are_oserrors() -> None:
    # load_movielens_100k relies on this to turn failures into DataNotFoundError.
    assert issubclass(urllib.error.URLError, OSError)
    assert issubclass(TimeoutError, OSError)


# --- extract_zip ---------------------------------------------------------------------------


def test_extract_zip_member_dir_becomes_dest(tmp_path: Path) -> None:
    archive = tmp_path / "a.zip"
    archive.write_bytes(zip_bytes({"ml-100k/u.data": b"1", "ml-100k/sub/x": b"2"}))
    dest = extract_zip(archive, tmp_path / "out" / "ml-100k", member_dir="ml-100k")
    assert dest == tmp_path / "out" / "ml-100k"
    assert names(dest) == ["sub", "u.data"] and (dest / "sub" / "x").read_bytes() == b"2"
    assert names(tmp_path / "out") == ["ml-100k"]  # no temporary directories left


def test_extract_zip_replaces_existing_dest(tmp_path: Path) -> None:
    archive = tmp_path / "a.zip"
    archive.write_bytes(zip_bytes({"new.txt": b"new"}))
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "old.txt").write_text("old")
    extract_zip(archive, dest)
    assert names(dest) == ["new.txt"]
    assert names(tmp_path) == ["a.zip", "dest"]


@pytest.mark.parametrize("bad_name", ["../evil.txt", "/abs.txt", "ok/../../evil.txt"])
def test_extract_zip_refuses_paths_outside_dest(tmp_path: Path, bad_name: str) -> None:
    archive = tmp_path / "a.zip"
    archive.write_bytes(zip_bytes({"fine.txt": b"", bad_name: b"x"}))
    with pytest.raises(DataError, match="unsafe member path"):
        extract_zip(archive, tmp_path / "out" / "d")
    assert names(tmp_path / "out") == []  # nothing extracted, temp dir removed
    assert not (tmp_path / "evil.txt").exists()


def test_extract_zip_rejects_non_zip_and_keeps_old_dest(tmp_path: Path) -> None:
    archive = tmp_path / "a.zip"
    archive.write_bytes(b"not a zip")
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "keep.txt").write_text("keep")
    with pytest.raises(DataError, match="not a valid zip"):
        extract_zip(archive, dest)
    assert names(dest) == ["keep.txt"] and names(tmp_path) == ["a.zip", "dest"]


def test_extract_zip_missing_member_dir(tmp_path: Path) -> None:
    archive = tmp_path / "a.zip"
    archive.write_bytes(zip_bytes({"other/u.data": b""}))
    with pytest.raises(DataError, match="no top-level folder 'ml-100k'"):
        extract_zip(archive, tmp_path / "out", member_dir="ml-100k")
    assert not (tmp_path / "out").exists()
