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


GENRES = ["Action", "Adventure", "Comedy", "Drama", "Horror", "Romance", "Sci-Fi", "Thriller",
          "Documentary", "Animation"]


def write_power_law_ratings(directory: Path, seed: int = 0, num_users: int = 1200, num_movies: int = 500,
                            num_groups: int = 8, zipf: float = 1.0, taste: float = 0.85,
                            activity: float = 2.5) -> Path:
    """``ratings.csv`` (userId,movieId,rating,timestamp) and ``movies.csv`` (movieId,title,genres,
    genres ``|``-separated) shaped like a MovieLens "latest" export: about 19,000 ratings by default.

    Item popularity follows a Zipf law (exponent ``zipf``) over a random order of the catalogue, so
    recommending the most-rated items is a strong baseline. Users belong to ``num_groups`` taste
    groups; a group likes two genres and a few dozen favourite movies of its own. Each rating is,
    with probability ``taste``, drawn from the user's group (popularity x 6 on its genres x 30 on its
    favourites), else from global popularity: a model of the user-item structure (EASE, a
    two-tower model) beats popularity. User activity is log-normal (median e^activity, 5 to 150
    ratings); timestamps increase per user over four months starting anywhere in two years;
    ratings are higher on the group's favourites."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    order = rng.permutation(num_movies)                      # popularity rank of each movie
    popularity = 1.0 / (1.0 + order) ** zipf
    genres = [sorted(rng.choice(len(GENRES), size=int(rng.integers(1, 4)), replace=False))
              for _ in range(num_movies)]
    in_genre = np.zeros((num_movies, len(GENRES)), dtype=bool)
    for m, gs in enumerate(genres):
        in_genre[m, gs] = True
    group_weights, favourites = [], []
    for g in range(num_groups):
        liked = rng.choice(len(GENRES), size=2, replace=False)
        favourite = np.zeros(num_movies, dtype=bool)
        favourite[rng.choice(num_movies, size=num_movies // 12, replace=False)] = True
        weights = popularity * np.where(in_genre[:, liked].any(axis=1), 6.0, 1.0) * np.where(favourite, 30.0, 1.0)
        group_weights.append(weights / weights.sum())
        favourites.append(favourite)
    global_weights = popularity / popularity.sum()
    rows = []
    for user in range(1, num_users + 1):
        group = int(rng.integers(num_groups))
        count = int(np.clip(rng.lognormal(activity, 0.8), 5, 150))
        mix = taste * group_weights[group] + (1.0 - taste) * global_weights
        movies = rng.choice(num_movies, size=min(count, num_movies // 2), replace=False, p=mix)
        start = 1_420_070_400 + int(rng.integers(0, 2 * 365 * 86_400))
        stamps = start + np.sort(rng.integers(0, 120 * 86_400, size=movies.size))
        for movie, stamp in zip(movies, stamps):
            base = 4.0 if favourites[group][movie] else 3.0
            rating = float(np.clip(np.round(2 * (base + rng.normal(0, 0.9))) / 2, 0.5, 5.0))
            rows.append(f"{user},{movie + 1},{rating},{stamp}\n")
    (directory / "ratings.csv").write_text("userId,movieId,rating,timestamp\n" + "".join(rows))
    titles = [f'"Movie {m + 1} ({1960 + m % 60})"' if m % 7 == 0 else f"Movie {m + 1} ({1960 + m % 60})"
              for m in range(num_movies)]
    (directory / "movies.csv").write_text("movieId,title,genres\n" + "".join(
        f"{m + 1},{titles[m]},{'|'.join(GENRES[g] for g in genres[m])}\n" for m in range(num_movies)))
    return directory
