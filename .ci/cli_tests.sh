#!/usr/bin/env bash
# The CLI end-to-end tests (tests/cli) on one interpreter, in a virtualenv of its own.
#
#   .ci/cli_tests.sh /root/.pyenv/versions/3.10.13/bin/python3.10
#
# The virtualenv is built by the Makefile's recipe (`make venv`: the same torch pin, the dev
# extra, this checkout installed editable) under $RECSTACK_CI_CACHE (default
# ~/.cache/recstack-ci) and kept: torch and the extras are downloaded once, not on every run.
# It is rebuilt from scratch when pyproject.toml changes (so a dependency dropped there is
# gone), and re-pointed at this checkout (the recipe again, which finds every requirement
# already installed) when the checkout moved.
set -euo pipefail
cd "$(dirname "$0")/.."
source .ci/lib.sh

python=${1:?usage: .ci/cli_tests.sh PYTHON}
if ! command -v "$python" >/dev/null; then
    echo "cli tests: interpreter $python not found (install it, e.g. with pyenv)." >&2
    exit 1
fi
version=$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
venv="$CI_CACHE/venv-py$version"
requirements=$(sha256sum pyproject.toml | cut -c1-16)
if [[ -d "$venv" && "$(cat "$venv/.ci-requirements" 2>/dev/null)" != "$requirements" ]]; then
    rm -rf "$venv"
elif [[ -d "$venv" && "$(cat "$venv/.ci-checkout" 2>/dev/null)" != "$(pwd)" ]]; then
    rm -f "$venv/.installed"
fi
mkdir -p "$CI_CACHE"
make -s venv PYTHON="$python" VENV="$venv" >/dev/null
echo "$requirements" >"$venv/.ci-requirements"
pwd >"$venv/.ci-checkout"
run_pytest "tests/cli on Python $version" "$venv/bin/python" tests/cli
