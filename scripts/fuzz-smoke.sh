#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/fuzz_targets for a bounded time each, starting
# from the committed seeds in fuzz/seeds/<target>/ (if any) plus the local corpus in
# fuzz/corpus/<target>/ (not committed). Installs cargo-fuzz when it is missing.
#
# Only stable Rust exists here: RUSTC_BOOTSTRAP=1 lets cargo-fuzz pass its -Z flags, and
# --sanitizer none skips AddressSanitizer (much faster per input; the targets are safe
# Rust). cargo-fuzz builds in release with debug assertions and overflow checks on.
#
# Environment: FUZZ_SECONDS (default 20) per target; FUZZ_TARGETS (space-separated
# names) to run only some.
set -euo pipefail

seconds="${FUZZ_SECONDS:-20}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz-smoke: installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

cd "$root/fuzz"
if [[ -n "${FUZZ_TARGETS:-}" ]]; then
    read -r -a targets <<<"$FUZZ_TARGETS"
else
    targets=()
    for file in fuzz_targets/*.rs; do
        targets+=("$(basename "$file" .rs)")
    done
fi
if [[ ${#targets[@]} -eq 0 ]]; then
    echo "fuzz-smoke: no targets in fuzz/fuzz_targets" >&2
    exit 1
fi

failed=()
for target in "${targets[@]}"; do
    # libFuzzer writes new inputs into the first corpus directory and only reads the rest.
    corpora=("corpus/$target")
    mkdir -p "corpus/$target"
    if [[ -d "seeds/$target" ]]; then
        corpora+=("seeds/$target")
    fi
    echo "fuzz-smoke: $target for ${seconds}s (corpora: ${corpora[*]})"
    if ! RUSTC_BOOTSTRAP=1 cargo fuzz run "$target" --sanitizer none "${corpora[@]}" -- \
        -max_total_time="$seconds" -print_final_stats=1; then
        failed+=("$target")
    fi
done

if [[ ${#failed[@]} -gt 0 ]]; then
    echo "fuzz-smoke: FAILED: ${failed[*]} (crashing inputs are in fuzz/artifacts/<target>/)" >&2
    exit 1
fi
echo "fuzz-smoke: ${#targets[@]} targets passed"
