#!/usr/bin/env bash
# Runs every cargo-fuzz target (fuzz/fuzz_targets) for a bounded time, starting from its named
# seeds (fuzz/seeds/<target>) and growing fuzz/corpus/<target> (gitignored). Fails on any crash,
# panic, sanitizer report, leak or slow input, and prints executions and coverage per target.
#
#   FUZZ_SECONDS        seconds per target (default 60)
#   FUZZ_TARGETS        targets to run, space-separated (default: all)
#   FUZZ_SANITIZER      address (default) or none
#   FUZZ_CODEGEN_UNITS  codegen units of the fuzz build (default cargo-fuzz's 1; 16 builds faster)
#
# Only stable Rust is assumed: cargo-fuzz passes nightly-only flags (-Zsanitizer=address, ...),
# which RUSTC_BOOTSTRAP=1 lets a stable compiler accept. Logs: fuzz/artifacts/logs/<target>.log;
# a failing input: fuzz/artifacts/<target>/, replayed with the command printed on failure.
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_FUZZ_VERSION=0.13.2
seconds=${FUZZ_SECONDS:-60}
sanitizer=${FUZZ_SANITIZER:-address}
export RUSTC_BOOTSTRAP=1

if [ "$(cargo fuzz --version 2>/dev/null | awk '{print $2}')" != "$CARGO_FUZZ_VERSION" ]; then
  echo "installing cargo-fuzz $CARGO_FUZZ_VERSION"
  cargo install --quiet --locked cargo-fuzz --version "$CARGO_FUZZ_VERSION"
fi

build=(--sanitizer "$sanitizer")
if [ -n "${FUZZ_CODEGEN_UNITS:-}" ]; then
  build+=(--codegen-units "$FUZZ_CODEGEN_UNITS")
fi
read -r -a targets <<<"${FUZZ_TARGETS:-$(cargo fuzz list | tr '\n' ' ')}"

start=$(date +%s)
cargo fuzz build "${build[@]}"
echo "fuzz build: $(($(date +%s) - start)) s (sanitizer: $sanitizer)"

mkdir -p fuzz/artifacts/logs
rows=()
failed=()
for target in "${targets[@]}"; do
  log=fuzz/artifacts/logs/$target.log
  corpus=(fuzz/corpus/"$target")
  [ -d fuzz/seeds/"$target" ] && corpus+=(fuzz/seeds/"$target")
  mkdir -p fuzz/corpus/"$target"
  extra=()
  case $target in
    # Generator inputs: a longer input is a larger configuration with more facts, so use the
    # whole length from the start instead of growing it slowly.
    config_structured | decide) extra=(-max_len=2048 -len_control=0) ;;
  esac
  echo "fuzzing $target for ${seconds}s"
  status=ok
  # -timeout: an input that takes over 10 s is a failure (a hang), not a slow run.
  if ! cargo fuzz run "${build[@]}" "$target" "${corpus[@]}" -- \
      -max_total_time="$seconds" -timeout=10 -print_final_stats=1 "${extra[@]}" >"$log" 2>&1; then
    status=FAILED
    failed+=("$target")
    echo "---- $target failed ($log):"
    # The panic message or sanitizer report, else the end of the log.
    if ! grep -a -m 1 -A 12 -E "panicked at|ERROR: (AddressSanitizer|LeakSanitizer|libFuzzer)|ALARM: working on the last Unit" "$log"; then
      tail -n 30 "$log"
    fi
    if artifact=$(grep -a -o 'Test unit written to [^ ]*' "$log" | tail -n 1 | cut -d' ' -f5); then
      echo "---- replay: RUSTC_BOOTSTRAP=1 cargo fuzz run $target $artifact"
    fi
  fi
  # libFuzzer's last status line: "#N DONE cov: C ft: F corp: n/size lim: L exec/s: E rss: R".
  done_line=$(grep -a -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -n 1 || true)
  execs=$(grep -a -o 'stat::number_of_executed_units: [0-9]*' "$log" | awk '{print $2}' | tail -n 1 || true)
  field() { awk -v key="$1" '{for (i = 1; i < NF; i++) if ($i == key) print $(i + 1)}' <<<"$done_line"; }
  rows+=("$(printf '%-20s %-7s %11s %9s %7s %7s %14s' "$target" "$status" "${execs:--}" \
    "$(field exec/s:)" "$(field cov:)" "$(field ft:)" "$(field corp:)")")
done

echo
echo "fuzzing, ${seconds}s per target, sanitizer $sanitizer, total $(($(date +%s) - start)) s"
printf '%-20s %-7s %11s %9s %7s %7s %14s\n' target status execs exec/s cov ft corpus
printf '%s\n' "${rows[@]}"
if [ ${#failed[@]} -gt 0 ]; then
  echo "FAILED: ${failed[*]} (logs in fuzz/artifacts/logs/)"
  exit 1
fi
