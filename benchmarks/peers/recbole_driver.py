"""Run one RecBole model with its own trainer and record what a side-by-side comparison needs.

This script runs inside RecBole's throwaway virtualenv, never in recstack's (recstack does not
import RecBole anywhere). The benchmarks start it as a subprocess:

    TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 OMP_NUM_THREADS=1 /tmp/rbvenv/bin/python \
        benchmarks/peers/recbole_driver.py SPEC.json OUT.json

SPEC.json: {"model": "SASRec", "dataset": "ml-100k", "config": {...RecBole config_dict...},
"wall_cap_s": 2400, "threads": 1, "write_split": "split.csv" (optional: RecBole's train /
validation / test rows as CSV, raw ids, for the other side to use)}. The dataset is RecBole's own copy shipped in its wheel
(``recbole/dataset_example``) unless ``config.data_path`` says otherwise.

RecBole's ``Trainer.fit`` runs unchanged (its early stopping on ``valid_metric``, its
checkpoint of the best epoch, ``evaluate(load_best_model=True)`` on the test split). The driver
only wraps the trainer's epoch methods to time them and to keep every validation result, and
stops the run at the first epoch boundary past ``wall_cap_s`` (the best checkpoint so far is
then evaluated, as RecBole's early stopping would). OUT.json holds per-epoch training and
validation seconds, the validation curve, the best epoch, the test metrics, the stop reason and
the versions. The one change to RecBole's code path is :func:`restore_dok_update` (its graph
models call a SciPy method that no longer exists).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path


def restore_dok_update() -> None:
    """Give SciPy's ``dok_matrix`` back the private ``_update`` RecBole 1.2.1's graph models call.

    RecBole's LightGCN (and NGCF, GCMC, NCL, SpectralCF) builds its adjacency matrix with
    ``dok_matrix._update(dict)``, a private method SciPy 1.12 removed (the entries now live in
    ``dok_matrix._dict``), so with the SciPy its virtualenv gets these models crash before the first
    epoch. The shim stores the same entries the removed method stored; nothing else changes.
    """
    import scipy.sparse as sp

    if not hasattr(sp.dok_matrix, "_update") and hasattr(sp.dok_matrix((1, 1)), "_dict"):
        sp.dok_matrix._update = lambda self, entries: self._dict.update(entries)


class WallCap(Exception):
    """Raised at an epoch boundary once the wall-clock cap is spent."""


def write_split(path: Path, dataset, train_data, valid_data, test_data) -> None:
    """RecBole's split as CSV: user_id, item_id (raw tokens), part (train / validation / test), so
    another toolkit can train and evaluate on exactly these rows."""
    import pandas as pd

    uid, iid = dataset.uid_field, dataset.iid_field
    frames = []
    for part, data in (("train", train_data), ("validation", valid_data), ("test", test_data)):
        inter = data._dataset.inter_feat
        frames.append(pd.DataFrame({"user_id": dataset.id2token(uid, inter[uid].numpy()),
                                    "item_id": dataset.id2token(iid, inter[iid].numpy()), "part": part}))
    tmp = path.with_suffix(".tmp")
    pd.concat(frames).to_csv(tmp, index=False)
    tmp.replace(path)


def main(spec_path: str, out_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    import torch

    torch.set_num_threads(int(spec.get("threads", 1)))
    restore_dok_update()
    import recbole
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.utils import get_model, get_trainer, init_seed

    config_dict = dict(spec.get("config", {}))
    config_dict.setdefault("data_path", str(Path(recbole.__file__).parent / "dataset_example"))
    config_dict.setdefault("use_gpu", False)
    checkpoints = tempfile.mkdtemp(prefix="recbole-ckpt-")
    config_dict.setdefault("checkpoint_dir", checkpoints)
    config_dict.setdefault("show_progress", False)

    started = time.perf_counter()
    config = Config(model=spec["model"], dataset=spec.get("dataset", "ml-100k"), config_dict=config_dict)
    init_seed(config["seed"], config["reproducibility"])
    dataset = create_dataset(config)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    if spec.get("write_split"):
        write_split(Path(spec["write_split"]), dataset, train_data, valid_data, test_data)
    init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
    model = get_model(config["model"])(config, train_data._dataset).to(config["device"])
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    prepared = time.perf_counter()

    epochs: list[dict] = []
    wall_cap = float(spec.get("wall_cap_s", float("inf")))
    train_epoch, valid_epoch = trainer._train_epoch, trainer._valid_epoch

    def timed_train(*args, **kwargs):
        t0 = time.perf_counter()
        loss = train_epoch(*args, **kwargs)
        loss_value = float(sum(loss)) if isinstance(loss, tuple) else float(loss)
        epochs.append({"epoch": len(epochs) + 1, "train_s": time.perf_counter() - t0, "loss": loss_value})
        return loss

    def timed_valid(*args, **kwargs):
        t0 = time.perf_counter()
        score, result = valid_epoch(*args, **kwargs)
        record = epochs[-1]
        record["valid_s"] = time.perf_counter() - t0
        record["valid"] = {k: float(v) for k, v in result.items()}
        # Seconds from the start of training to the end of this epoch's validation.
        record["elapsed_s"] = time.perf_counter() - prepared
        return score, result

    def stop_at_cap(epoch_idx: int, valid_score: float) -> None:
        if time.perf_counter() - prepared > wall_cap:
            raise WallCap

    trainer._train_epoch, trainer._valid_epoch = timed_train, timed_valid
    stop = "early stopping"
    try:
        trainer.fit(train_data, valid_data, saved=True, show_progress=False, callback_fn=stop_at_cap, verbose=False)
        if len(epochs) >= trainer.epochs:   # TraditionalTrainer (EASE, ItemKNN) runs one epoch
            stop = "max epochs"
    except WallCap:
        stop = f"wall-clock cap {wall_cap:.0f} s"
    trained = time.perf_counter()
    test = trainer.evaluate(test_data, load_best_model=True, show_progress=False)
    finished = time.perf_counter()

    metric = config["valid_metric"].lower()
    curve = [e["valid"].get(metric) for e in epochs if "valid" in e]
    best = max(range(len(curve)), key=lambda i: curve[i]) if curve else None
    out = {
        "model": spec["model"],
        "dataset": spec.get("dataset", "ml-100k"),
        "config": {k: v for k, v in config_dict.items() if k not in ("data_path", "checkpoint_dir")},
        "valid_metric": metric,
        "epochs_completed": len(epochs),
        "stop": stop,
        "best_epoch": None if best is None else best + 1,
        "best_valid": None if best is None else epochs[best]["valid"],
        "seconds_to_best_valid": None if best is None else epochs[best]["elapsed_s"],
        "seconds_per_epoch_train": [e["train_s"] for e in epochs],
        "epochs": epochs,
        "test": {k: float(v) for k, v in test.items()},
        "seconds": {"data_preparation": prepared - started, "training": trained - prepared,
                    "test": finished - trained, "total": finished - started},
        "threads": torch.get_num_threads(),
        "versions": {"recbole": recbole.__version__, "torch": torch.__version__, "python": sys.version.split()[0]},
    }
    tmp = out_path + ".tmp"
    Path(tmp).write_text(json.dumps(out, indent=2) + "\n")
    os.replace(tmp, out_path)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: recbole_driver.py SPEC.json OUT.json")
    main(sys.argv[1], sys.argv[2])
