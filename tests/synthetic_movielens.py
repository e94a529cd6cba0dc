"""Writes a small random dataset in the MovieLens 100K file formats.

MovieLens itself may not be copied into the repository; tests that need a
realistic-looking directory (the reproductions, the demo, the CLI) use this.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

OCCUPATIONS = ["student", "doctor", "engineer", "other", "writer"]


def write_synthetic_ml100k(directory: Path, num_users: int = 60, num_movies: int = 45,
                           num_ratings: int = 1500, seed: int = 0) -> Path:
    """u.data / u.item / u.user with random but valid content; user "42" always exists."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    num_users = max(num_users, 42)
    pairs = rng.choice(num_users * num_movies, size=num_ratings, replace=False)
    users, movies = pairs // num_movies + 1, pairs % num_movies + 1
    ratings = rng.integers(1, 6, size=num_ratings)
    stamps = 880_000_000 + rng.integers(0, 10_000_000, size=num_ratings)
    (directory / "u.data").write_text(
        "".join(f"{u}\t{m}\t{r}\t{t}\n" for u, m, r, t in zip(users, movies, ratings, stamps)))
    item_lines = []
    for m in range(1, num_movies + 1):
        flags = ["0"] * 19
        flags[int(rng.integers(1, 19))] = "1"
        # Movie 2 repeats movie 1's title, as a few MovieLens titles do.
        title = "Movie 1 (1995)" if m == 2 else f"Movie {m} ({1950 + m % 50})"
        item_lines.append(f"{m}|{title}|01-Jan-1995||http://example|{'|'.join(flags)}\n")
    (directory / "u.item").write_bytes("".join(item_lines).encode("latin-1"))
    user_lines = [f"{u}|{int(rng.integers(10, 70))}|{'MF'[u % 2]}|{OCCUPATIONS[u % 5]}|{10000 + u}\n"
                  for u in range(1, num_users + 1)]
    (directory / "u.user").write_text("".join(user_lines))
    return directory
