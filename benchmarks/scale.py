"""How recstack's cost grows with data size: training, full-catalogue evaluation, index builds.

Writes benchmarks/results/scale.json and benchmarks/results/scale.png. Run from the
repository root on an otherwise idle machine:

    nice -n 5 .venv/bin/python benchmarks/scale.py            # 1M/100k, 3M/300k, 10M/1M (~15 min, 2 cores)
    nice -n 5 .venv/bin/python benchmarks/scale.py --quick    # 100k/10k, 300k/30k, 1M/100k (smoke test)
    .venv/bin/python benchmarks/scale.py --sizes 2e6:2e5,4e6:4e5   # any (interactions:items) list

Data (vectorised numpy, fixed seed, no downloads; see :func:`generate`):
users = interactions / 20; each user gets 1 + a multinomial share of the remaining
interactions with lognormal(0, sigma=1.0) weights (heavy-tailed history lengths, mean 20,
at least 1); items are drawn i.i.d. from a Zipf law over popularity ranks,
p(rank r) ∝ (r + 1)^-1.0, with ranks mapped to item ids by a seeded permutation. The
20,000 held-out (user, item) rows pick users in proportion to their activity and items
from the same Zipf law. Users and items are independent (this is a cost benchmark: the
top-k accuracies it reports are popularity-level sanity checks, not model quality).

Per size, in a fresh subprocess (so that ``getrusage(RUSAGE_SELF).ru_maxrss`` is that
size's peak): a two-tower model with user and item ``Embedding(n, 32, sparse=True)``,
``Retrieval()`` without metrics, ``deduplicate_candidates=True``, ``Adagrad(lr=0.05,
fused=False)``; one shuffled epoch at batch 8192 with ``torch.set_num_threads(2)``
(``epoch_seconds`` / ``examples_per_second`` from the fit history); then FactorizedTopK
over every item's embedding for the 20,000 held-out rows (ks 10 and 100, queries in
batches of 4096); then ``BruteForce().build`` and ``FaissIVF(nlist = 4 sqrt(items) as a
power of two, k-means on a 50 x nlist sample).build`` over all item embeddings (2
threads). A torch.profiler record of 3 training steps per size names what a step
spends its time on.

Two processes: the same training (sparse gradients, non-fused Adagrad) with 2 gloo ranks
(torch.multiprocessing.spawn, one torch thread each, global batch 8192 sharded 4096 + 4096
by ``model.fit``; each rank scores its 4096 queries against the distinct items of the whole
global batch, and the ranks' sparse (row, value) gradient pairs are gathered and summed);
each rank generates the same data from the seed. Reported: rank 0's ``epoch_seconds``,
each rank's peak RSS. ``--dense-sizes`` adds a 1- vs 2-process comparison with dense
embedding gradients (``sparse=False``, fused Adagrad, all-reduce of both whole tables).

Timing on a shared machine: every child waits until other jobs use < 0.25 cores, records
the load average before and after, its own CPU seconds and the CPU other processes used
meanwhile (``foreign_cores_during``); a child during which they used >= 0.25 cores is
run again (at most twice; the least contended attempt is kept, the others are listed
under ``discarded_attempts``). ``median_step_epoch_seconds`` (median step time x steps) is
the epoch time without bursts of contention, fitted next to the wall ``epoch_seconds``.
The machine's speed also drifts without any visible foreign CPU (the same step varies by
up to ~1.7x over minutes), hence the interleaved measurement below.

Interleaved step cost: one more child holds every size's data and model and trains them
in alternating blocks of 10 steps (10 rounds), so that a drift of the shared machine's
speed over the minutes between the per-size runs cannot pose as growth; its median step
time x steps per epoch is a second estimate of the epoch cost.

Growth exponents: least-squares slope of log(cost) on log(size) over the sizes run. Why
the training exponent can exceed 1: a step scores 8192 queries against the batch's
*distinct* items (deduplicate_candidates), and under a Zipf law the number of distinct
items in 8192 draws grows slowly with the catalogue (``distinct_items_per_batch``);
``ns_per_logit`` (step time / (8192 x distinct items)) separates that from everything else.
It is bounded: at most 8192 distinct items, the cost of the undeduplicated softmax.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _common import RESULTS, environment, write_json  # noqa: E402

GEN = {
    "seed": 0,
    "interactions_per_user": 20,
    "history_length": "1 + multinomial(interactions - users, lognormal(0, 1.0) weights)",
    "history_lognormal_sigma": 1.0,
    "item_popularity": "Zipf over ranks: p(r) ∝ (r + 1)^-a, ranks -> ids by a seeded permutation",
    "zipf_exponent": 1.0,
    "held_out_rows": 20_000,
    "held_out": "users in proportion to activity (a random training row's user), items from the same Zipf law",
}
MODEL = {"embedding_dim": 32, "batch_size": 8192, "optimizer": "Adagrad(lr=0.05, fused=False) on sparse gradients",
         "task": "Retrieval() (no metrics, loss reduction sum)", "deduplicate_candidates": True, "epochs": 1,
         "eval_ks": [10, 100], "eval_query_batch": 4096}
FULL_SIZES = [(1_000_000, 100_000), (3_000_000, 300_000), (10_000_000, 1_000_000)]
QUICK_SIZES = [(100_000, 10_000), (300_000, 30_000), (1_000_000, 100_000)]


# ------------------------------------------------------------------------------------------
# Synthetic data
# ------------------------------------------------------------------------------------------
def generate(interactions: int, items: int, seed: int = GEN["seed"],
             held_out: int = GEN["held_out_rows"]) -> dict[str, Any]:
    """Training and held-out (user, item) int64 arrays; no per-row Python.

    Peak extra memory beyond the two output columns is one 1M-row chunk of floats.
    """
    rng = np.random.default_rng(seed)
    users = max(1, interactions // GEN["interactions_per_user"])
    weights = rng.lognormal(0.0, GEN["history_lognormal_sigma"], users)
    weights /= weights.sum()
    lengths = 1 + rng.multinomial(interactions - users, weights)
    del weights
    user = np.repeat(np.arange(users, dtype=np.int64), lengths)
    ranks = np.arange(1, items + 1, dtype=np.float64) ** -GEN["zipf_exponent"]
    cdf = np.cumsum(ranks)
    cdf /= cdf[-1]
    del ranks
    ids = rng.permutation(items).astype(np.int64)   # popularity rank -> item id

    def draw(n: int) -> np.ndarray:
        out = np.empty(n, dtype=np.int64)
        for start in range(0, n, 1 << 20):
            stop = min(n, start + (1 << 20))
            rank = np.searchsorted(cdf, rng.random(stop - start), side="right")
            out[start:stop] = ids[np.minimum(rank, items - 1)]
        return out

    item = draw(interactions)
    eval_user = user[rng.integers(0, interactions, held_out)]
    eval_item = draw(held_out)
    q = np.quantile(lengths, [0.5, 0.9, 0.99])
    top1 = 1.0 / cdf.shape[0] if items == 0 else float(cdf[0])
    return {
        "user": user, "item": item, "eval_user": eval_user, "eval_item": eval_item, "users": users,
        "stats": {"users": users, "items": items, "interactions": interactions,
                  "history_length_median_p90_p99_max": [float(q[0]), float(q[1]), float(q[2]),
                                                        int(lengths.max())],
                  "most_popular_item_share": round(top1, 5),
                  "items_seen_in_training": int(np.count_nonzero(np.bincount(item, minlength=items)))},
    }


# ------------------------------------------------------------------------------------------
# Measurement helpers
# ------------------------------------------------------------------------------------------
def peak_rss_mib() -> float:
    """Peak resident set of this process so far (ru_maxrss is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_mib() -> float:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def cpu_busy() -> float:
    """Busy CPU-seconds of the whole machine so far (/proc/stat)."""
    with open("/proc/stat") as handle:
        parts = [float(v) for v in handle.readline().split()[1:]]
    return (sum(parts) - parts[3] - (parts[4] if len(parts) > 4 else 0.0)) / os.sysconf("SC_CLK_TCK")


def build_model(users: int, items: int, sparse: bool):
    import torch

    from recstack.layers import Embedding
    from recstack.models.two_tower import TwoTowerRetrieval
    from recstack.tasks import Retrieval

    torch.manual_seed(0)
    d = MODEL["embedding_dim"]
    return TwoTowerRetrieval(Embedding(users, d, sparse=sparse), Embedding(items, d, sparse=sparse), Retrieval(),
                             "user", "item", candidate_id="item", train_metrics=False,
                             deduplicate_candidates=True)


def optimizer_for(sparse: bool):
    from recstack.training.optimizers import Adagrad

    return lambda params: Adagrad(params, lr=0.05, fused=not sparse)


def train_epoch(model, data, sparse: bool) -> dict[str, Any]:
    """One epoch of ``model.fit``; its history's wall seconds plus per-step wall times.

    ``median_step_epoch_seconds`` = median step time x steps: the epoch time without the
    bursts in which other jobs on this shared machine took a core (a 2-thread step slows
    down several-fold when one of its threads is descheduled).
    """
    from recstack.training.callbacks import Callback

    class StepTimes(Callback):
        def __init__(self) -> None:
            self.times: list[float] = []

        def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            self.times.append(time.perf_counter())

        def on_train_batch_end(self, step: int, logs: dict[str, Any] | None = None) -> None:
            self.times.append(time.perf_counter())

    timer = StepTimes()
    cpu0 = time.process_time()
    history = model.fit(data, epochs=1, batch_size=MODEL["batch_size"], optimizer=optimizer_for(sparse),
                        seed=1, verbose=False, callbacks=[timer])
    cpu = time.process_time() - cpu0
    logs = history.last()
    steps = np.diff(np.array(timer.times))
    full = steps[:-1] if steps.shape[0] > 1 else steps           # the last batch may be short
    median = float(np.median(full))
    return {"epoch_seconds": float(logs["epoch_seconds"]), "examples_per_second": float(logs["examples_per_second"]),
            "loss": float(logs["loss"]), "process_cpu_seconds": round(cpu, 2),
            "step_seconds_median_p10_p90": [round(median, 4), round(float(np.quantile(full, 0.1)), 4),
                                            round(float(np.quantile(full, 0.9)), 4)],
            "median_step_epoch_seconds": round(median * steps.shape[0], 2),
            "step_seconds_by_tenth_of_epoch": [round(float(part.mean()), 4) for part in np.array_split(full, 10)
                                               if part.shape[0]]}


def distinct_per_batch(item: np.ndarray, batches: int = 20) -> float:
    """Mean number of distinct items in a shuffled batch of 8192 rows (the loss's logit columns)."""
    rng = np.random.default_rng(11)
    size = min(MODEL["batch_size"], item.shape[0])
    return float(np.mean([np.unique(item[rng.integers(0, item.shape[0], size)]).shape[0]
                          for _ in range(batches)]))


def profile_steps(model, data, steps: int = 3) -> dict[str, Any]:
    """Self-CPU time of the top operators over ``steps`` training steps (after 1 warm-up step)."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    opt = model.optimizer
    order = torch.randperm(data.num_rows, generator=torch.Generator().manual_seed(7))
    batches = data.batches(MODEL["batch_size"], order=order[: (steps + 1) * MODEL["batch_size"]])

    def step(batch):
        opt.zero_grad(set_to_none=True)
        loss = model.compute_loss(batch, training=True)
        loss.backward()
        opt.step()

    model.train()
    step(next(batches))
    t0 = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step(next(batches))
    wall = time.perf_counter() - t0
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events) or 1.0
    top = [{"op": e.key, "self_cpu_ms_per_step": round(e.self_cpu_time_total / 1000 / steps, 2),
            "share": round(e.self_cpu_time_total / total, 3), "calls_per_step": e.count // steps}
           for e in events[:12]]
    return {"steps": steps, "wall_seconds_per_step_profiled": round(wall / steps, 4), "top_ops": top}


# ------------------------------------------------------------------------------------------
# Workers (each runs in its own process)
# ------------------------------------------------------------------------------------------
def single_worker(interactions: int, items: int, sparse: bool, full: bool) -> dict[str, Any]:
    """One process, 2 threads: train one epoch; with ``full`` also evaluate, build indexes, profile."""
    import torch

    torch.set_num_threads(2)
    from recstack import Columns

    out: dict[str, Any] = {"interactions": interactions, "items": items, "sparse_gradients": sparse}
    t0 = time.perf_counter()
    gen = generate(interactions, items)
    out["generate_seconds"] = round(time.perf_counter() - t0, 3)
    out["data"] = gen["stats"]
    data = Columns({"user": gen["user"], "item": gen["item"]})
    out["rss_after_data_mib"] = round(rss_mib(), 1)
    model = build_model(gen["users"], items, sparse)
    out["train"] = train_epoch(model, data, sparse)
    out["train"]["steps"] = math.ceil(interactions / MODEL["batch_size"])
    out["train"]["seconds_per_step"] = out["train"]["epoch_seconds"] / out["train"]["steps"]
    distinct = distinct_per_batch(gen["item"])
    out["train"]["distinct_items_per_batch"] = distinct
    # The in-batch softmax scores 8192 queries against the batch's distinct items: cost per logit.
    out["train"]["ns_per_logit"] = round(1e9 * out["train"]["seconds_per_step"] / (MODEL["batch_size"] * distinct), 3)
    out["peak_rss_after_training_mib"] = round(peak_rss_mib(), 1)
    print(f"  [{interactions:,}/{items:,} sparse={sparse}] epoch {out['train']['epoch_seconds']:.1f} s "
          f"({out['train']['examples_per_second']:,.0f} ex/s), peak RSS {out['peak_rss_after_training_mib']:.0f} MiB",
          file=sys.stderr, flush=True)
    if not full:
        return out

    from recstack.index import BruteForce, FaissIVF
    from recstack.index.faiss_index import default_nlist
    from recstack.metrics import FactorizedTopK

    model.eval()
    with torch.no_grad():
        eval_user = torch.from_numpy(gen["eval_user"])
        eval_item = torch.from_numpy(gen["eval_item"])
        t0 = time.perf_counter()
        candidates = model.candidate_tower.weight.detach()
        metric = FactorizedTopK(candidates, torch.arange(items), ks=MODEL["eval_ks"])
        for start in range(0, eval_user.shape[0], MODEL["eval_query_batch"]):
            u = eval_user[start:start + MODEL["eval_query_batch"]]
            i = eval_item[start:start + MODEL["eval_query_batch"]]
            metric.update_state(model.query_tower(u), model.candidate_tower(i), true_candidate_ids=i)
        result = metric.result()
        seconds = time.perf_counter() - t0
    queries = int(eval_user.shape[0])
    out["evaluation"] = {
        "queries": queries, "catalogue": items, "seconds": round(seconds, 3),
        "ms_per_query": round(1000 * seconds / queries, 4),
        "ns_per_query_item": round(1e9 * seconds / (queries * items), 4),
        "metrics": {k: round(float(v), 5) for k, v in result.items()},
    }
    print(f"  [{interactions:,}/{items:,}] evaluation {seconds:.1f} s", file=sys.stderr, flush=True)

    embeddings = candidates.numpy().copy()
    ids = np.arange(items, dtype=np.int64)
    t0 = time.perf_counter()
    BruteForce().build(ids, embeddings)
    brute = time.perf_counter() - t0
    nlist = default_nlist(items)
    faiss_index = FaissIVF(nlist=nlist, num_threads=2)
    t0 = time.perf_counter()
    faiss_index.build(ids, embeddings)
    ivf = time.perf_counter() - t0
    out["index_build"] = {"brute_force_seconds": round(brute, 4), "faiss_ivf_seconds": round(ivf, 3),
                          "faiss_nlist": nlist, "faiss_train_size": int(faiss_index.metadata["train_size"])}
    del faiss_index
    print(f"  [{interactions:,}/{items:,}] index build: brute {brute:.3f} s, faiss IVF{nlist} {ivf:.1f} s",
          file=sys.stderr, flush=True)
    out["profile"] = profile_steps(model, data)
    out["peak_rss_mib"] = round(peak_rss_mib(), 1)
    return out


def interleaved_worker(sizes: list[tuple[int, int]], rounds: int = 10, block: int = 10) -> dict[str, Any]:
    """All sizes' models in one process, training in alternating blocks of ``block`` steps.

    Any drift of the machine's speed then hits every size alike: the per-step cost ratio
    between sizes is measured under the same conditions (the epoch-long runs of the other
    children take minutes apart). Returns the median step seconds per size and the epoch
    estimate median x steps.
    """
    import torch

    torch.set_num_threads(2)
    from recstack import Columns

    setups = []
    for interactions, items in sizes:
        gen = generate(interactions, items)
        data = Columns({"user": gen["user"], "item": gen["item"]})
        model = build_model(gen["users"], items, True)
        opt = optimizer_for(True)(model.parameters())

        def batches(data=data, rows=interactions):   # full batches, reshuffled when exhausted
            for seed in range(1, 1 << 30):
                order = torch.randperm(rows, generator=torch.Generator().manual_seed(seed))
                yield from data.batches(min(MODEL["batch_size"], rows), order=order, drop_remainder=True)

        setups.append({"interactions": interactions, "items": items, "model": model, "opt": opt,
                       "batches": batches(), "times": [],
                       "distinct": distinct_per_batch(gen["item"])})
        del gen

    def step(setup: dict[str, Any]) -> float:
        batch = next(setup["batches"])
        t0 = time.perf_counter()
        setup["opt"].zero_grad(set_to_none=True)
        setup["model"].compute_loss(batch, training=True).backward()
        setup["opt"].step()
        return time.perf_counter() - t0

    round_medians = []
    for _ in range(rounds):
        for setup in setups:
            step(setup)                       # not timed: the switch from the other sizes' tables
            setup["times"].extend(step(setup) for _ in range(block))
        round_medians.append([round(float(np.median(s["times"][-block:])), 4) for s in setups])
    out = []
    for s in setups:
        median = float(np.median(s["times"]))
        steps = math.ceil(s["interactions"] / MODEL["batch_size"])
        out.append({"interactions": s["interactions"], "items": s["items"], "steps_per_epoch": steps,
                    "step_seconds_median": round(median, 4),
                    "step_seconds_p10_p90": [round(float(np.quantile(s["times"], q)), 4) for q in (0.1, 0.9)],
                    "distinct_items_per_batch": s["distinct"],
                    "ns_per_logit": round(1e9 * median / (MODEL["batch_size"] * s["distinct"]), 3),
                    "epoch_seconds_estimate": round(median * steps, 2)})
    print("  [interleaved] median step seconds " + ", ".join(f"{r['interactions']:,}: {r['step_seconds_median']:.3f}"
                                                        for r in out), file=sys.stderr, flush=True)
    logn = np.log([s["interactions"] for s in setups])
    steps = [math.ceil(s["interactions"] / MODEL["batch_size"]) for s in setups]
    per_round = [float(np.polyfit(logn, np.log(np.array(m) * steps), 1)[0]) for m in round_medians]
    return {"rounds": rounds, "block_steps": block, "round_medians": round_medians, "sizes": out,
            "epoch_exponent_per_round": [round(v, 3) for v in per_round],
            "epoch_exponent_per_round_median_p25_p75": [round(float(np.quantile(per_round, q)), 3)
                                                        for q in (0.5, 0.25, 0.75)]}


def _rank_main(rank: int, world: int, port: int, interactions: int, items: int, sparse: bool, out_dir: str) -> None:
    """torch.multiprocessing.spawn entry point: join a gloo group, train one epoch, write rank<r>.json."""
    import torch

    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank),
                       "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank)})
    torch.set_num_threads(1)
    import recstack
    from recstack import Columns

    assert recstack.core.distributed.init_from_env(backend="gloo", timeout_s=600)
    out: dict[str, Any] = {"rank": rank}
    try:
        gen = generate(interactions, items)
        data = Columns({"user": gen["user"], "item": gen["item"]})
        out["rss_after_data_mib"] = round(rss_mib(), 1)
        model = build_model(gen["users"], items, sparse)
        try:
            out["train"] = train_epoch(model, data, sparse)
        except Exception as exc:  # noqa: BLE001 — a refusal (e.g. an unsupported set-up) is a result
            out["error"] = f"{type(exc).__name__}: {exc}"
        out["peak_rss_mib"] = round(peak_rss_mib(), 1)
    finally:
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(out))
        torch.distributed.destroy_process_group()


def ddp_worker(interactions: int, items: int, sparse: bool) -> dict[str, Any]:
    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory(prefix="recstack-scale-") as tmp:
        t0 = time.perf_counter()
        mp.spawn(_rank_main, args=(2, port, interactions, items, sparse, tmp), nprocs=2, join=True)
        wall = time.perf_counter() - t0
        ranks = [json.loads(Path(tmp, f"rank{r}.json").read_text()) for r in range(2)]
    out: dict[str, Any] = {"interactions": interactions, "items": items, "sparse_gradients": sparse,
                           "processes": 2, "spawn_wall_seconds_incl_data": round(wall, 2), "ranks": ranks}
    if "train" in ranks[0]:
        out["train"] = ranks[0]["train"]
        print(f"  [{interactions:,}/{items:,} 2 ranks sparse={sparse}] epoch {out['train']['epoch_seconds']:.1f} s, "
              f"peak RSS {[r['peak_rss_mib'] for r in ranks]} MiB", file=sys.stderr, flush=True)
    else:
        out["error"] = ranks[0].get("error")
        print(f"  [{interactions:,}/{items:,} 2 ranks sparse={sparse}] failed: {out['error']}", file=sys.stderr,
              flush=True)
    return out


# ------------------------------------------------------------------------------------------
# Driver
# ------------------------------------------------------------------------------------------
#: a measurement during which other processes used more than this many cores is repeated
CONTENDED_CORES = 0.25


def foreign_cores_now(seconds: float = 5.0) -> float:
    """Cores busy over the next ``seconds`` while this process sleeps (i.e. other jobs)."""
    busy0, t0 = cpu_busy(), time.perf_counter()
    time.sleep(seconds)
    return (cpu_busy() - busy0) / (time.perf_counter() - t0)


def wait_for_quiet(max_wait: float = 600.0, threshold: float = CONTENDED_CORES) -> dict[str, float]:
    """Wait (up to ``max_wait`` s) until other jobs use less than ``threshold`` cores."""
    t0 = time.perf_counter()
    cores = foreign_cores_now()
    while cores >= threshold and time.perf_counter() - t0 < max_wait:
        print(f"  waiting for a quiet machine: other jobs use {cores:.2f} cores", file=sys.stderr, flush=True)
        time.sleep(20)
        cores = foreign_cores_now()
    return {"waited_seconds": round(time.perf_counter() - t0, 1), "foreign_cores_at_start": round(cores, 2)}


def measure(mode: str, interactions: int, items: int, sparse: bool, full: bool = False,
            size_list: str | None = None, retries: int = 2) -> dict[str, Any]:
    """:func:`run_child`, repeated (after waiting for quiet) while other jobs took a core during it.

    Keeps the least contended attempt; the others are summarised under ``discarded_attempts``.
    """
    attempts = []
    for attempt in range(retries + 1):
        quiet = wait_for_quiet()
        result = run_child(mode, interactions, items, sparse, full, size_list)
        result["context"].update(quiet)
        attempts.append(result)
        if result["context"]["foreign_cores_during"] < CONTENDED_CORES:
            break
        print(f"  contended ({result['context']['foreign_cores_during']:.2f} foreign cores): measuring again",
              file=sys.stderr, flush=True)
    best = min(attempts, key=lambda r: r["context"]["foreign_cores_during"])
    best["discarded_attempts"] = [
        {"context": r["context"], **({"epoch_seconds": r["train"]["epoch_seconds"]} if "train" in r else {})}
        for r in attempts if r is not best]
    return best


def run_child(mode: str, interactions: int, items: int, sparse: bool, full: bool = False,
              size_list: str | None = None) -> dict[str, Any]:
    """Run one measurement in a fresh interpreter; returns its JSON plus load/foreign-CPU context."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", mode, "--child-size",
           size_list or f"{interactions}:{items}", "--child-sparse", str(int(sparse)), "--child-full", str(int(full))]
    load_before = os.getloadavg()[0]
    busy0, wall0 = cpu_busy(), time.perf_counter()
    own0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=True)
    wall = time.perf_counter() - wall0
    own1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    own = (own1.ru_utime + own1.ru_stime) - (own0.ru_utime + own0.ru_stime)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["context"] = {"loadavg_1min_before": round(load_before, 2),
                         "loadavg_1min_after": round(os.getloadavg()[0], 2),
                         "child_wall_seconds": round(wall, 2), "child_cpu_seconds": round(own, 2),
                         "foreign_cores_during": round(max(0.0, (cpu_busy() - busy0 - own) / wall), 2)}
    return result


