"""The pgvector backend on a local PostgreSQL server: bulk load, exact scan, HNSW, vs BruteForce.

Writes benchmarks/results/vector_db.json. Run from the repository root, politely:

    nice -n 19 .venv/bin/python benchmarks/vector_db.py            # ~10 min on 2 cores
    nice -n 19 .venv/bin/python benchmarks/vector_db.py --quick    # 50k items, smoke test

Needs psycopg (``pip install 'recstack[pgvector]'``) and PostgreSQL server binaries with
pgvector (see docs/serving.md); the server is a throwaway cluster started on 127.0.0.1
by :func:`recstack.testing.postgres.local_postgres` (default durability settings,
shared_buffers 1GB) and removed at the end.

Data: the same synthetic recommender embeddings as benchmarks/index.py (1M x 64
float32 items from the 1,000-cluster mixture with popularity-scaled norms; queries from
the mixture without the popularity scaling).

Measured:

* bulk load (``PgVector.build``: binary COPY in 64k-row chunks + primary key + ANALYZE)
  of all N rows: wall seconds and rows/s (median of ``--runs``), client CPU, client
  RSS growth, table / index / total size on disk;
* exact search (sequential scan) at N: latency per batch of 1 / 8 / 32 queries and the
  QPS it implies, the PostgreSQL backend's CPU seconds per query (from /proc, so other
  jobs on the machine do not inflate it), batch-1 with 50 excluded ids per query,
  and agreement with BruteForce's top-100;
* BruteForce on the same N and queries (torch, all cores): same latencies;
* HNSW (``PgVectorHNSW``, m 16, ef_construction 64, one parallel build worker) on the
  first ``--hnsw-n`` rows (default 1M: the build is most of the run, ~8 min here):
  build seconds, index size, and per ef_search (100, 400, 1000): recall@100 / recall@10
  against exact top-k on 500 queries, batch-1 latency, QPS and server CPU per query,
  batch-32 QPS; the exact scan and BruteForce on the same rows for comparison.

Wall-clock figures move with the load other jobs put on the machine (the 1-minute load
average is recorded); the server CPU seconds per query do not.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import index as index_bench  # noqa: E402  (benchmarks/index.py: the shared synthetic data)
from _common import environment, write_json  # noqa: E402

from recstack.index import BruteForce, recall_at_k  # noqa: E402
from recstack.index.pgvector_hnsw import PgVectorHNSW  # noqa: E402
from recstack.index.pgvector_index import PgVector, copy_records  # noqa: E402
from recstack.testing.postgres import find_postgres_bin, local_postgres  # noqa: E402

SERVER_SETTINGS = {"shared_buffers": "1GB", "max_wal_size": "4GB"}


def backend_cpu_s(index: PgVector) -> float:
    """CPU seconds (user + system) of the index connection's PostgreSQL backend process."""
    pid = index._connection().info.backend_pid
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def timed(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def latency(index: Any, q: np.ndarray, batch: int, repeats: int, k: int = 100,
            exclude: Callable[[int], Any] | None = None) -> dict[str, Any]:
    """Median wall seconds of ``repeats`` searches of ``batch`` queries (distinct per repeat)."""
    server = isinstance(index, PgVector)
    before = backend_cpu_s(index) if server else 0.0
    times = []
    for r in range(repeats):
        block = q[r * batch:(r + 1) * batch]
        ex = exclude(r) if exclude is not None else None
        times.append(timed(lambda: index.search(block, k=k, exclude=ex)))
    med = statistics.median(times)
    row = {"batch": batch, "repeats": repeats, "latency_s": round(med, 4), "qps": round(batch / med, 2)}
    if server:   # over all repeats: /proc counts in clock ticks (10 ms)
        row["server_cpu_s_per_query"] = round((backend_cpu_s(index) - before) / (batch * repeats), 5)
    return row


def table_sizes(index: PgVector) -> dict[str, float]:
    conn = index._connection()
    rel, idx, total = conn.execute("SELECT pg_relation_size(%s), pg_indexes_size(%s), pg_total_relation_size(%s)",
                                   (index.table,) * 3).fetchone()
    return {"table_mb": round(rel / 1e6, 1), "indexes_mb": round(idx / 1e6, 1), "total_mb": round(total / 1e6, 1)}


def bulk_load(dsn: str, x: np.ndarray, runs: int) -> tuple[PgVector, dict[str, Any]]:
    n = x.shape[0]
    t0 = time.process_time()
    for start in range(0, n, 65536):        # the client-side share: building the COPY records
        copy_records(np.arange(start, min(n, start + 65536), dtype=np.int64), x[start:start + 65536])
    encode_cpu = time.process_time() - t0
    index = PgVector(dsn, table="items")
    walls, cpus, rss = [], [], []
    for _ in range(runs):
        gc.collect()
        before = index_bench.rss_mb()
        w0, c0 = time.perf_counter(), time.process_time()
        index.build(None, x)
        walls.append(time.perf_counter() - w0)
        cpus.append(time.process_time() - c0)
        rss.append(index_bench.rss_mb() - before)
    wall = statistics.median(walls)
    info = {"rows": n, "d": x.shape[1], "runs": runs, "wall_s": [round(w, 2) for w in walls],
            "median_wall_s": round(wall, 2), "rows_per_s": round(n / wall), "client_cpu_s": round(min(cpus), 2),
            "client_encode_cpu_s": round(encode_cpu, 2), "client_rss_growth_mb": round(max(rss), 1),
            "copy_chunk_rows": index.copy_chunk, **table_sizes(index)}
    print(f"  bulk load: {info}", flush=True)
    return index, info


def exact_section(index: PgVector, brute: BruteForce, q: np.ndarray, quick: bool) -> dict[str, Any]:
    plan = [(1, 5), (8, 2), (32, 1)] if not quick else [(1, 3), (8, 1)]
    out: dict[str, Any] = {"pgvector": [], "brute_force": []}
    index.search(q[:1], k=100)          # warm the cache: the table is read from shared buffers / page cache
    for batch, repeats in plan:
        out["pgvector"].append(latency(index, q, batch, repeats))
        out["brute_force"].append(latency(brute, q, batch, repeats))
        print(f"  exact b{batch}: pgvector {out['pgvector'][-1]}  brute {out['brute_force'][-1]}", flush=True)
    rng = np.random.default_rng(5)
    excl = lambda r: [rng.choice(index.num_candidates, 50, replace=False).tolist()]  # noqa: E731
    out["pgvector_b1_exclude_50"] = latency(index, q, 1, 3, exclude=excl)
    got = index.search(q[:16], k=100)
    ref = brute.search(q[:16], k=100)
    out["agreement_with_brute_force"] = {
        "queries": 16, "k": 100, "same_ids_fraction": float((got[1] == ref[1]).mean()),
        "max_abs_score_diff": float((got[0] - ref[0]).abs().max())}
    print(f"  agreement: {out['agreement_with_brute_force']}", flush=True)
    return out


def hnsw_section(dsn: str, x: np.ndarray, q: np.ndarray, quick: bool,
                 brute: BruteForce | None = None) -> dict[str, Any]:
    n = x.shape[0]
    index = PgVectorHNSW(dsn, table="items_hnsw", build_workers=1, maintenance_work_mem="1GB")
    leader0 = backend_cpu_s(index)
    load0 = os.getloadavg()[0]
    wall = timed(lambda: index.build(None, x))
    out: dict[str, Any] = {"rows": n, "m": index.m, "ef_construction": index.ef_construction,
                           "build_workers": 1, "build_wall_s": round(wall, 2),
                           "create_index_s": index.metadata["hnsw_build_seconds"],
                           "build_leader_cpu_s": round(backend_cpu_s(index) - leader0, 1),
                           "loadavg_1min_before_after": [round(load0, 2), round(os.getloadavg()[0], 2)],
                           **table_sizes(index)}
    print(f"  hnsw build: {out}", flush=True)
    brute = brute if brute is not None else BruteForce().build(None, x)
    n_eval = min(q.shape[0], 500)
    truth = brute.search(q[:n_eval], k=100)[1]
    exact = PgVector(dsn, table="items_hnsw").refresh()      # the same table, searched by the exact scan
    out["exact_scan_same_rows"] = latency(exact, q, 1, 5)
    out["brute_force_same_rows"] = latency(brute, q, 1, 5)
    rows = []
    for ef in ([100, 400] if quick else [100, 400, 1000]):
        index.set_search_params(ef_search=ef)
        found = index.search(q[:n_eval], k=100)[1]
        found10 = index.search(q[:n_eval], k=10)[1]
        row = {"ef_search": ef, "recall_at_100": round(recall_at_k(found, truth), 4),
               "recall_at_10": round(recall_at_k(found10, truth[:, :10]), 4),
               "b1": latency(index, q, 1, 50),
               "b32": latency(index, q, 32, 3)}
        b1_runs = [200 / timed(lambda: [index.search(q[i:i + 1], k=100) for i in range(200)]) for _ in range(3)]
        row["b1_qps_median_of_3x200"] = round(statistics.median(b1_runs), 1)
        rows.append(row)
        print(f"  hnsw ef {ef}: {row}", flush=True)
    out["rows"] = rows
    out["num_eval_queries"] = n_eval
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="50k items, 1 run: a smoke test")
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--hnsw-n", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    n = 50_000 if args.quick else args.n
    hnsw_n = min(n, 20_000 if args.quick else args.hnsw_n)
    runs = 1 if args.quick else args.runs
    bin_dir = find_postgres_bin()
    if bin_dir is None:
        raise SystemExit("no PostgreSQL server binaries found; see docs/serving.md (Vector database backend).")
    started = time.time()
    mixture = index_bench.Mixture()
    x = mixture.sample(n, seed=0, popularity=True)
    q = mixture.sample(1000, seed=1, popularity=False)
    torch.set_num_threads(os.cpu_count() or 1)
    results: dict[str, Any] = {"benchmark": "vector_db", "environment": environment(), "k": 100,
                               "loadavg_at_start": [round(v, 2) for v in os.getloadavg()],
                               "server": {"bin_dir": str(bin_dir), "settings": SERVER_SETTINGS}}
    with local_postgres(settings=SERVER_SETTINGS, bin_dir=bin_dir) as dsn:
        print(f"N = {n:,}", flush=True)
        index, load = bulk_load(dsn, x, runs)
        results["server"].update(index.server_info())
        results["bulk_load"] = load
        brute = BruteForce().build(None, x)
        results["exact"] = {"rows": n, **exact_section(index, brute, q, args.quick)}
        index.close()
        if hnsw_n < n:
            del brute
            gc.collect()
            brute = None
        results["hnsw"] = hnsw_section(dsn, np.ascontiguousarray(x[:hnsw_n]), q, args.quick, brute)
    exact_b1 = results["exact"]["pgvector"][0]
    results["summary"] = {
        "n": n, "bulk_load_rows_per_s": load["rows_per_s"], "bulk_load_s": load["median_wall_s"],
        "table_total_mb": load["total_mb"], "exact_b1_latency_s": exact_b1["latency_s"],
        "exact_b1_qps": exact_b1["qps"], "brute_force_b1_qps": results["exact"]["brute_force"][0]["qps"],
        "hnsw_rows": hnsw_n, "hnsw_build_s": results["hnsw"]["build_wall_s"],
        "hnsw": [{"ef_search": r["ef_search"], "recall_at_100": r["recall_at_100"],
                  "b1_qps": r["b1_qps_median_of_3x200"]} for r in results["hnsw"]["rows"]],
    }
    results["loadavg_at_end"] = [round(v, 2) for v in os.getloadavg()]
    results["elapsed_s"] = round(time.time() - started, 1)
    if args.quick:   # smoke runs never overwrite the published results
        path = Path(tempfile.gettempdir()) / "recstack_vector_db_quick.json"
        path.write_text(__import__("json").dumps(results, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {path}")
    else:
        print(f"wrote {write_json('vector_db.json', results)}")
    print(results["summary"])


if __name__ == "__main__":
    main()
