"""Exact vs approximate top-k on synthetic recommender embeddings (100k and 1M items, d=64).

Writes benchmarks/results/index.json. Run from the repository root, politely:

    nice -n 19 .venv/bin/python benchmarks/index.py            # ~10 min on 2 cores
    nice -n 19 .venv/bin/python benchmarks/index.py --quick    # 20k items, smoke test

Data (fixed seeds, no downloads), modelled on the research notes' set-up:
items are a mixture of 1,000 anisotropic Gaussian clusters (decaying spectrum
sd_i ∝ i^-0.5, random rotations, a shared mean direction, Zipf-like sizes),
each item scaled by exp(0.15 clip(z_pop, ±3) + 0.1 eps) so popular items have
larger norms. Queries come from the same mixture without the popularity
scaling: 2,000 evaluation queries, and 1,000 *different* queries used only
by ``tune`` (held out from the evaluation). N=100k is the first 100k rows of
the (shuffled) 1M set. Ground truth: exact top-100 by inner product.

Per method and setting: build wall/CPU seconds, RSS growth, serialized size,
load time, recall@10 and recall@100 (|found ∩ exact| / k, averaged), and
throughput. "b1 1thr" = batch-1 queries from one thread divided by that
thread's CPU seconds (as in the research notes: removes time-slicing by other
jobs on the shared machine); "b256 1thr" = batch-256 with one library thread
per process CPU second; "b256 wall" = batch-256 wall-clock with all threads.
Each throughput is the median of 3 runs. "foreign_cores" is the CPU other
processes used during the run (from /proc/stat), to read the QPS against.
"""

from __future__ import annotations

import argparse
import gc
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import environment, write_json  # noqa: E402

from recstack.index import BruteForce, Index, load_index, recall_at_k  # noqa: E402


