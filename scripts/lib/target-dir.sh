#!/usr/bin/env bash
# Prints Cargo's target directory as an absolute path, so that scripts run the binaries that
# `cargo build` just wrote wherever it wrote them: $CARGO_TARGET_DIR when set (a relative one is
# taken from the current directory, as cargo does), else the workspace's `target_directory` from
# `cargo metadata` (which also follows `build.target-dir` in a .cargo/config.toml).
#
#   bin=$(scripts/lib/target-dir.sh)/release     # then "$bin/chat-api"
set -euo pipefail

if [[ -n ${CARGO_TARGET_DIR:-} ]]; then
  case $CARGO_TARGET_DIR in
    /*) printf '%s\n' "$CARGO_TARGET_DIR" ;;
    *) printf '%s\n' "$PWD/$CARGO_TARGET_DIR" ;;
  esac
  exit 0
fi

# sed rather than a JSON tool: `make run` needs nothing but the Rust toolchain.
dir=$(cargo metadata --format-version 1 --no-deps \
  | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
if [[ -z $dir ]]; then
  echo "target-dir: cargo metadata named no target_directory" >&2
  exit 1
fi
printf '%s\n' "$dir"
