"""Bounded load test of the HTTP server on loopback, serving a 1M-item FAISS bundle.

Writes benchmarks/results/server.json. Run from the repository root:

    nice -n 19 .venv/bin/python benchmarks/server.py              # ~6 min (bundle export ~2 min)
    nice -n 19 .venv/bin/python benchmarks/server.py --quick      # 50k items, short levels

What it does, and nothing else:

1. Exports a bundle (cached under $TMPDIR/recstack-server-bench unless --rebuild): 1M
   synthetic candidates (benchmarks/index.py's mixture, d=64), 20,000 users whose query
   tower is an Embedding holding query vectors from the same mixture, 20 seen items per
   user (exclude_seen), index="faiss" tuned to recall@100 >= 0.95 on the users' embeddings.
2. Starts ``run_server(bundle, host="127.0.0.1", port=<free port>, workers=1)`` as a
   subprocess (nice 19), waits for /readyz.
3. For each concurrency level, C keep-alive connections on 127.0.0.1 send
   ``POST /v1/recommend {"query": {"user_id": u}, "k": 10, "exclude_seen": true}`` back to
   back (u uniform over the users, 1% unknown users = cold start) for a fixed time after a
   short warm-up; latency is client-side, request write to last response byte.
4. Scrapes /metrics, stops the server, writes the JSON. Everything stops by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
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


def build_bundle(folder: Path, n_items: int, n_users: int, seen_per_user: int, rebuild: bool) -> dict[str, Any]:
    config = {"n_items": n_items, "n_users": n_users, "seen_per_user": seen_per_user, "seed": 0, "version": 1}
    if folder.exists() and not rebuild:
        try:
            manifest = read_manifest(folder)
            if manifest["extra"].get("bench") == config:
                print(f"reusing bundle {folder}", flush=True)
                return {"export_s": manifest["extra"].get("export_s"), "reused": True}
        except Exception:
            pass
    mixture = Mixture()
    x = mixture.sample(n_items, seed=0, popularity=True)
    users = np.array([f"user{i}" for i in range(n_users)], dtype=object)
    query_vectors = mixture.sample(n_users, seed=3, popularity=False)
    lookup = StringLookup(vocabulary=users)
    tower = Embedding(n_users + 1, x.shape[1])
    with torch.no_grad():
        tower.weight[0] = torch.from_numpy(query_vectors.mean(0))      # OOV row: the average user
        tower.weight[1:] = torch.from_numpy(query_vectors)
    rng = np.random.default_rng(4)
    seen = pd.DataFrame({"user_id": np.repeat(users, seen_per_user),
                         "item_id": np.char.add("item", rng.integers(0, n_items, n_users * seen_per_user).astype(str))})
    spec = ServingSpec(query_tower=tower, query_inputs="user_id")
    t0 = time.perf_counter()
    export(spec, folder, candidate_identifiers=np.char.add("item", np.arange(n_items).astype(str)),
           candidate_embeddings=x, candidate_key="item_id", features=FeatureSet({"user_id": lookup}),
           seen=seen, seen_key="user_id", index="faiss", tune_recall=0.95, tune_k=100, overwrite=True,
           extra={"bench": config})
    elapsed = time.perf_counter() - t0
    # Record the export time in the manifest's sibling file (the manifest itself is sealed).
    (folder.parent / "export_s.txt").write_text(f"{elapsed:.1f}\n")
    print(f"exported bundle in {elapsed:.0f} s", flush=True)
    return {"export_s": round(elapsed, 1), "reused": False}


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


async def _client(port: int, bodies: list[bytes], stop_at: float, record: bool, lat: list[float],
                  statuses: dict[int, int], seed: int) -> None:
    rng = np.random.default_rng(seed)
    reader = writer = None
    while time.perf_counter() < stop_at:
        body = bodies[int(rng.integers(len(bodies)))]
        request = (b"POST /v1/recommend HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                   b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        t0 = time.perf_counter()
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection(HOST, port)
            writer.write(request)
            await writer.drain()
            status = int((await reader.readline()).split()[1])
            length = 0
            while True:
                line = await reader.readline()
                if line in (b"\r\n", b""):
                    break
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            await reader.readexactly(length)
        except (OSError, asyncio.IncompleteReadError, ValueError, IndexError):
            status = -1                                        # connection error
            if writer is not None:
                writer.close()
            reader = writer = None
        if record:
            lat.append(time.perf_counter() - t0)
            statuses[status] = statuses.get(status, 0) + 1
    if writer is not None:
        writer.close()


def _proc_cpu(pid: int) -> float:
    """utime + stime of a process, seconds."""
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _level(port: int, bodies: list[bytes], concurrency: int, seconds: float, warmup: float,
                 server_pid: int) -> dict[str, Any]:
    lat: list[float] = []
    statuses: dict[int, int] = {}
    now = time.perf_counter()
    await asyncio.gather(*[_client(port, bodies, now + warmup, False, lat, statuses, 100 + i)
                           for i in range(concurrency)])
    start = time.perf_counter()
    cpu0 = time.process_time()
    server0 = _proc_cpu(server_pid)
    await asyncio.gather(*[_client(port, bodies, start + seconds, True, lat, statuses, 200 + i)
                           for i in range(concurrency)])
    wall = time.perf_counter() - start
    server_cpu = _proc_cpu(server_pid) - server0
    ms = np.array(lat) * 1000
    errors = sum(v for k, v in statuses.items() if k != 200)
    return {"concurrency": concurrency, "seconds": round(wall, 2), "requests": int(ms.shape[0]),
            "throughput_rps": round(ms.shape[0] / wall, 1),
            "latency_ms": {"p50": round(float(np.percentile(ms, 50)), 2), "p95": round(float(np.percentile(ms, 95)), 2),
                           "p99": round(float(np.percentile(ms, 99)), 2), "max": round(float(ms.max()), 2),
                           "mean": round(float(ms.mean()), 2)},
            "errors": int(errors), "statuses": {str(k): v for k, v in sorted(statuses.items())},
            "load_generator_cpu_s": round(time.process_time() - cpu0, 2),
            "server_cpu_s": round(server_cpu, 2),
            "server_cpu_ms_per_request": round(1000 * server_cpu / max(1, ms.shape[0]), 3)}


def _busy_cores(seconds: float) -> float:
    """CPU cores in use on the machine (everything) over ``seconds``, before the test."""
    def read() -> float:
        with open("/proc/stat") as handle:
            parts = [float(v) for v in handle.readline().split()[1:]]
        return (sum(parts) - parts[3] - parts[4]) / os.sysconf("SC_CLK_TCK")
    a = read()
    time.sleep(seconds)
    return (read() - a) / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="50k items, 5 s levels (smoke test)")
    parser.add_argument("--levels", default="1,2,4,8", help="concurrency levels")
    parser.add_argument("--seconds", type=float, default=25.0, help="measured seconds per level")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--rebuild", action="store_true", help="re-export the bundle")
    args = parser.parse_args()
    n_items = 50_000 if args.quick else 1_000_000
    seconds = 5.0 if args.quick else args.seconds
    levels = [int(v) for v in args.levels.split(",")]
    root = Path(tempfile.gettempdir()) / ("recstack-server-bench-quick" if args.quick else "recstack-server-bench")
    root.mkdir(exist_ok=True)
    bundle = root / "bundle"
    export_info = build_bundle(bundle, n_items, 20_000, 20, args.rebuild)
    if export_info.get("reused") and (root / "export_s.txt").exists():
        export_info["export_s"] = float((root / "export_s.txt").read_text())
    manifest = read_manifest(bundle)
    size_mb = sum(p.stat().st_size for p in bundle.rglob("*") if p.is_file()) / 1e6

    rng = np.random.default_rng(5)
    users = [f"user{i}" for i in rng.integers(0, 20_000, 5000)] + [f"newuser{i}" for i in range(50)]
    bodies = [json.dumps({"query": {"user_id": u}, "k": 10, "exclude_seen": True}).encode() for u in users]

    port = free_port()
    code = ("import logging; from recstack.serving.server import run_server; "
            f"run_server({str(bundle)!r}, host={HOST!r}, port={port}, workers={args.workers}, log_level='warning')")
    start = time.perf_counter()
    server = subprocess.Popen(["nice", "-n", "19", sys.executable, "-c", code])
    results: dict[str, Any] = {"benchmark": "server", "environment": environment()}
    try:
        deadline = time.monotonic() + 300
        while True:
            try:
                status, body = get(port, "/readyz", timeout=2)
                if status == 200:
                    break
            except OSError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the server did not become ready")
            time.sleep(0.25)
        ready_s = time.perf_counter() - start
        check = json.loads(urllib.request.urlopen(urllib.request.Request(
            f"http://{HOST}:{port}/v1/recommend", data=bodies[0], method="POST",
            headers={"content-type": "application/json"}), timeout=10).read())
        assert len(check["results"][0]["items"]) == 10 and check["index"] == "faiss_ivf"
        busy_before = _busy_cores(3.0)
        runs = []
        for c in levels:
            row = asyncio.run(_level(port, bodies, c, seconds, warmup=3.0, server_pid=server.pid))
            runs.append(row)
            print(f"concurrency {c:>3}: {row['throughput_rps']:8.1f} req/s  p50 {row['latency_ms']['p50']:6.2f} ms  "
                  f"p95 {row['latency_ms']['p95']:6.2f}  p99 {row['latency_ms']['p99']:6.2f}  "
                  f"errors {row['errors']}  server CPU {row['server_cpu_ms_per_request']:.2f} ms/req", flush=True)
        _, metrics = get(port, "/metrics")
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
    metric_lines = [line for line in metrics.decode().splitlines()
                    if line.startswith(("recstack_http_requests_total", "recstack_http_errors_total",
                                        "recstack_queries_total", "recstack_http_request_duration_seconds_count"))]
    results.update({
        "bundle": {"num_candidates": manifest["num_candidates"], "embedding_dim": manifest["embedding_dim"],
                   "index": manifest["index"]["kind"], "index_params": manifest["index"]["params"],
                   "tuned_recall_at_100": manifest["index"]["recall"], "size_mb": round(size_mb, 1),
                   "num_users": 20_000, "seen_per_user": 20, **export_info},
        "server": {"workers": args.workers, "threads_per_worker": 1, "host": HOST,
                   "start_to_ready_s": round(ready_s, 2), "nice": 19},
        "request": {"path": "/v1/recommend", "k": 10, "exclude_seen": True, "cold_start_share": round(50 / 5050, 4)},
        "machine_busy_cores_before": round(busy_before, 2),
        "levels": runs,
        "highest_level": runs[-1] if runs else None,
        "server_metrics": metric_lines,
    })
    if args.quick:
        path = Path(tempfile.gettempdir()) / "recstack_server_quick.json"
        path.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {path}")
    else:
        print(f"wrote {write_json('server.json', results)}")
    if args.rebuild and not args.quick:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
