"""Streaming a Parquet file keeps the RSS growth far below the data's in-memory size (measured in a subprocess)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pa = pytest.importorskip("pyarrow")

ROWS = 12_000_000  # 3 int64 columns: 275 MiB in memory
GROUP = 1 << 20

CHILD = """
import json, sys
from recstack.streaming import ParquetSource, current_rss_bytes, peak_rss_bytes
source = ParquetSource(sys.argv[1], ["user", "item", "timestamp"], chunk_rows=65536, shuffle_buffer=131072)
before = current_rss_bytes()
rows = checksum = 0
for batch in source.epoch_batches(8192, shuffle=True, seed=0, epoch=1):
    rows += batch["user"].shape[0]
    checksum += int(batch["item"].sum())
print(json.dumps({"before": before, "peak": peak_rss_bytes(), "rows": rows, "checksum": checksum}))
"""


def _write(path: Path) -> int:
    """Random interactions written one row group at a time (the test process never holds them all)."""
    import pyarrow.parquet as pq

    rng = np.random.default_rng(0)
    schema = pa.schema([("user", pa.int64()), ("item", pa.int64()), ("timestamp", pa.int64())])
    checksum = 0
    with pq.ParquetWriter(path, schema) as writer:
        for start in range(0, ROWS, GROUP):
            n = min(GROUP, ROWS - start)
            item = rng.integers(0, 10_000, n)
            checksum += int(item.sum())
            writer.write_table(pa.table({"user": rng.integers(0, 20_000, n), "item": item,
                                         "timestamp": rng.integers(0, 2**31, n)}, schema=schema))
    return checksum


def test_rss_growth_is_bounded_by_chunks_not_data(tmp_path):
    path = tmp_path / "big.parquet"
    checksum = _write(path)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", CHILD, str(path)], capture_output=True, text=True, env=env,
                         check=True, timeout=120).stdout
    result = json.loads(out.strip().splitlines()[-1])
    assert result["rows"] == ROWS and result["checksum"] == checksum  # every row, exactly once
    data_bytes = ROWS * 3 * 8
    growth = result["peak"] - result["before"]
    # Measured ~50-60 MiB (chunk + 131072-row buffer + Parquet pages + allocator slack) vs 275 MiB of data.
    assert growth < 0.4 * data_bytes, f"RSS grew {growth / 2**20:.0f} MiB streaming {data_bytes / 2**20:.0f} MiB"


def test_peak_rss_is_this_process_not_the_parent():
    """ru_maxrss survives exec (a child can report its parent's RSS); peak_rss_bytes (VmHWM) does not."""
    if not Path("/proc/self/status").exists():
        pytest.skip("Linux /proc only")
    ballast = np.ones(400 * 2**20 // 8)  # ~400 MiB resident in this process
    code = ("import json; from recstack.streaming.memory import peak_rss_bytes, ru_maxrss_bytes; "
            "print(json.dumps([peak_rss_bytes(), ru_maxrss_bytes()]))")
    peak, ru_maxrss = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                                check=True).stdout)
    from recstack.streaming import current_rss_bytes

    parent = current_rss_bytes()
    assert ballast.sum() > 0 and parent > 400 * 2**20
    assert peak < parent - 150 * 2**20  # the child's own image: imports only
    assert ru_maxrss >= peak
