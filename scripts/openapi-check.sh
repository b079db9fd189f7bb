#!/usr/bin/env bash
# `make openapi-check`: docs/openapi.yaml against a running chat-api. Installs schemathesis
# (pinned, from PyPI) into .tmp/schemathesis-venv when missing, starts a private chat-api on a
# free port against a fresh database and Redis prefix, seeds two users, a chat, a message and an
# image message with its attachment so that small ids exist, and runs schemathesis with a
# registered user's token: no 5xx, status codes, content types and bodies as documented. Kept
# well under 3 minutes (OPENAPI_MAX_TIME). Attachments go to a private directory under $OUT with
# a 64 KiB limit (OPENAPI_ATTACHMENT_MAX_BYTES), so the fuzzed uploads stay small and 413 is
# reachable.
# The spec is validated first (openapi-spec-validator). Extra arguments go to
# `schemathesis run` (later options win), e.g. `--checks all`.
set -euo pipefail
cd "$(dirname "$0")/.."
SCHEMATHESIS_VERSION=4.32.5
SPEC_VALIDATOR_VERSION=0.9.0
VENV=.tmp/schemathesis-venv
OUT=.tmp/openapi-check
MAX_EXAMPLES=${OPENAPI_MAX_EXAMPLES:-25}
MAX_TIME=${OPENAPI_MAX_TIME:-120}
SEED=${OPENAPI_SEED:-8}
ATTACHMENT_MAX_BYTES=${OPENAPI_ATTACHMENT_MAX_BYTES:-65536}

# Captured first: `grep -q` exiting early would fail the pipe (pipefail) and reinstall every run.
installed=$("$VENV/bin/schemathesis" --version 2>/dev/null || true)
validator=$("$VENV/bin/pip" show openapi-spec-validator 2>/dev/null || true)
if [[ $installed != *"$SCHEMATHESIS_VERSION"* ]] \
    || ! grep -qx "Version: $SPEC_VALIDATOR_VERSION" <<<"$validator"; then
  echo "openapi-check: installing schemathesis $SCHEMATHESIS_VERSION into $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION" \
    "openapi-spec-validator==$SPEC_VALIDATOR_VERSION" \
    || { echo "FAIL: could not install schemathesis from PyPI" >&2; exit 1; }
fi

# The document itself first: a structurally invalid spec would make every later result moot.
"$VENV/bin/openapi-spec-validator" docs/openapi.yaml \
  || { echo "FAIL: docs/openapi.yaml is not a valid OpenAPI 3.1 document" >&2; exit 1; }

rm -rf "$OUT"
mkdir -p "$OUT"
STACK_LOGS=$OUT
# Read by the chat-api that stack_up starts.
export CHAT_ATTACHMENTS_DIR=$PWD/$OUT/attachments CHAT_ATTACHMENTS_MAX_BYTES=$ATTACHMENT_MAX_BYTES
# shellcheck source=private-stack.sh
source scripts/private-stack.sh
trap stack_down EXIT
stack_up openapi

post() { # path token json
  curl -fsS -X POST "$API_URL$1" ${2:+-H "Authorization: Bearer $2"} -d "$3"
}
json_field() { python3 -c "import json,sys; d=json.load(sys.stdin); print(eval('d' + sys.argv[1]))" "$1"; }
token=$(post /v1/auth/register "" '{"username":"schemathesis","password":"password123"}' | json_field '["token"]')
peer=$(post /v1/auth/register "" '{"username":"peer","password":"password123"}' | json_field '["user"]["id"]')
chat=$(post /v1/chats "$token" "{\"type\":\"private\",\"peer_id\":$peer}" | json_field '["id"]')
post "/v1/chats/$chat/messages" "$token" '{"client_msg_id":"seed-1","text":"hello"}' >/dev/null
# A PNG signature is enough for the sniffer: an image/png attachment, sent in the chat.
attachment=$(printf '\x89PNG\r\n\x1a\n\0\0\0\rIHDRseed' \
  | curl -fsS -X POST "$API_URL/v1/attachments" -H "Authorization: Bearer $token" --data-binary @- \
  | json_field '["id"]')
post "/v1/chats/$chat/messages" "$token" \
  "{\"client_msg_id\":\"seed-2\",\"type\":\"image\",\"attachment_id\":$attachment,\"text\":\"a picture\"}" >/dev/null
post /v1/chats "$token" "{\"type\":\"group\",\"title\":\"seed group\",\"member_ids\":[$peer]}" >/dev/null

echo "openapi-check: schemathesis against $API_URL (max $MAX_EXAMPLES examples per operation, ${MAX_TIME}s)"
# Logout is left out: it would revoke the token every other request uses (the end-to-end
# suite covers it).
# Hypothesis keeps its example database in the working directory unless told otherwise.
# One worker: with two, both threads' first Hypothesis `filter` parses the same source file at
# once, which CPython 3.11 can fail with "SystemError: AST constructor recursion depth mismatch"
# (a random operation then errors). Generation holds the GIL anyway; --max-time bounds the run.
export HYPOTHESIS_STORAGE_DIRECTORY=$PWD/.tmp/hypothesis
set +e
timeout $((MAX_TIME + 60)) "$VENV/bin/schemathesis" run docs/openapi.yaml \
  --url "$API_URL" \
  -H "Authorization: Bearer $token" \
  --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance \
  --exclude-path /v1/auth/logout \
  --phases examples,coverage,fuzzing \
  --max-examples "$MAX_EXAMPLES" \
  --max-time "$MAX_TIME" \
  --seed "$SEED" \
  --workers 1 \
  --request-timeout 20 \
  --suppress-health-check too_slow,filter_too_much \
  --report junit --report-dir "$OUT" \
  "$@" 2>&1 | tee "$OUT/schemathesis.txt"
status=${PIPESTATUS[0]}
set -e
if [[ $status -ne 0 ]]; then
  echo "FAIL: schemathesis found problems (exit $status); output and api log in $OUT/" >&2
  exit 1
fi
echo "openapi-check: PASS"
