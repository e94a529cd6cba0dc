# Helpers shared by the .ci/ scripts (sourced, not run).

# Virtualenvs the CI builds once and reuses (torch and the extras are large downloads).
CI_CACHE=${RECSTACK_CI_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/recstack-ci}

# run_pytest LABEL PYTHON PYTEST_ARGS...: run pytest, keep its output in a log, print its
# summary line ("87 passed, 1 skipped in 33.58s") and return its exit code. Exit code 5
# (pytest collected nothing) is a failure here: a CI step that runs no test proves nothing.
run_pytest() {
    local label=$1 python=$2 log rc
    shift 2
    log=$(mktemp "${TMPDIR:-/tmp}/recstack-ci-pytest.XXXXXX")
    set +e
    "$python" -m pytest -p no:cacheprovider "$@" >"$log" 2>&1
    rc=$?
    set -e
    if [[ $rc -ne 0 ]]; then
        cat "$log"
    fi
    local summary
    summary=$(grep -E '^(=+ )?[0-9]+ (passed|failed|skipped|deselected|errors?)|no tests ran' "$log" | tail -n 1 || true)
    echo "$label: ${summary:-no pytest summary line (exit code $rc)}"
    rm -f "$log"
    if [[ $rc -eq 5 ]]; then
        echo "$label: pytest collected no tests ($*): check the paths and markers." >&2
    fi
    return $rc
}
