#!/usr/bin/env bash
# Smoke-fuzz every cargo-fuzz target for a few seconds (CI runs this; so can you).
#
#   bash fuzz/run.sh                    # each target for 20 s
#   FUZZ_SECONDS=300 bash fuzz/run.sh   # longer
#
# Works on stable Rust: targets are built with `--sanitizer none` (a panic or a failed
# assertion is the crash), into fuzz/target (fuzz/ is its own cargo workspace). Each
# target fuzzes a scratch copy of its seed corpus fuzz/corpus/<target>/, so runs never
# add files to the repository. Inputs in fuzz/regressions/<target>/ (crashes found
# earlier) are replayed first. Exits non-zero if any target crashes, hangs (-timeout)
# or fails to build; a crashing input is left in fuzz/artifacts/<target>/ and printed
# in hex.
#
# Longer runs with AddressSanitizer (from the repository root; a separate, full build):
#   RUSTC_BOOTSTRAP=1 cargo fuzz run TARGET -- -max_total_time=N
# It fuzzes fuzz/corpus/TARGET in place (the inputs it adds there are git-ignored); give
# a directory after TARGET to fuzz a copy instead. Its build replaces this script's in
# fuzz/target; prefix CARGO_TARGET_DIR=fuzz/target/asan to keep both. Add -fork=2 after
# `--` to use both cores. Reproduce a crash, minimize it, list the targets:
#   cargo fuzz run --sanitizer none TARGET fuzz/artifacts/TARGET/crash-...
#   cargo fuzz tmin --sanitizer none TARGET fuzz/artifacts/TARGET/crash-...
#   cargo fuzz list
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${FUZZ_SECONDS:-20}
# The same build options for `build` and `run`, or `run` rebuilds.
build_opts=(--sanitizer none)

# libfuzzer-sys compiles libFuzzer (C++).
if ! command -v c++ >/dev/null; then
  echo "fuzz: needs a C++ compiler (c++), e.g. apt-get install g++" >&2
  exit 1
fi
if ! command -v cargo-fuzz >/dev/null; then
  cargo install cargo-fuzz --locked
fi

# Fuzz the dependency versions the gateway ships with: fuzz/Cargo.lock (git-ignored)
# starts as a copy of the root lock file; cargo drops what fuzz/ does not use and adds
# libfuzzer-sys.
cp Cargo.lock fuzz/Cargo.lock

start=$(date +%s)
cargo fuzz build "${build_opts[@]}"
echo "fuzz: targets built in $(($(date +%s) - start))s"

scratch=$(mktemp -d "${TMPDIR:-/tmp}/tollgate-fuzz.XXXXXX")
trap 'rm -rf "$scratch"' EXIT

failed=()
for target in $(cargo fuzz list); do
  corpus="$scratch/corpus/$target"
  mkdir -p "$corpus"
  if [ -d "fuzz/corpus/$target" ]; then
    cp -R "fuzz/corpus/$target/." "$corpus/"
  fi
  log="$scratch/$target.log"
  flags=(-max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1)

  regressions=()
  if [ -d "fuzz/regressions/$target" ]; then
    while IFS= read -r -d '' f; do regressions+=("$f"); done \
      < <(find "fuzz/regressions/$target" -type f ! -name '.*' ! -name '*.md' -print0)
  fi
  # With files as arguments, libFuzzer runs each once and stops.
  if ((${#regressions[@]})) &&
    ! cargo fuzz run "${build_opts[@]}" "$target" "${regressions[@]}" -- -timeout=10 >"$log" 2>&1; then
    echo "fuzz: $target FAILED on an input from fuzz/regressions/$target:"
    tail -n 40 "$log"
    grep -B 2 -A 2 "panicked at" "$log" | head -n 20 || true
    failed+=("$target")
    continue
  fi

  echo "fuzz: $target for ${seconds}s"
  if cargo fuzz run "${build_opts[@]}" "$target" "$corpus" -- "${flags[@]}" >"$log" 2>&1; then
    grep -E '^(#[0-9]+[[:space:]]+DONE|Done )' "$log" || tail -n 3 "$log"
  else
    echo "fuzz: $target FAILED:"
    # libFuzzer's report (panic message, backtrace, artifact path) is at the end.
    tail -n 60 "$log"
    grep -A 2 "panicked at" "$log" | head -n 20 || true
    for a in $(grep -oE "fuzz/artifacts/$target/[A-Za-z0-9_.-]+" "$log" | sort -u || true); do
      [ -f "$a" ] && echo "input $a (hex): $(od -An -v -tx1 "$a" | tr -d ' \n' | head -c 4096)"
    done
    failed+=("$target")
  fi
done

echo "fuzz: done in $(($(date +%s) - start))s"
if ((${#failed[@]})); then
  echo "fuzz: FAILED: ${failed[*]}" >&2
  exit 1
fi
