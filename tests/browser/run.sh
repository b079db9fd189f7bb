#!/usr/bin/env bash
# `make test-browser`: two users chat through the web client in Debian's chromium, driven by
# playwright-core, against a private stack (chat-api + one gateway on free ports, a fresh
# database, a unique Redis prefix; with STACK_MODE=embedded one chat-embedded process on SQLite
# and the in-memory bus). Screenshots land in .tmp/browser-artifacts[-embedded]/.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
ARTIFACTS=$ROOT/.tmp/browser-artifacts${STACK_MODE:+-$STACK_MODE}
rm -rf "$ARTIFACTS"
mkdir -p "$ARTIFACTS"

if ! command -v chromium >/dev/null 2>&1; then
  echo "browser-test: installing Debian's chromium"
  sudo_=""; [[ $(id -u) -eq 0 ]] || sudo_=sudo
  $sudo_ apt-get update -qq && $sudo_ apt-get install -y -qq chromium >/dev/null \
    || { echo "FAIL: could not install chromium with apt-get" >&2; exit 1; }
fi
(cd tests/browser && npm ci --no-audit --no-fund --loglevel=error) \
  || { echo "FAIL: npm ci in tests/browser failed" >&2; exit 1; }

STACK_LOGS=$ARTIFACTS
# shellcheck source=../../scripts/private-stack.sh
source scripts/private-stack.sh
trap stack_down EXIT
stack_up browser gateway

echo "browser-test: ${STACK_MODE:-scaled} stack, api $API_URL, gateway $WS_URL"
if API_URL=$API_URL WS_URL=$WS_URL ARTIFACTS=$ARTIFACTS CHROMIUM=${CHROMIUM:-$(command -v chromium)} \
    node tests/browser/chat.test.mjs; then
  echo "browser-test: PASS (${STACK_MODE:-scaled}; screenshots in ${ARTIFACTS#"$ROOT"/})"
else
  echo "FAIL: browser test (${STACK_MODE:-scaled}) failed; screenshots and service logs in ${ARTIFACTS#"$ROOT"/}" >&2
  exit 1
fi