def slope(xs: list[float], ys: list[float]) -> float | None:
    """Least-squares slope of log(y) on log(x)."""
    pairs = [(x, y) for x, y in zip(xs, ys) if x and y and y > 0]
    if len(pairs) < 2:
        return None
    lx, ly = np.log([p[0] for p in pairs]), np.log([p[1] for p in pairs])
    return round(float(np.polyfit(lx, ly, 1)[0]), 3)


def pairwise(xs: list[float], ys: list[float]) -> list[float]:
    return [round(math.log(ys[i + 1] / ys[i]) / math.log(xs[i + 1] / xs[i]), 3) for i in range(len(xs) - 1)]


def finish_panel(ax, sizes: list[float], first_cost: float, xlabel: str, ylabel: str, title: str) -> None:
    """Add a linear reference through the smallest size's cost, labels and the legend."""
    ref = np.array([min(sizes), max(sizes)], dtype=float)
    ax.loglog(ref, first_cost * ref / ref[0], "k:", lw=1, label="linear reference")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)


def plot(rows: list[dict[str, Any]], two: list[dict[str, Any]], dense1: list[dict[str, Any]],
         dense2: list[dict[str, Any]], exps: dict[str, Any], path: Path,
         interleaved: dict[str, Any] | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.5))
    n = [r["interactions"] for r in rows]
    c = [r["items"] for r in rows]

    def series(ax, x, y, label, marker, k):
        ax.loglog(x, y, marker=marker, label=f"{label} (slope {k})" if k is not None else label)

    series(a, n, [r["train"]["epoch_seconds"] for r in rows], "1 process, sparse grads", "o",
           exps["train_epoch_seconds_vs_interactions"])
    if interleaved:
        inter = interleaved["sizes"]
        series(a, [r["interactions"] for r in inter], [r["epoch_seconds_estimate"] for r in inter],
               "1 process, interleaved step cost x steps", "x", exps.get("interleaved_epoch_estimate_vs_interactions"))
    ok = [r for r in two if "train" in r]
    if ok:
        series(a, [r["interactions"] for r in ok], [r["train"]["epoch_seconds"] for r in ok],
               "2 gloo ranks x 1 thread, sparse grads", "D", exps.get("two_process_epoch_seconds_vs_interactions"))
    if dense1:
        series(a, [r["interactions"] for r in dense1], [r["train"]["epoch_seconds"] for r in dense1],
               "1 process, dense grads", "s", exps.get("dense_1proc_epoch_seconds_vs_interactions"))
    ok2 = [r for r in dense2 if "train" in r]
    if ok2:
        series(a, [r["interactions"] for r in ok2], [r["train"]["epoch_seconds"] for r in ok2],
               "2 gloo ranks, dense grads", "^", exps.get("dense_2proc_epoch_seconds_vs_interactions"))
    finish_panel(a, n, rows[0]["train"]["epoch_seconds"], "training interactions (items = interactions / 10)",
                 "seconds per epoch (batch 8192)", "Training")
    series(b, c, [r["evaluation"]["seconds"] for r in rows], "FactorizedTopK, 20k queries", "o",
           exps["evaluation_seconds_vs_items"])
    series(b, c, [r["index_build"]["faiss_ivf_seconds"] for r in rows], "FaissIVF build", "s",
           exps["faiss_ivf_build_seconds_vs_items"])
    series(b, c, [r["index_build"]["brute_force_seconds"] for r in rows], "BruteForce build", "^",
           exps["brute_force_build_seconds_vs_items"])
    finish_panel(b, c, rows[0]["evaluation"]["seconds"], "catalogue size (items)", "seconds",
                 "Full-catalogue evaluation and index build")
    for ax in (a, b):
        ax.grid(True, which="both", alpha=0.3)
    fig.suptitle("recstack scale benchmark (2-core CPU; log-log, least-squares slopes)", fontsize=10)
    fig.tight_layout()
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    os.replace(tmp, path)


