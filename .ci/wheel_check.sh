#!/usr/bin/env bash
# Installed, not only checked out: build a wheel of this checkout, install it into a fresh
# virtualenv outside the checkout (torch pinned as the Makefile pins it), and from another
# folder, where nothing of the checkout is importable, run
#   recstack configs
#   recstack train basic-retrieval --set training.epochs=1     on a tiny synthetic MovieLens folder
#   python -m recstack.cli.demo --quick                        when MovieLens 100K is available
#                                                              ($RECSTACK_DATA_DIR, else ../shared/datasets/ml-100k)
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
PYTHON=${PYTHON:-python3}
torch_pin=$(make -s torch-pin)
real_data=${RECSTACK_DATA_DIR:-$repo/../shared/datasets/ml-100k}

work=$(mktemp -d "${TMPDIR:-/tmp}/recstack-wheel.XXXXXX")
trap 'rm -rf "$work"' EXIT
say() { echo "wheel check: $*"; }

# 1. The wheel, built from a copy of the files git would commit (tracked or not ignored):
#    a build in the checkout could package stale modules left in build/ by an earlier build.
mkdir "$work/source"
git ls-files -z --cached --others --exclude-standard | while IFS= read -r -d '' path; do
    if [[ -f "$path" ]]; then
        mkdir -p "$work/source/$(dirname "$path")"
        cp -p "$path" "$work/source/$path"
    fi
done
"$PYTHON" -m pip wheel -q --no-deps --wheel-dir "$work/dist" "$work/source"
wheel=$(ls "$work"/dist/recstack-*.whl)
say "built $(basename "$wheel")"

# 2. A fresh virtualenv with the wheel and its dependencies only (no extras).
"$PYTHON" -m venv "$work/venv"
venv_python="$work/venv/bin/python"
"$venv_python" -m pip install -q "$torch_pin"
"$venv_python" -m pip install -q "$wheel"

# 3. From another folder: the installed package, not the checkout.
mkdir "$work/elsewhere"
cd "$work/elsewhere"
unset PYTHONPATH
location=$("$venv_python" -c 'import recstack; print(recstack.__file__)')
case "$location" in
    "$work/venv/"*) say "recstack imported from $location" ;;
    *) echo "wheel check: recstack was imported from $location, not from the installed wheel." >&2; exit 1 ;;
esac
recstack="$work/venv/bin/recstack"

"$recstack" configs

# A tiny MovieLens-format folder, made as the tests make it (tests/synthetic_movielens.py).
"$venv_python" - "$repo/tests" "$work/ml-100k-synthetic" <<'PY'
import sys
from pathlib import Path

sys.path.insert(0, sys.argv[1])
from synthetic_movielens import write_synthetic_ml100k

write_synthetic_ml100k(Path(sys.argv[2]))
PY
RECSTACK_DATA_DIR="$work/ml-100k-synthetic" "$recstack" train basic-retrieval --set training.epochs=1 \
    --run-dir "$work/runs/basic-retrieval" --progress quiet
test -f "$work/runs/basic-retrieval/metrics.json"
say "recstack train basic-retrieval: $work/runs/basic-retrieval/metrics.json written"

if [[ -f "$real_data/u.data" ]]; then
    RECSTACK_DATA_DIR="$real_data" "$venv_python" -m recstack.cli.demo --quick --progress quiet \
        --runs-dir "$work/runs/demo"
    say "python -m recstack.cli.demo --quick: done"
else
    say "MovieLens 100K not found at $real_data: python -m recstack.cli.demo --quick skipped."
fi
say "passed"
