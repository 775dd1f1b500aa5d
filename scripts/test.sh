#!/usr/bin/env bash
# The one test command: ./scripts/test.sh [extra pytest args]
#
# Installs what the tests need (kcat from apt, the Python clients into .venv),
# builds the release binaries, runs the Rust tests, then the real-client
# integration tests against the built broker, then the fuzz and benchmark
# smoke runs when their scripts exist (fuzz, criterion benches, the Kafka
# load generator). CI runs exactly this (.ci/run).
#
# Every test stage runs even when an earlier one failed, so one run reports
# everything; the exit status is non-zero when any stage failed. Install and
# build failures stop the run at once: nothing after them can mean anything.
#
# Environment knobs:
#   QUIVER_SKIP_INSTALL=1   do not touch apt or .venv (offline re-runs)
#   QUIVER_INSTALL_ONLY=1   install kcat and .venv, then stop
#   QUIVER_SKIP_CARGO_TESTS=1  skip the Rust test stage
#   PYTEST_TIMEOUT_S        per-test time limit (default 180 s)
#   INTEGRATION_TIMEOUT_S   limit for the whole integration stage (default 1800 s)
#   FUZZ_SMOKE_TIMEOUT_S, PERF_SMOKE_TIMEOUT_S  limits for those stages (1500 s, 900 s);
#   BENCH_SMOKE_TIMEOUT_S   per bench binary (300 s; a hang is retried once)
#   Extra arguments go to pytest, e.g. ./scripts/test.sh -k kcat
set -euo pipefail

cd "$(dirname "$0")/.."
repo_root="$(pwd)"

pytest_timeout_s="${PYTEST_TIMEOUT_S:-180}"
integration_timeout_s="${INTEGRATION_TIMEOUT_S:-1800}"
# Caps on the smoke stages (each normally takes 2-5 minutes, builds included), so a hang
# fails its stage instead of using up CI's time; bench-smoke.sh watches each bench itself.
fuzz_timeout_s="${FUZZ_SMOKE_TIMEOUT_S:-1500}"
perf_timeout_s="${PERF_SMOKE_TIMEOUT_S:-900}"
venv_dir="$repo_root/.venv"
requirements="$repo_root/tests/requirements.txt"

log() { printf '== test.sh: %s\n' "$*" >&2; }

# Runs a noisy command with its output kept in a file; prints that output only
# when the command fails, so installs stay quiet but never hide an error.
quietly() {
    local output_file
    output_file="$(mktemp)"
    if "$@" >"$output_file" 2>&1; then
        rm -f "$output_file"
        return 0
    else
        local status=$?
        cat "$output_file" >&2
        rm -f "$output_file"
        return "$status"
    fi
}

as_root() {
    if [[ "$(id -u)" -eq 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo -n "$@"
    else
        log "need root for: $*"
        return 1
    fi
}

apt_updated=0
apt_install() {
    # A fresh machine may have no package lists yet: update once, then install.
    if [[ "$apt_updated" -eq 0 ]]; then
        quietly as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
        apt_updated=1
    fi
    quietly as_root env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -q --no-install-recommends "$@"
}

install_system_packages() {
    if command -v kcat >/dev/null 2>&1; then
        return 0
    fi
    log "installing kcat (apt)"
    apt_install kcat
    command -v kcat >/dev/null 2>&1 || { log "kcat still missing after apt-get install"; return 1; }
}

python_for_venv() {
    local candidate
    for candidate in python3 python; do
        if command -v "$candidate" >/dev/null 2>&1 \
            && "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 9))' 2>/dev/null; then
            echo "$candidate"
            return 0
        fi
    done
    log "no python3 >= 3.9 on PATH"
    return 1
}

# .venv is rebuilt when missing or broken, and re-synced only when the pinned
# requirements or the interpreter changed (the stamp records both).
install_python_packages() {
    local python stamp_file wanted_stamp
    python="$(python_for_venv)"
    stamp_file="$venv_dir/.quiver-requirements-stamp"
    wanted_stamp="$("$python" -c 'import sys; print(sys.version)' | head -n 1) $(sha256sum "$requirements" | cut -d' ' -f1)"

    if [[ ! -x "$venv_dir/bin/python" ]] || ! "$venv_dir/bin/python" -c 'import sys' >/dev/null 2>&1; then
        log "creating .venv"
        rm -rf "$venv_dir"
        if ! quietly "$python" -m venv "$venv_dir"; then
            # Debian's own python3 needs python3-venv for ensurepip.
            log "python -m venv failed; installing python3-venv and retrying"
            apt_install python3-venv
            rm -rf "$venv_dir"
            quietly "$python" -m venv "$venv_dir"
        fi
    fi

    if [[ -f "$stamp_file" && "$(cat "$stamp_file")" == "$wanted_stamp" ]]; then
        return 0
    fi
    log "installing tests/requirements.txt into .venv"
    quietly "$venv_dir/bin/python" -m pip install --disable-pip-version-check \
        --no-input -q -r "$requirements"
    printf '%s' "$wanted_stamp" >"$stamp_file"
}

failed_stages=()
run_stage() {
    local name="$1"
    shift
    log "$name"
    local started_s=$SECONDS
    if "$@"; then
        log "$name: ok ($((SECONDS - started_s)) s)"
    else
        local status=$?
        log "$name: FAILED with status $status ($((SECONDS - started_s)) s)"
        failed_stages+=("$name")
    fi
}

cargo_tests() {
    if cargo nextest --version >/dev/null 2>&1; then
        cargo nextest run --workspace --release --no-tests=warn
    else
        cargo test --workspace --release
    fi
}

integration_tests() {
    # pytest reads tests/integration/pytest.ini; the binary was just built.
    QUIVER_BIN="${QUIVER_BIN:-$repo_root/target/release/quiver}" \
        timeout --kill-after=30 "$integration_timeout_s" \
        "$venv_dir/bin/python" -m pytest tests/integration -q \
        --timeout="$pytest_timeout_s" "$@"
}

if [[ "${QUIVER_SKIP_INSTALL:-0}" != "1" ]]; then
    log "install"
    install_system_packages
    install_python_packages
fi
if [[ "${QUIVER_INSTALL_ONLY:-0}" == "1" ]]; then
    log "installed; stopping (QUIVER_INSTALL_ONLY=1)"
    exit 0
fi

log "cargo build --release --bins"
cargo build --release --bins

if [[ "${QUIVER_SKIP_CARGO_TESTS:-0}" != "1" ]]; then
    run_stage "cargo tests" cargo_tests
fi
run_stage "integration tests (pytest)" integration_tests "$@"
if [[ -f scripts/fuzz-smoke.sh ]]; then
    run_stage "fuzz smoke" timeout --kill-after=30 "$fuzz_timeout_s" bash scripts/fuzz-smoke.sh
fi
if [[ -f scripts/bench-smoke.sh ]]; then
    run_stage "bench smoke" bash scripts/bench-smoke.sh
fi
if [[ -f scripts/perf-smoke.sh ]]; then
    run_stage "perf smoke" timeout --kill-after=30 "$perf_timeout_s" bash scripts/perf-smoke.sh
fi

if [[ "${#failed_stages[@]}" -gt 0 ]]; then
    log "failed stages: ${failed_stages[*]}"
    exit 1
fi
log "all stages passed"