# ------------------------------------------------------------------------------------------
# Synthetic data
# ------------------------------------------------------------------------------------------
class Mixture:
    """1,000 anisotropic Gaussian clusters around a shared direction, Zipf-like sizes.

    Candidates (``popularity=True``) also get a per-cluster norm scale exp(0.38 N(0,1)) and
    the per-item popularity scale, so norms vary as in trained recommenders (1st/50th/99th
    percentile ≈ 1.0 / 2.2 / 5, max ≈ 10) and the exact inner-product top-100 leans to
    high-norm items (a third to a half overlaps the cosine top-100).
    """

    def __init__(self, d: int = 64, clusters: int = 1000, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.d = d
        shared = rng.normal(size=d)
        shared /= np.linalg.norm(shared)
        self.centers = rng.normal(size=(clusters, d)) * 0.25 + 0.35 * shared
        self.cluster_scale = np.exp(0.38 * rng.normal(size=clusters))
        spectrum = np.arange(1, d + 1) ** -0.5
        self.spectrum = spectrum / np.sqrt((spectrum ** 2).sum()) * 1.0         # total within-cluster sd 1.0
        self.rotations = np.stack([np.linalg.qr(rng.normal(size=(d, d)))[0] for _ in range(clusters)])
        sizes = 1.0 / np.arange(1, clusters + 1) ** 0.8
        self.p = sizes / sizes.sum()

    def sample(self, n: int, seed: int, popularity: bool) -> np.ndarray:
        """[n, d] float32 in random order."""
        rng = np.random.default_rng(seed)
        counts = rng.multinomial(n, self.p)
        out = np.empty((n, self.d), dtype=np.float32)
        row = 0
        for c in np.flatnonzero(counts):
            m = counts[c]
            z = rng.normal(size=(m, self.d)) * self.spectrum
            scale = self.cluster_scale[c] if popularity else 1.0
            out[row:row + m] = (self.centers[c] + z @ self.rotations[c]) * scale
            row += m
        out[:] = out[rng.permutation(n)]
        if popularity:
            for start in range(0, n, 100_000):
                m = min(n, start + 100_000) - start
                scale = np.exp(0.15 * np.clip(rng.normal(size=m), -3, 3) + 0.1 * rng.normal(size=m))
                out[start:start + m] *= scale[:, None].astype(np.float32)
        return out


# ------------------------------------------------------------------------------------------
# Measurement helpers
# ------------------------------------------------------------------------------------------
def rss_mb() -> float:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 / 1024


class Foreign:
    """CPU cores used by other processes between start() and stop() (/proc/stat minus ours)."""

    def _busy(self) -> tuple[float, float]:
        with open("/proc/stat") as handle:
            parts = [float(v) for v in handle.readline().split()[1:]]
        busy = sum(parts) - parts[3] - (parts[4] if len(parts) > 4 else 0.0)
        tick = os.sysconf("SC_CLK_TCK")
        t = os.times()
        return busy / tick, t.user + t.system

    def __enter__(self) -> "Foreign":
        self.wall = time.perf_counter()
        self.busy, self.own = self._busy()
        return self

    def __exit__(self, *exc: Any) -> None:
        busy, own = self._busy()
        wall = time.perf_counter() - self.wall
        self.cores = max(0.0, ((busy - self.busy) - (own - self.own)) / wall) if wall > 0 else 0.0


def set_threads(n: int) -> None:
    torch.set_num_threads(n)
    try:
        import faiss
        faiss.omp_set_num_threads(n)
    except ImportError:
        pass


def median_of(runs: int, fn: Callable[[], float]) -> float:
    return float(statistics.median(fn() for _ in range(runs)))


def qps_batch1(index: Index, q: np.ndarray, k: int, n: int) -> float:
    """Batch-1 queries per thread-CPU-second, one library thread."""
    set_threads(1)
    t0 = time.thread_time()
    for i in range(n):
        index.search(q[i:i + 1], k=k)
    return n / (time.thread_time() - t0)


def qps_batch(index: Index, q: np.ndarray, k: int, batch: int, threads: int) -> float:
    """Batch queries per process-CPU-second (threads=1) or per wall second (threads>1)."""
    set_threads(threads)
    clock = time.process_time if threads == 1 else time.perf_counter
    t0 = clock()
    for start in range(0, q.shape[0], batch):
        index.search(q[start:start + batch], k=k)
    return q.shape[0] / (clock() - t0)


def search_all(index: Index, q: np.ndarray, k: int, batch: int = 256) -> np.ndarray:
    set_threads(os.cpu_count() or 1)
    return np.concatenate([index.search(q[s:s + batch], k=k)[1] for s in range(0, q.shape[0], batch)])


def size_and_load(index: Index) -> tuple[float, float, Index]:
    folder = Path(tempfile.mkdtemp(prefix="recstack-bench-"))
    try:
        index.save(folder / "ix")
        size = sum(p.stat().st_size for p in (folder / "ix").rglob("*") if p.is_file()) / 1e6
        t0 = time.perf_counter()
        loaded = load_index(folder / "ix")
        load_s = time.perf_counter() - t0
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return size, load_s, loaded


def measure(index: Index, setting: dict[str, Any], q_eval: np.ndarray, truth: np.ndarray,
            n_b1: int, runs: int) -> dict[str, Any]:
    found = search_all(index, q_eval, 100)
    row: dict[str, Any] = {
        "setting": setting,
        "recall_at_10": round(recall_at_k(found[:, :10], truth[:, :10]), 4),
        "recall_at_100": round(recall_at_k(found, truth), 4),
    }
    with Foreign() as f:
        row["qps_b1_1thr"] = round(median_of(runs, lambda: qps_batch1(index, q_eval, 100, n_b1)), 1)
        row["qps_b256_1thr"] = round(median_of(runs, lambda: qps_batch(index, q_eval[:1024], 100, 256, 1)), 1)
        row["qps_b256_wall"] = round(median_of(runs, lambda: qps_batch(index, q_eval[:1024], 100, 256,
                                                                          os.cpu_count() or 1)), 1)
    row["foreign_cores"] = round(f.cores, 2)
    print(f"    {setting}: R@10 {row['recall_at_10']:.3f} R@100 {row['recall_at_100']:.3f} "
          f"b1 {row['qps_b1_1thr']:.0f}/s b256 {row['qps_b256_1thr']:.0f}/s (foreign {f.cores:.1f})", flush=True)
    return row


def build(make: Callable[[], Index], ids: np.ndarray | None, x: np.ndarray) -> tuple[Index, dict[str, Any]]:
    set_threads(os.cpu_count() or 1)
    gc.collect()
    before = rss_mb()
    with Foreign() as f:
        wall0, cpu0 = time.perf_counter(), time.process_time()
        index = make().build(ids, x)
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    size, load_s, loaded = size_and_load(index)
    del loaded
    info = {"build_wall_s": round(wall, 2), "build_cpu_s": round(cpu, 2), "foreign_cores": round(f.cores, 2),
            "rss_growth_mb": round(rss_mb() - before, 1), "serialized_mb": round(size, 1),
            "load_s": round(load_s, 3)}
    print(f"  built {index.kind}: {info}", flush=True)
    return index, info


# ------------------------------------------------------------------------------------------
def run_size(n: int, x: np.ndarray, q_eval: np.ndarray, q_tune: np.ndarray, runs: int,
             target: float, quick: bool) -> dict[str, Any]:
    print(f"N = {n:,}", flush=True)
    norms = np.linalg.norm(x, axis=1)
    out: dict[str, Any] = {"n": n, "d": x.shape[1], "num_eval_queries": q_eval.shape[0],
                           "num_tune_queries": q_tune.shape[0],
                           "item_norm_percentiles": {p: round(float(np.percentile(norms, p)), 3) for p in (1, 50, 99)},
                           "item_norm_max": round(float(norms.max()), 3), "methods": {}}
    # Exact baseline and ground truth.
    exact, info = build(lambda: BruteForce(), None, x)
    set_threads(os.cpu_count() or 1)
    t0 = time.perf_counter()
    truth = search_all(exact, q_eval, 100)
    out["ground_truth_s"] = round(time.perf_counter() - t0, 2)
    top_norms = norms[truth[:, :100].reshape(-1)]
    out["exact_top100_median_norm"] = round(float(np.median(top_norms)), 3)
    n_b1_exact = 100 if n >= 1_000_000 else 300
    out["methods"]["brute_force"] = {**info, "rows": [measure(exact, {"exact": True}, q_eval, truth,
                                                              n_b1_exact, runs)]}
    del exact
    gc.collect()

    # FAISS IVF-Flat over MIPS->L2 augmented vectors.
    try:
        from recstack.index import FaissIVF
        import faiss
        index, info = build(lambda: FaissIVF(seed=0), None, x)
        rows = []
        for nprobe in ([8, 32] if quick else [16, 32, 64, 128, 256]):
            index.set_search_params(nprobe=nprobe)
            rows.append(measure(index, {"nprobe": nprobe}, q_eval, truth, 1000, runs))
        set_threads(os.cpu_count() or 1)
        record = index.tune(q_tune, target_recall=target, k=100)
        tuned = measure(index, {**record["params"], "tuned": True}, q_eval, truth, 1000, runs)
        rows.append(tuned)
        out["methods"]["faiss_ivf"] = {**info, "version": faiss.__version__, "nlist": index.nlist,
                                       "norm_bound": round(index.norm_bound, 4),
                                       "tuning": {k: v for k, v in record.items()}, "rows": rows}
        del index
        gc.collect()
    except ImportError as exc:
        out["methods"]["faiss_ivf"] = {"skipped": str(exc)}

    # ScaNN.
    try:
        from recstack.index import ScaNN
        import scann  # noqa: F401
        from importlib.metadata import version
        index, info = build(lambda: ScaNN(), None, x)
        leaves = index.num_leaves or 1
        rows = []
        settings = [(0.05, 1000), (0.08, 1000), (0.16, 2000)] if not quick else [(0.1, 1000)]
        for frac, reorder in settings:
            index.set_search_params(leaves_to_search=max(1, int(round(leaves * frac))), reorder=reorder)
            rows.append(measure(index, index.search_params(), q_eval, truth, 1000, runs))
        set_threads(os.cpu_count() or 1)
        record = index.tune(q_tune, target_recall=target, k=100)
        rows.append(measure(index, {**record["params"], "tuned": True}, q_eval, truth, 1000, runs))
        out["methods"]["scann"] = {**info, "version": version("scann"), "num_leaves": leaves,
                                   "tuning": record, "rows": rows}
        del index
        gc.collect()
    except ImportError as exc:
        out["methods"]["scann"] = {"skipped": str(exc)}
    out["peak_rss_gb"] = round(peak_rss_gb(), 2)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="20k items, 1 run: a smoke test")
    parser.add_argument("--target-recall", type=float, default=0.95)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    sizes = [20_000] if args.quick else [100_000, 1_000_000]
    runs = 1 if args.quick else args.runs
    started = time.time()
    mixture = Mixture()
    x_all = mixture.sample(max(sizes), seed=0, popularity=True)
    q_eval = mixture.sample(500 if args.quick else 2000, seed=1, popularity=False)
    q_tune = mixture.sample(300 if args.quick else 1000, seed=2, popularity=False)
    results = {"benchmark": "index", "environment": environment(), "target_recall": args.target_recall,
               "runs_per_qps": runs, "k": 100, "sizes": []}
    for n in sizes:
        results["sizes"].append(run_size(n, np.ascontiguousarray(x_all[:n]), q_eval, q_tune, runs,
                                         args.target_recall, args.quick))
    # Headline: tuned FAISS vs exact at the largest size, same run.
    last = results["sizes"][-1]["methods"]
    summary: dict[str, Any] = {"n": sizes[-1]}
    exact_b1 = last["brute_force"]["rows"][0]["qps_b1_1thr"]
    for name in ("faiss_ivf", "scann"):
        rows = last.get(name, {}).get("rows")
        if rows:
            tuned = rows[-1]
            summary[name] = {"setting": tuned["setting"], "recall_at_100": tuned["recall_at_100"],
                             "recall_at_10": tuned["recall_at_10"], "qps_b1_1thr": tuned["qps_b1_1thr"],
                             "speedup_b1_vs_exact": round(tuned["qps_b1_1thr"] / exact_b1, 1),
                             "qps_b256_1thr": tuned["qps_b256_1thr"]}
    summary["exact_qps_b1_1thr"] = exact_b1
    summary["exact_qps_b256_1thr"] = last["brute_force"]["rows"][0]["qps_b256_1thr"]
    results["summary"] = summary
    results["elapsed_s"] = round(time.time() - started, 1)
    if args.quick:   # smoke runs never overwrite the published results
        path = Path(tempfile.gettempdir()) / "recstack_index_quick.json"
        path.write_text(__import__("json").dumps(results, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {path}")
    else:
        print(f"wrote {write_json('index.json', results)}")
    print(summary)


if __name__ == "__main__":
    main()
