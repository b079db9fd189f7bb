#!/usr/bin/env bash
# Fuzzes the decoders of untrusted bytes (fuzz/fuzz_targets: client frames as JSON and
# MessagePack, the bus envelope, sync cursors) with cargo-fuzz / libFuzzer.
#
#   scripts/fuzz.sh            # short run for CI: FUZZ_SECS (default 20) seconds per target
#   FUZZ_SECS=180 scripts/fuzz.sh   # the longer run recorded in docs/security.md
#   scripts/fuzz.sh cursor     # only the named targets
#
# Installs what it needs: the nightly toolchain (minimal profile) and cargo-fuzz. Starts from
# the committed seeds (fuzz/seeds/<target>) plus the local corpus (fuzz/corpus, not committed).
# A crash fails the script; the input is left in fuzz/artifacts/<target>/.
set -euo pipefail
cd "$(dirname "$0")/.."

secs=${FUZZ_SECS:-20}
max_len=${FUZZ_MAX_LEN:-4096}

if ! rustup toolchain list | grep -q '^nightly'; then
  rustup toolchain install nightly --profile minimal
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked
fi

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cargo +nightly fuzz list --fuzz-dir fuzz)
fi

cargo +nightly fuzz build --fuzz-dir fuzz
summary=()
for target in "${targets[@]}"; do
  mkdir -p "fuzz/corpus/$target"
  log=$(mktemp)
  echo "== fuzzing $target for ${secs}s"
  if ! cargo +nightly fuzz run --fuzz-dir fuzz "$target" "fuzz/corpus/$target" "fuzz/seeds/$target" -- \
      -max_total_time="$secs" -max_len="$max_len" -print_final_stats=1 >"$log" 2>&1; then
    tail -n 40 "$log"
    echo "FAIL: $target crashed; input in fuzz/artifacts/$target/" >&2
    exit 1
  fi
  runs=$(grep -Eo 'Done [0-9]+ runs in [0-9]+ second' "$log" | tail -n1 | awk '{print $2}')
  took=$(grep -Eo 'Done [0-9]+ runs in [0-9]+ second' "$log" | tail -n1 | awk '{print $5}')
  last=$(grep -E '^#[0-9]+' "$log" | tail -n1)
  execs=$(grep -Eo 'exec/s: [0-9]+' <<<"$last" | awk '{print $2}')
  cov=$(grep -Eo 'cov: [0-9]+' <<<"$last" | awk '{print $2}')
  summary+=("$(printf '%-22s %12s runs in %4ss  %8s exec/s  cov %s' "$target" "${runs:-?}" "${took:-?}" "${execs:-?}" "${cov:-?}")")
  rm -f "$log"
done
echo "== fuzz summary (${secs}s per target)"
printf '%s\n' "${summary[@]}"
