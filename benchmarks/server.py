"""Load test of the HTTP server with wrk: a MovieLens 100K bundle and a 1M-item FAISS bundle.

Writes benchmarks/results/server.json. Run from the repository root on a quiet machine:

    RECSTACK_DATA_DIR=/path/to/ml-100k .venv/bin/python benchmarks/server.py   # ~15 min
    .venv/bin/python benchmarks/server.py --quick          # 50k FAISS items, short levels (smoke test)

What it does, and nothing else:

1. Bundles (cached under $TMPDIR/recstack-server-bench unless --rebuild):
   * MovieLens 100K (only when RECSTACK_DATA_DIR is set): ``recstack train basic-retrieval``
     then ``recstack export RUN BUNDLE`` - 1,664 titles, brute-force index, seen lists;
   * FAISS: 1M synthetic candidates (benchmarks/index.py's mixture, d=64), 20,000 users whose
     query tower is an Embedding of query vectors from the same mixture, 20 seen items per
     user, index="faiss" tuned to recall@100 >= 0.95 (export ~2.5 min).
2. Per server variant: starts the server pinned to one core (``taskset -c 0``, one torch /
   FAISS thread, one uvicorn worker) - ``recstack serve BUNDLE`` for the default settings,
   ``run_server(..., batch_window_ms=W)`` for the dynamic-batching variants on the FAISS
   bundle - and waits for /readyz.
3. Per run and concurrency level (1 / 8 / 32): waits until the machine is quiet (the other
   processes use under ``--quiet-cores`` of a core over 2 s, at most ``--max-wait`` s), warms up
   for 2 s, then ``wrk -t1 -cC`` pinned to the other core (``taskset -c 1``) sends
   ``POST /v1/recommend {"query": {"user_id": u}, "k": 10, "exclude_seen": true}`` for the
   level's seconds, rotating through 5,050 bodies (u uniform over the bundle's users, 1%
   unknown users = cold start). Records requests/s, wrk's p50/p90/p99, errors (non-2xx,
   connect, read, write, timeouts), the server's CPU (utime+stime from /proc/PID/stat before
   and after) per request, wrk's own CPU, what other processes used, and the 1-minute load.
4. Scrapes /metrics (request counts, mean dynamic batch size), stops the server, and writes
   the JSON: every run, and per level the median over runs. Everything stops by itself.

The quiet check uses the CPU the machine spent outside this benchmark over 2 s rather than
the 1-minute load average, which the benchmark's own previous level keeps above 0.5 for a
minute or more; both are recorded.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import environment, write_json  # noqa: E402
from index import Mixture  # noqa: E402

from recstack.features import FeatureSet, StringLookup  # noqa: E402
from recstack.layers import Embedding  # noqa: E402
from recstack.serving import ServingSpec, export, read_manifest  # noqa: E402

HOST = "127.0.0.1"
SERVER_CPU, CLIENT_CPU = "0", "1"
TICK = os.sysconf("SC_CLK_TCK")
CLI = "import sys; from recstack.cli.main import main; sys.exit(main())"

LUA = r"""
-- Rotates through one JSON body per line of $WRK_BODIES; prints a JSON summary at the end.
local bodies = {}
for line in io.lines(os.getenv("WRK_BODIES")) do bodies[#bodies + 1] = line end
local n = 0
local headers = {["Content-Type"] = "application/json"}
request = function()
  n = n + 1
  return wrk.format("POST", "/v1/recommend", headers, bodies[(n % #bodies) + 1])
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('WRKJSON {"requests": %d, "duration_us": %d, "non2xx": %d, "connect": %d, ' ..
    '"read": %d, "write": %d, "timeout": %d, "p50_ms": %.3f, "p90_ms": %.3f, "p99_ms": %.3f, ' ..
    '"mean_ms": %.3f, "max_ms": %.3f}\n', summary.requests, summary.duration, e.status, e.connect,
    e.read, e.write, e.timeout, latency:percentile(50) / 1000, latency:percentile(90) / 1000,
    latency:percentile(99) / 1000, latency.mean / 1000, latency.max / 1000))
end
"""


# -- bundles -----------------------------------------------------------------------------------
def build_faiss_bundle(folder: Path, n_items: int, n_users: int, seen_per_user: int,
                       rebuild: bool) -> dict[str, Any]:
    config = {"n_items": n_items, "n_users": n_users, "seen_per_user": seen_per_user, "seed": 0, "version": 1}
    timing = folder.parent / "export_s.txt"
    if folder.exists() and not rebuild:
        try:
            if read_manifest(folder)["extra"].get("bench") == config:
                print(f"reusing bundle {folder}", flush=True)
                return {"export_s": float(timing.read_text()) if timing.exists() else None, "reused": True}
        except Exception:
            pass
    mixture = Mixture()
    x = mixture.sample(n_items, seed=0, popularity=True)
    users = np.array([f"user{i}" for i in range(n_users)], dtype=object)
    query_vectors = mixture.sample(n_users, seed=3, popularity=False)
    tower = Embedding(n_users + 1, x.shape[1])
    with torch.no_grad():
        tower.weight[0] = torch.from_numpy(query_vectors.mean(0))      # OOV row: the average user
        tower.weight[1:] = torch.from_numpy(query_vectors)
    rng = np.random.default_rng(4)
    seen = pd.DataFrame({"user_id": np.repeat(users, seen_per_user),
                         "item_id": np.char.add("item", rng.integers(0, n_items, n_users * seen_per_user).astype(str))})
    t0 = time.perf_counter()
    export(ServingSpec(query_tower=tower, query_inputs="user_id"), folder,
           candidate_identifiers=np.char.add("item", np.arange(n_items).astype(str)), candidate_embeddings=x,
           candidate_key="item_id", features=FeatureSet({"user_id": StringLookup(vocabulary=users)}),
           seen=seen, seen_key="user_id", index="faiss", tune_recall=0.95, tune_k=100, overwrite=True,
           extra={"bench": config})
    elapsed = time.perf_counter() - t0
    timing.write_text(f"{elapsed:.1f}\n")          # beside the bundle: its manifest is sealed
    print(f"exported the FAISS bundle in {elapsed:.0f} s", flush=True)
    return {"export_s": round(elapsed, 1), "reused": False}


def build_movielens_bundle(root: Path, data_dir: str, rebuild: bool) -> dict[str, Any]:
    """``recstack train basic-retrieval`` + ``recstack export`` (cached by data folder)."""
    run, bundle, stamp = root / "run", root / "bundle", root / "source.json"
    source = {"config": "basic-retrieval", "data_dir": str(Path(data_dir).resolve()), "version": 1}
    if bundle.exists() and stamp.exists() and not rebuild and json.loads(stamp.read_text()) == source:
        print(f"reusing bundle {bundle}", flush=True)
        return {"reused": True, **json.loads(stamp.read_text())}
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", CLI, "train", "basic-retrieval", "--run-dir", str(run),
                    "--progress", "quiet"], check=True, stdout=subprocess.DEVNULL)
    train_s = time.perf_counter() - t0
    subprocess.run([sys.executable, "-c", CLI, "export", str(run), str(bundle)], check=True,
                   stdout=subprocess.DEVNULL)
    stamp.write_text(json.dumps(source))
    print(f"trained and exported the MovieLens bundle in {time.perf_counter() - t0:.0f} s", flush=True)
    return {"reused": False, **source, "train_s": round(train_s, 1)}


def bodies_file(path: Path, users: list[str], seed: int) -> Path:
    """5,050 request bodies: 5,000 users drawn uniformly, 50 unknown ones (1% cold start), shuffled."""
    rng = np.random.default_rng(seed)
    chosen = [users[i] for i in rng.integers(0, len(users), 5000)] + [f"newuser{i}" for i in range(50)]
    rng.shuffle(chosen)
    path.write_text("".join(json.dumps({"query": {"user_id": u}, "k": 10, "exclude_seen": True}) + "\n"
                            for u in chosen))
    return path


# -- processes and CPU -----------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def get(port: int, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://{HOST}:{port}{path}", timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def proc_cpu(pid: int) -> float:
    """utime + stime of a process, seconds."""
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def machine_busy() -> float:
    """CPU seconds the whole machine has spent busy (not idle / iowait) since boot."""
    with open("/proc/stat") as handle:
        parts = [float(v) for v in handle.readline().split()[1:]]
    return (sum(parts) - parts[3] - parts[4]) / TICK


def load_1min() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def wait_quiet(server_pid: int, quiet_cores: float, max_wait: float) -> dict[str, float]:
    """Wait until processes other than the server use under ``quiet_cores`` over 2 s."""
    start = time.monotonic()
    while True:
        m0, s0 = machine_busy(), proc_cpu(server_pid)
        time.sleep(2.0)
        others = (machine_busy() - m0 - (proc_cpu(server_pid) - s0)) / 2.0
        if others < quiet_cores or time.monotonic() - start > max_wait:
            return {"other_cores_before": round(others, 2), "load_1min_before": load_1min(),
                    "waited_s": round(time.monotonic() - start, 1)}


def run_wrk(port: int, concurrency: int, seconds: float, script: Path, bodies: Path) -> tuple[dict[str, Any], float]:
    """One wrk run pinned to the client core: (its summary, its CPU seconds)."""
    cmd = ["taskset", "-c", CLIENT_CPU, "wrk", "-t1", f"-c{concurrency}", f"-d{seconds:g}s", "--timeout", "5s",
           "-s", str(script), f"http://{HOST}:{port}/v1/recommend"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "WRK_BODIES": str(bodies)})
    out = proc.stdout.read() if proc.stdout else ""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    lines = [line for line in out.splitlines() if line.startswith("WRKJSON ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {out[-2000:]}")
    return json.loads(lines[-1].split(" ", 1)[1]), usage.ru_utime + usage.ru_stime


def measure_level(port: int, server_pid: int, concurrency: int, seconds: float, script: Path, bodies: Path,
                  quiet_cores: float, max_wait: float) -> dict[str, Any]:
    quiet = wait_quiet(server_pid, quiet_cores, max_wait)
    run_wrk(port, concurrency, 2.0, script, bodies)                     # warm-up
    m0, s0, t0 = machine_busy(), proc_cpu(server_pid), time.perf_counter()
    summary, client_cpu = run_wrk(port, concurrency, seconds, script, bodies)
    wall = time.perf_counter() - t0
    server_cpu = proc_cpu(server_pid) - s0
    machine = machine_busy() - m0
    requests = int(summary["requests"])
    errors = sum(int(summary[key]) for key in ("non2xx", "connect", "read", "write", "timeout"))
    return {"concurrency": concurrency, "seconds": round(summary["duration_us"] / 1e6, 2), "requests": requests,
            "throughput_rps": round(requests / (summary["duration_us"] / 1e6), 1),
            "latency_ms": {k: round(summary[f"{k}_ms"], 3) for k in ("p50", "p90", "p99", "mean", "max")},
            "errors": errors, "error_kinds": {k: summary[k] for k in ("non2xx", "connect", "read", "write", "timeout")},
            "server_cpu_s": round(server_cpu, 2),
            "server_cpu_ms_per_request": round(1000 * server_cpu / max(1, requests), 3),
            "load_generator_cpu_s": round(client_cpu, 2),
            "other_processes_cores": round((machine - server_cpu - client_cpu) / wall, 2), **quiet}


def start_server(bundle: Path, port: int, batch_window_ms: float | None) -> tuple[subprocess.Popen[bytes], float]:
    if batch_window_ms is None:     # the command line, default settings
        cmd = [sys.executable, "-c", CLI, "serve", str(bundle), "--port", str(port)]
    else:                           # dynamic batching: ServerSettings.batch_window_ms
        cmd = [sys.executable, "-c", "from recstack.serving.server import run_server; "
               f"run_server({str(bundle)!r}, host={HOST!r}, port={port}, log_level='warning', "
               f"batch_window_ms={batch_window_ms!r})"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    start = time.perf_counter()
    server = subprocess.Popen(["taskset", "-c", SERVER_CPU, *cmd], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while True:
        try:
            if get(port, "/readyz", timeout=2)[0] == 200:
                return server, time.perf_counter() - start
        except OSError:
            pass
        if server.poll() is not None or time.monotonic() > deadline:
            server.kill()
            raise RuntimeError(f"the server for {bundle} did not become ready")
        time.sleep(0.25)


def stop(server: subprocess.Popen[bytes]) -> None:
    server.terminate()
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


def median_levels(runs: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Per concurrency level, the median over runs of each figure (errors: the total)."""
    out = []
    for rows in zip(*runs):
        med = lambda f: round(statistics.median(f(r) for r in rows), 3)  # noqa: E731
        out.append({"concurrency": rows[0]["concurrency"], "runs": len(rows),
                    "throughput_rps": med(lambda r: r["throughput_rps"]),
                    "latency_ms": {k: med(lambda r, k=k: r["latency_ms"][k]) for k in ("p50", "p90", "p99")},
                    "errors": sum(r["errors"] for r in rows),
                    "server_cpu_ms_per_request": med(lambda r: r["server_cpu_ms_per_request"]),
                    "other_processes_cores": med(lambda r: r["other_processes_cores"]),
                    "load_1min_before": med(lambda r: r["load_1min_before"])})
    return out


def bench_variant(name: str, bundle: Path, batch_window_ms: float | None, levels: list[int], runs: int,
                  seconds: float, script: Path, bodies: Path, args: argparse.Namespace) -> dict[str, Any]:
    port = free_port()
    server, ready_s = start_server(bundle, port, batch_window_ms)
    all_runs: list[list[dict[str, Any]]] = []
    try:
        check = json.loads(urllib.request.urlopen(urllib.request.Request(
            f"http://{HOST}:{port}/v1/recommend", data=bodies.read_text().splitlines()[0].encode(), method="POST",
            headers={"content-type": "application/json"}), timeout=10).read())
        assert len(check["results"][0]["items"]) == 10, check
        for run in range(runs):
            rows = []
            for c in levels:
                row = measure_level(port, server.pid, c, seconds, script, bodies, args.quiet_cores, args.max_wait)
                rows.append(row)
                print(f"{name:<24} run {run + 1} c={c:<3} {row['throughput_rps']:8.1f} req/s  "
                      f"p50 {row['latency_ms']['p50']:6.2f}  p90 {row['latency_ms']['p90']:6.2f}  "
                      f"p99 {row['latency_ms']['p99']:6.2f} ms  errors {row['errors']}  "
                      f"server CPU {row['server_cpu_ms_per_request']:.3f} ms/req  "
                      f"others {row['other_processes_cores']:.2f} cores", flush=True)
            all_runs.append(rows)
        _, metrics = get(port, "/metrics")
    finally:
        stop(server)
    lines = metrics.decode().splitlines()
    batch = {}
    for line in lines:
        if line.startswith("recstack_recommend_batch_queries_sum"):
            batch["queries"] = float(line.split()[-1])
        elif line.startswith("recstack_recommend_batch_queries_count"):
            batch["batches"] = float(line.split()[-1])
    return {"name": name, "batch_window_ms": batch_window_ms, "start_to_ready_s": round(ready_s, 2),
            "median": median_levels(all_runs), "runs": all_runs,
            "mean_batch_queries": round(batch["queries"] / batch["batches"], 2) if batch.get("batches") else None,
            "server_metrics": [line for line in lines if line.startswith(
                ("recstack_http_requests_total", "recstack_http_errors_total", "recstack_queries_total"))]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="50k FAISS items, 3 s levels, one run (smoke test)")
    parser.add_argument("--levels", default="1,8,32", help="concurrency levels")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per level")
    parser.add_argument("--runs", type=int, default=3, help="runs of every level (medians are reported)")
    parser.add_argument("--batch-windows", default="0,2", help="batch_window_ms values tried on the FAISS bundle")
    parser.add_argument("--quiet-cores", type=float, default=0.3,
                        help="before a level, wait until other processes use less than this many cores")
    parser.add_argument("--max-wait", type=float, default=180.0, help="longest wait for a quiet machine (s)")
    parser.add_argument("--only", choices=["movielens", "faiss"], help="one bundle only")
    parser.add_argument("--out", help="write here instead of benchmarks/results/server.json")
    parser.add_argument("--rebuild", action="store_true", help="rebuild the bundles")
    parser.add_argument("--baseline", help="a results file of this benchmark run on earlier code: its medians "
                                           "are kept under 'baseline' (with --baseline-label saying which code)")
    parser.add_argument("--baseline-label", default="", help="what --baseline measured, e.g. a commit")
    args = parser.parse_args()
    if shutil.which("wrk") is None or shutil.which("taskset") is None:
        sys.exit("this benchmark needs wrk and taskset (apt-get install wrk util-linux)")
    quick = args.quick
    n_items = 50_000 if quick else 1_000_000
    seconds, runs = (3.0, 1) if quick else (args.seconds, args.runs)
    levels = [int(v) for v in args.levels.split(",")]
    windows = [float(v) for v in args.batch_windows.split(",") if v.strip()]
    root = Path(tempfile.gettempdir()) / "recstack-server-bench"
    root.mkdir(exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="recstack-wrk-"))
    script = work / "post.lua"
    script.write_text(LUA)
    results: dict[str, Any] = {
        "benchmark": "server", "environment": environment(),
        "layout": {"server_cpus": SERVER_CPU, "load_generator_cpus": CLIENT_CPU, "load_generator": "wrk -t1",
                   "server": "one uvicorn worker, one torch/FAISS intra-op thread, OMP_NUM_THREADS=1",
                   "host": HOST},
        "request": {"path": "/v1/recommend", "k": 10, "exclude_seen": True, "bodies": 5050,
                    "cold_start_share": round(50 / 5050, 4)},
        "protocol": {"levels": levels, "seconds_per_level": seconds, "warmup_s": 2.0, "runs": runs,
                     "quiet_cores": args.quiet_cores, "median_over_runs": True},
        "bundles": {}}
    try:
        data_dir = os.environ.get("RECSTACK_DATA_DIR")
        if args.only != "faiss":
            if data_dir:
                info = build_movielens_bundle(root / "movielens", data_dir, args.rebuild)
                bundle = root / "movielens" / "bundle"
                manifest = read_manifest(bundle)
                users = [str(u) for u in range(1, manifest["seen"]["num_keys"] + 1)]
                bodies = bodies_file(work / "ml_bodies.txt", users, seed=5)
                results["bundles"]["movielens-100k"] = {
                    "built_with": "recstack train basic-retrieval; recstack export RUN BUNDLE", **info,
                    "num_candidates": manifest["num_candidates"], "embedding_dim": manifest["embedding_dim"],
                    "index": manifest["index"]["kind"], "num_users": len(users),
                    "variants": [bench_variant("movielens-100k", bundle, None, levels, runs, seconds, script,
                                               bodies, args)]}
            else:
                print("RECSTACK_DATA_DIR is not set: skipping the MovieLens 100K bundle", flush=True)
        if args.only != "movielens":
            folder = root / ("faiss-quick" if quick else "faiss") / "bundle"
            folder.parent.mkdir(exist_ok=True)
            info = build_faiss_bundle(folder, n_items, 20_000, 20, args.rebuild)
            manifest = read_manifest(folder)
            bodies = bodies_file(work / "faiss_bodies.txt", [f"user{i}" for i in range(20_000)], seed=5)
            variants = [bench_variant(f"faiss-{n_items // 1000}k" + ("" if w is None else f"-batch{w:g}ms"), folder,
                                      w, levels, runs, seconds, script, bodies, args) for w in [None, *windows]]
            results["bundles"][f"faiss-{n_items // 1000}k"] = {
                **info, "num_candidates": manifest["num_candidates"], "embedding_dim": manifest["embedding_dim"],
                "index": manifest["index"]["kind"], "index_params": manifest["index"]["params"],
                "tuned_recall_at_100": manifest["index"]["recall"], "num_users": 20_000, "seen_per_user": 20,
                "size_mb": round(sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 1e6, 1),
                "variants": variants}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.baseline:
        earlier = json.loads(Path(args.baseline).read_text())
        results["baseline"] = {"code": args.baseline_label, "protocol": earlier.get("protocol"),
                               "median": {v["name"]: v["median"] for b in earlier["bundles"].values()
                                          for v in b["variants"]}}
    if args.out or quick:
        path = Path(args.out) if args.out else Path(tempfile.gettempdir()) / "recstack_server_quick.json"
        path.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    else:
        path = write_json("server.json", results)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
