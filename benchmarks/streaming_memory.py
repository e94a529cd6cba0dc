"""Train from a Parquet dataset larger than a memory budget and measure peak RSS.

1. Writes (vectorised, seed 0) a directory of Parquet files: ``--rows`` interactions
   of user / item / timestamp (int64; sparse 40-bit user and item ids, each user
   prefers 3 items), plus a 200k-row held-out file. As int64 columns the training
   data takes ``rows * 24`` bytes in memory: 48M rows = 1,099 MiB, 1.7 times the
   default budget of 640 MiB of peak RSS for the whole process (of which ~290 MiB
   is torch + pyarrow after import and ~90 MiB torch's first backward/optimizer step).
2. In a fresh subprocess (so that nothing of step 1 counts): fits IntegerLookup
   vocabularies for user and item in one streaming pass, builds a two-tower model
   (two recstack Embedding tables, Retrieval task, no metrics in training), trains
   one shuffled epoch from a ParquetSource, and evaluates top-k accuracy on the
   held-out file (also streamed). Peak RSS = VmHWM of /proc/self/status (the
   process's own high-water mark); ``getrusage().ru_maxrss`` is reported too, but
   across exec Linux carries the pre-exec image's maximum into it, so in a
   subprocess it can reflect the parent (see recstack.streaming.peak_rss_bytes).
3. In another subprocess, the in-memory alternative on the same data: read the
   Parquet into Arrow, encode with in-memory lookups into a recstack.Columns, and
   run the real ``fit`` loop for ``--columns-steps`` batches (its shuffled epoch
   order is drawn over all rows, as for a full epoch). Its peak is reached before
   training starts, so more steps would not change it.

Usage: python benchmarks/streaming_memory.py [--rows 48000000] [--budget-mib 640]
Writes benchmarks/results/streaming_memory.json; exits 1 if the streaming peak RSS exceeds the budget.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import environment, write_json  # noqa: E402

MIB = 2**20
NUM_USERS, NUM_ITEMS = 20_000, 10_000
HELD_OUT_ROWS = 200_000


# -- data -------------------------------------------------------------------------------------
def write_data(root: Path, rows: int, files: int, row_group: int) -> dict[str, Any]:
    """Training files under root/train, held-out rows in root/held_out.parquet; generated piecewise."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(0)
    user_ids = rng.choice(2**40, NUM_USERS, replace=False)  # sparse raw ids: a vocabulary is needed
    item_ids = rng.choice(2**40, NUM_ITEMS, replace=False)
    schema = pa.schema([("user", pa.int64()), ("item", pa.int64()), ("timestamp", pa.int64())])

    def table(n: int) -> Any:
        user = rng.integers(0, NUM_USERS, n)
        item = (user * 7 + rng.integers(0, 3, n)) % NUM_ITEMS  # each user prefers 3 items
        return pa.table({"user": user_ids[user], "item": item_ids[item],
                         "timestamp": rng.integers(874_724_710, 1_700_000_000, n)}, schema=schema)

    start = time.perf_counter()
    train = root / "train"
    train.mkdir(parents=True)
    per_file = -(-rows // files)
    for k in range(files):
        n_file = min(per_file, rows - k * per_file)
        with pq.ParquetWriter(train / f"part-{k:04d}.parquet", schema) as writer:
            for done in range(0, n_file, row_group):
                writer.write_table(table(min(row_group, n_file - done)), row_group_size=row_group)
    pq.write_table(table(HELD_OUT_ROWS), root / "held_out.parquet")
    return {
        "rows": rows,
        "files": files,
        "row_group_rows": row_group,
        "columns": ["user", "item", "timestamp"],
        "in_memory_bytes_int64": rows * 3 * 8,
        "parquet_bytes_on_disk": sum(p.stat().st_size for p in train.iterdir()),
        "distinct_users": NUM_USERS,
        "distinct_items": NUM_ITEMS,
        "write_seconds": time.perf_counter() - start,
    }


# -- the measured processes --------------------------------------------------------------------
def build_model(num_users: int, num_items: int, dim: int) -> Any:
    import torch

    import recstack
    from recstack.layers import Embedding
    from recstack.metrics import FactorizedTopK
    from recstack.tasks import Retrieval

    class TwoTower(recstack.Model):
        def __init__(self) -> None:
            super().__init__()
            # Sparse gradients: Adagrad touches only the batch's rows (3x faster steps here).
            self.user = Embedding(num_users, dim, sparse=True)
            self.item = Embedding(num_items, dim, sparse=True)
            items = torch.arange(num_items)
            self.task = Retrieval(metrics=FactorizedTopK(recstack.TowerCandidates(self.item, items), items,
                                                         ks=(10, 100)))

        def compute_loss(self, batch, training=False):
            return self.task(self.user(batch["user"]), self.item(batch["item"]),
                             candidate_ids=batch["item"], compute_metrics=not training)

    return TwoTower()


def child_stream(args: argparse.Namespace) -> dict[str, Any]:
    """Streaming vocabulary pass + one shuffled epoch from ParquetSource + streamed evaluation."""
    import torch

    from recstack.streaming import (
        ParquetSource,
        current_rss_bytes,
        fit_streaming_vocabularies,
        peak_rss_bytes,
        ru_maxrss_bytes,
    )

    torch.set_num_threads(args.threads)
    out: dict[str, Any] = {"rss_after_imports": current_rss_bytes()}
    root = Path(args.data)
    start = time.perf_counter()
    lookups = fit_streaming_vocabularies(root / "train", ["user", "item"], chunk_rows=args.chunk_rows)
    out["vocabulary_seconds"] = time.perf_counter() - start
    out["vocabulary_sizes"] = {k: v.vocabulary_size() for k, v in lookups.items()}
    out["rss_after_vocabularies"] = current_rss_bytes()
    torch.manual_seed(0)
    model = build_model(lookups["user"].vocabulary_size(), lookups["item"].vocabulary_size(), args.dim)
    out["rss_after_model"] = current_rss_bytes()
    out["peak_rss_before_training"] = peak_rss_bytes()
    columns = ["user", "item", "timestamp"]  # timestamp is decoded and batched too, though unused
    source = ParquetSource(root / "train", columns, encoders=lookups, chunk_rows=args.chunk_rows,
                           shuffle_buffer=args.shuffle_buffer)
    start = time.perf_counter()
    history = model.fit(source, epochs=1, batch_size=args.batch_size, seed=0, verbose=False,
                        optimizer=lambda p: torch.optim.Adagrad(p, lr=0.1))
    out["train_seconds"] = time.perf_counter() - start
    logs = history.last()
    out["examples_per_second"] = logs["examples_per_second"]
    out["train_loss"] = logs["loss"]
    out["rows_trained"] = source.num_rows
    out["peak_rss_after_training"] = peak_rss_bytes()
    held_out = ParquetSource(root / "held_out.parquet", columns, encoders=lookups, chunk_rows=args.chunk_rows)
    start = time.perf_counter()
    # Scores of a batch against all items are [batch, items] floats: 1024 keeps them at 40 MiB.
    out["held_out"] = model.evaluate(held_out, batch_size=1024)
    out["evaluate_seconds"] = time.perf_counter() - start
    out["peak_rss"] = peak_rss_bytes()
    out["ru_maxrss"] = ru_maxrss_bytes()
    return out


class _FirstBatches:
    """A BatchSource: the first ``steps`` batches of a Columns' epoch (same shuffle, same memory)."""

    def __init__(self, columns: Any, steps: int):
        self.columns, self.steps = columns, steps

    @property
    def num_rows(self) -> int:
        return self.columns.num_rows

    def num_batches(self, batch_size: int, drop_remainder: bool = False) -> int:
        return min(self.steps, self.columns.num_batches(batch_size, drop_remainder))

    def epoch_batches(self, batch_size, *, shuffle, seed, epoch, drop_remainder=False):
        batches = self.columns.epoch_batches(batch_size, shuffle=shuffle, seed=seed, epoch=epoch,
                                             drop_remainder=drop_remainder)
        return itertools.islice(batches, self.steps)


def child_columns(args: argparse.Namespace) -> dict[str, Any]:
    """The in-memory alternative: read everything, encode in memory, fit on Columns."""
    import pyarrow.parquet as pq
    import torch

    from recstack import Columns
    from recstack.features import IntegerLookup
    from recstack.streaming import current_rss_bytes, peak_rss_bytes, ru_maxrss_bytes

    torch.set_num_threads(args.threads)
    out: dict[str, Any] = {"rss_after_imports": current_rss_bytes()}
    start = time.perf_counter()
    table = pq.read_table(Path(args.data) / "train", columns=["user", "item", "timestamp"])
    out["rss_after_read"] = current_rss_bytes()
    arrays = {name: table.column(name).to_numpy() for name in ("user", "item", "timestamp")}
    del table
    lookups = {name: IntegerLookup().fit(arrays[name]) for name in ("user", "item")}
    columns = Columns({"user": lookups["user"](arrays.pop("user")), "item": lookups["item"](arrays.pop("item")),
                       "timestamp": arrays.pop("timestamp")})
    out["load_seconds"] = time.perf_counter() - start
    out["rss_after_columns"] = current_rss_bytes()
    torch.manual_seed(0)
    model = build_model(lookups["user"].vocabulary_size(), lookups["item"].vocabulary_size(), args.dim)
    start = time.perf_counter()
    model.fit(_FirstBatches(columns, args.columns_steps), epochs=1, batch_size=args.batch_size, seed=0,
              verbose=False, optimizer=lambda p: torch.optim.Adagrad(p, lr=0.1))
    out["train_steps"] = args.columns_steps
    out["train_seconds"] = time.perf_counter() - start
    out["peak_rss"] = peak_rss_bytes()
    out["ru_maxrss"] = ru_maxrss_bytes()
    return out


def run_child(kind: str, args: argparse.Namespace, data: Path) -> dict[str, Any]:
    command = [sys.executable, __file__, "--child", kind, "--data", str(data)] + [
        f"--{k.replace('_', '-')}={getattr(args, k)}"
        for k in ("chunk_rows", "shuffle_buffer", "batch_size", "dim", "threads", "columns_steps")]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{kind} child failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["wall_seconds"] = time.perf_counter() - start
    return result


def hashing_check() -> dict[str, Any]:
    """Measured vs expected collision fraction of the benchmark's user ids under HashingLookup."""
    import numpy as np

    from recstack.streaming import HashingLookup, collision_fraction

    ids = np.random.default_rng(0).choice(2**40, NUM_USERS, replace=False)  # the same user ids as the data
    out = {}
    for bins in (2**15, 2**17, 2**20):
        layer = HashingLookup(bins + 1)
        out[str(bins)] = {"expected": layer.expected_collision_fraction(len(ids)),
                          "measured": collision_fraction(layer(ids))}
    return {"num_ids": NUM_USERS, "collision_fraction_by_value_bins": out}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=48_000_000)
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument("--row-group", type=int, default=1 << 20)
    parser.add_argument("--budget-mib", type=float, default=640.0, help="peak RSS budget of the streaming process")
    parser.add_argument("--chunk-rows", type=int, default=131_072)
    parser.add_argument("--shuffle-buffer", type=int, default=524_288)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--dim", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads in the measured processes")
    parser.add_argument("--columns-steps", type=int, default=200)
    parser.add_argument("--skip-columns", action="store_true", help="skip the in-memory comparison")
    parser.add_argument("--data-dir", type=Path, default=None, help="where to write the data (default: a temp dir)")
    parser.add_argument("--out", default="streaming_memory.json")
    parser.add_argument("--child", choices=["stream", "columns"], help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps((child_stream if args.child == "stream" else child_columns)(args)))
        return

    root = Path(tempfile.mkdtemp(prefix="recstack-streaming-", dir=args.data_dir))
    try:
        data = write_data(root, args.rows, args.files, args.row_group)
        print(f"data: {args.rows:,} rows, {data['in_memory_bytes_int64'] / MIB:,.0f} MiB as int64, "
              f"{data['parquet_bytes_on_disk'] / MIB:,.0f} MiB of Parquet ({data['write_seconds']:.0f}s)", flush=True)
        load_before = os.getloadavg()
        stream = run_child("stream", args, root)
        stream["load_average_before_after"] = [load_before, os.getloadavg()]
        budget = args.budget_mib * MIB
        print(f"streaming: peak RSS {stream['peak_rss'] / MIB:,.0f} MiB (budget {args.budget_mib:,.0f} MiB; "
              f"{stream['rss_after_model'] / MIB:,.0f} MiB after imports + model), "
              f"{stream['examples_per_second']:,.0f} examples/s, loss {stream['train_loss']:.2f}, held-out top-10 "
              f"{stream['held_out']['factorized_top_k/top_10_categorical_accuracy']:.3f}", flush=True)
        columns = None if args.skip_columns else run_child("columns", args, root)
        if columns:
            print(f"in-memory Columns: peak RSS {columns['peak_rss'] / MIB:,.0f} MiB", flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)

    payload = {
        "benchmark": "streaming_memory",
        "description": __doc__.split("\n\n")[0],
        "environment": environment(),
        "settings": {k: getattr(args, k) for k in ("chunk_rows", "shuffle_buffer", "batch_size", "dim", "threads",
                                                   "columns_steps", "budget_mib")},
        "data": data,
        "budget_bytes": int(budget),
        "streaming": stream,
        "in_memory_columns": columns,
        "within_budget": stream["peak_rss"] <= budget,
        "data_to_budget_ratio": data["in_memory_bytes_int64"] / budget,
        "hashing": hashing_check(),
    }
    print(f"wrote {write_json(args.out, payload)}")
    if not payload["within_budget"]:
        raise SystemExit(f"peak RSS {stream['peak_rss'] / MIB:.0f} MiB exceeds the budget of {args.budget_mib} MiB")


if __name__ == "__main__":
    main()