def parse_sizes(text: str) -> list[tuple[int, int]]:
    out = []
    for part in text.split(","):
        n, c = part.split(":")
        out.append((int(float(n)), int(float(c))))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="100k/10k, 300k/30k, 1M/100k")
    parser.add_argument("--sizes", help="comma-separated interactions:items, e.g. 1e6:1e5,3e6:3e5")
    parser.add_argument("--no-two", action="store_true", help="skip the 2-process runs")
    parser.add_argument("--no-interleaved", action="store_true", help="skip the interleaved step-cost run")
    parser.add_argument("--dense-sizes", help="also compare 1 vs 2 processes with dense gradients at these sizes")
    parser.add_argument("--output", default="scale.json")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--child-size", help=argparse.SUPPRESS)
    parser.add_argument("--child-sparse", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--child-full", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        n, c = parse_sizes(args.child_size)[0]
        if args.child == "interleaved":
            result = interleaved_worker(parse_sizes(args.child_size))
        elif args.child == "single":
            result = single_worker(n, c, bool(args.child_sparse), bool(args.child_full))
        else:
            result = ddp_worker(n, c, bool(args.child_sparse))
        result["peak_rss_process_mib"] = round(peak_rss_mib(), 1)
        print(json.dumps(result), flush=True)
        return

    sizes = parse_sizes(args.sizes) if args.sizes else (QUICK_SIZES if args.quick else FULL_SIZES)
    dense_sizes = parse_sizes(args.dense_sizes) if args.dense_sizes else []
    started = time.perf_counter()
    load_start = os.getloadavg()
    print(f"load average at start: {load_start}", file=sys.stderr, flush=True)
    rows, two = [], []
    for n, c in sizes:
        rows.append(measure("single", n, c, sparse=True, full=True))
        if not args.no_two:
            two.append(measure("ddp", n, c, sparse=True))
    interleaved = None
    if not args.no_interleaved and len(sizes) > 1:
        interleaved = measure("interleaved", 0, 0, sparse=True, size_list=",".join(f"{a}:{b}" for a, b in sizes))
    dense1: list[dict[str, Any]] = []
    dense2: list[dict[str, Any]] = []
    for n, c in dense_sizes:
        dense1.append(measure("single", n, c, sparse=False))
        dense2.append(measure("ddp", n, c, sparse=False))
    load_end = os.getloadavg()

    n = [r["interactions"] for r in rows]
    c = [r["items"] for r in rows]
    epoch = [r["train"]["epoch_seconds"] for r in rows]
    ev = [r["evaluation"]["seconds"] for r in rows]
    exps: dict[str, Any] = {
        "train_epoch_seconds_vs_interactions": slope(n, epoch),
        "train_epoch_seconds_vs_interactions_pairwise": pairwise(n, epoch),
        "train_median_step_epoch_seconds_vs_interactions": slope(
            n, [r["train"]["median_step_epoch_seconds"] for r in rows]),
        "train_seconds_per_step_vs_items": slope(c, [r["train"]["seconds_per_step"] for r in rows]),
        "distinct_items_per_batch_vs_items": slope(c, [r["train"]["distinct_items_per_batch"] for r in rows]),
        "train_ns_per_logit_vs_interactions": slope(n, [r["train"]["ns_per_logit"] for r in rows]),
        "peak_rss_vs_interactions": slope(n, [r["peak_rss_after_training_mib"] for r in rows]),
        "evaluation_seconds_vs_items": slope(c, ev),
        "evaluation_seconds_vs_items_pairwise": pairwise(c, ev),
        "evaluation_ns_per_query_item_vs_items": slope(c, [r["evaluation"]["ns_per_query_item"] for r in rows]),
        "faiss_ivf_build_seconds_vs_items": slope(c, [r["index_build"]["faiss_ivf_seconds"] for r in rows]),
        "brute_force_build_seconds_vs_items": slope(c, [r["index_build"]["brute_force_seconds"] for r in rows]),
    }
    if interleaved:
        inter = interleaved["sizes"]
        exps["interleaved_epoch_estimate_vs_interactions"] = slope(
            [r["interactions"] for r in inter], [r["epoch_seconds_estimate"] for r in inter])
        exps["interleaved_step_seconds_vs_items"] = slope(
            [r["items"] for r in inter], [r["step_seconds_median"] for r in inter])
        exps["interleaved_ns_per_logit_vs_items"] = slope(
            [r["items"] for r in inter], [r["ns_per_logit"] for r in inter])
    ok_two = [r for r in two if "train" in r]
    if ok_two:
        exps["two_process_epoch_seconds_vs_interactions"] = slope(
            [r["interactions"] for r in ok_two], [r["train"]["epoch_seconds"] for r in ok_two])
        exps["two_process_median_step_epoch_seconds_vs_interactions"] = slope(
            [r["interactions"] for r in ok_two], [r["train"]["median_step_epoch_seconds"] for r in ok_two])
    if dense1:
        exps["dense_1proc_epoch_seconds_vs_interactions"] = slope(
            [r["interactions"] for r in dense1], [r["train"]["epoch_seconds"] for r in dense1])
    ok2 = [r for r in dense2 if "train" in r]
    if ok2:
        exps["dense_2proc_epoch_seconds_vs_interactions"] = slope(
            [r["interactions"] for r in ok2], [r["train"]["epoch_seconds"] for r in ok2])

    def compare(pairs: list[tuple[dict[str, Any], dict[str, Any]]]) -> list[dict[str, Any]]:
        out = []
        for one, pair in pairs:
            row: dict[str, Any] = {
                "interactions": one["interactions"], "items": one["items"],
                "one_process_epoch_seconds": round(one["train"]["epoch_seconds"], 2),
                "one_process_median_step_epoch_seconds": one["train"]["median_step_epoch_seconds"],
                "one_process_peak_rss_mib": one["peak_rss_after_training_mib"]}
            if "train" in pair:
                row.update({
                    "two_process_epoch_seconds_rank0": round(pair["train"]["epoch_seconds"], 2),
                    "two_process_median_step_epoch_seconds_rank0": pair["train"]["median_step_epoch_seconds"],
                    "two_process_peak_rss_mib_per_rank": [r["peak_rss_mib"] for r in pair["ranks"]],
                    "speedup_two_over_one": round(one["train"]["epoch_seconds"] / pair["train"]["epoch_seconds"], 3)})
            else:
                row["two_process_error"] = pair.get("error")
            out.append(row)
        return out

    comparison_dense = compare(list(zip(dense1, dense2)))
    comparison = compare(list(zip(rows, two)))
    payload = {
        "benchmark": "scale",
        "environment": environment(),
        "generator": GEN,
        "model": MODEL,
        "sizes": [{"interactions": a, "items": b} for a, b in sizes],
        "loadavg_start": [round(v, 2) for v in load_start],
        "loadavg_end": [round(v, 2) for v in load_end],
        "total_seconds": round(time.perf_counter() - started, 1),
        "single_process_sparse": rows,
        "exponents": exps,
        "interleaved_step_cost": interleaved,
        "two_processes_sparse": two,
        "one_vs_two_processes": comparison,
        "dense_gradients": {"one_process": dense1, "two_processes": dense2,
                            "one_vs_two_processes": comparison_dense},
        "method": (__doc__ or "").strip(),
    }
    path = write_json(args.output, payload)
    png = RESULTS / (Path(args.output).stem + ".png")
    plot(rows, two, dense1, dense2, exps, png, interleaved)
    print(json.dumps(exps, indent=2))
    print(f"wrote {path} and {png} in {payload['total_seconds']:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
