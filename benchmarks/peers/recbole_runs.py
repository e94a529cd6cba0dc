"""One RecBole run from recstack's side (named recbole_runs, not recbole: this folder is the driver's sys.path[0], so a
recbole.py here would hide the real package): write the driver's spec, run it in RecBole's virtualenv
(one thread, in a subprocess: RecBole is never imported here), read its result.

Both benchmarks that compare with RecBole (general.py, sequential.py) start their runs here.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

DRIVER = Path(__file__).resolve().parent / "recbole_driver.py"
#: RecBole's checkpoints are pickles (its own, written by the run itself); one thread, as recstack.
ENV = {"TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def run_recbole(python: str, spec: dict[str, Any], workdir: Path, name: str) -> dict[str, Any]:
    """The driver's result for ``spec`` (``{"model", "dataset", "config", "wall_cap_s", ...}``, see
    recbole_driver.py) plus ``wall_s``; or ``{"error": last stderr line, "stderr_tail": ...}``."""
    spec_path, result = workdir / f"{name}.spec.json", workdir / f"{name}.json"
    spec_path.write_text(json.dumps({"threads": 1, **spec}))
    started = time.perf_counter()
    proc = subprocess.run([python, str(DRIVER), str(spec_path), str(result)], cwd=workdir,
                          env={**os.environ, **ENV}, capture_output=True, text=True)
    if proc.returncode != 0 or not result.exists():
        lines = [x for x in proc.stderr.strip().splitlines() if x.strip()]
        return {"error": lines[-1] if lines else f"exit {proc.returncode}", "stderr_tail": proc.stderr[-3000:]}
    return {**json.loads(result.read_text()), "wall_s": time.perf_counter() - started}
