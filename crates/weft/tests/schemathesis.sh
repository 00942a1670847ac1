#!/usr/bin/env bash
# Fuzzes the running api against its own OpenAPI document with schemathesis
# (https://schemathesis.readthedocs.io): every operation in /openapi.json gets generated
# requests (valid and invalid), and every answer must not be a 5xx and must match the schema
# documented for its status code.
#
#   crates/weft/tests/schemathesis.sh [extra schemathesis args]
#
# Environment:
#   WEFT_BIN       the weft binary (default: $CARGO_TARGET_DIR/debug/weft, else target/debug/weft)
#   SCHEMATHESIS   the schemathesis command (default: schemathesis on PATH)
#   MAX_EXAMPLES   examples per operation (default 30)
#   MAX_TIME       time budget in seconds (default 90)
#   SEED           random seed (default 1, so runs are reproducible)
#
# Install schemathesis with: python3 -m venv /tmp/st && /tmp/st/bin/pip install schemathesis
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../../.." && pwd)"
bin="${WEFT_BIN:-${CARGO_TARGET_DIR:-$root/target}/debug/weft}"
st="${SCHEMATHESIS:-schemathesis}"
[ -x "$bin" ] || { echo "error: no weft binary at $bin (cargo build -p weft, or set WEFT_BIN)" >&2; exit 64; }
command -v "$st" >/dev/null || { echo "error: $st not found (set SCHEMATHESIS)" >&2; exit 69; }

tmp="$(mktemp -d)"
pid=""
cleanup() {
    if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
    rm -rf "$tmp"
}
trap cleanup EXIT

# Long-polls (wait=) are held open: the request timeout below ends them (it is a read timeout,
# so it must be shorter than the bookmark interval, 10s by default). Watches are bounded in
# schemathesis.toml.
"$bin" server --data-dir "$tmp/data" --listen 127.0.0.1:0 >"$tmp/server.log" 2>&1 &
pid=$!
for _ in $(seq 1 300); do
    if [ -s "$tmp/data/server" ] && [ -s "$tmp/data/admin.token" ]; then
        url="$(cat "$tmp/data/server")"
        if curl -fsS -o /dev/null "$url/healthz" 2>/dev/null; then break; fi
    fi
    kill -0 "$pid" 2>/dev/null || { cat "$tmp/server.log" >&2; exit 1; }
    sleep 0.1
done
url="$(cat "$tmp/data/server")"
token="$(cat "$tmp/data/admin.token")"
curl -fsS -o /dev/null "$url/healthz"

# Some objects for the generated requests to find.
curl -fsS -o /dev/null -H "Authorization: Bearer $token" -H 'Content-Type: application/yaml' \
    --data-binary @"$here/fixtures/example.yaml" "$url/api/v1/apply"
curl -fsS -o /dev/null -H "Authorization: Bearer $token" -H 'Content-Type: application/yaml' \
    --data-binary @"$here/fixtures/system.yaml" "$url/api/v1/apply"

# Revoking tokens is left out: the stateful phase finds the admin token's id in the token list
# and revokes it, after which every request is a 401.
status=0
cd "$tmp" # schemathesis keeps state in ./.schemathesis
"$st" --config-file "$here/schemathesis.toml" run "$url/openapi.json" \
    --header "Authorization: Bearer $token" \
    --checks not_a_server_error,response_schema_conformance \
    --max-examples "${MAX_EXAMPLES:-30}" \
    --max-time "${MAX_TIME:-90}" \
    --seed "${SEED:-1}" \
    --request-timeout 3 \
    --workers 2 \
    --no-color \
    --generation-database none \
    --exclude-path '/api/v1/tokens/{id}' \
    "$@" || status=$?

if ! kill -0 "$pid" 2>/dev/null; then
    echo "error: the weft server died during the run" >&2
    tail -50 "$tmp/server.log" >&2
    exit 1
fi
if grep -q "panicked" "$tmp/server.log"; then
    echo "error: the weft server panicked:" >&2
    grep -A5 "panicked" "$tmp/server.log" >&2
    status=1
fi
exit "$status"
