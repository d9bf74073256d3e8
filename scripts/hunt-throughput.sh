#!/usr/bin/env bash
# Hunting-job throughput: the whole shared EVTX set (../shared/data/evtx)
# uploaded to a release picket-backend as one job, with SigmaHQ's Windows
# rules as the agent rule set, against `picketctl hunt --threads 2` over the
# same files (the backend's default [hunts] threads = 2), alternating, ROUNDS
# times each, in one run so both see the same machine load. Prints each
# round's scan time (the job's finished_ms - started_ms; picketctl's wall
# time), records and matches.
#
#   cargo build --release -p picket-backend --bin picket-backend -p picket-cli --bin picketctl
#   bash scripts/hunt-throughput.sh
#
# BACKEND and PICKETCTL name other binaries (a target directory shared
# between checkouts may hold another checkout's build).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
target="${CARGO_TARGET_DIR:-$root/target}/release"
shared=$(cd "$root/../shared" && pwd)
rules="$shared/data/sigmahq/rules/windows"
evtx="$shared/data/evtx"
rounds="${ROUNDS:-3}"

tmp=$(mktemp -d /tmp/picket-hunt-bench.XXXXXX)
pid=""
cleanup() {
  if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  rm -rf "$tmp"
}
trap cleanup EXIT

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat >"$tmp/backend.toml" <<TOML
data_dir = "$tmp/data"
[log]
filter = "warn"
[http]
listen = "127.0.0.1:$port"
[mqtt]
mode = "embedded"
listen = "127.0.0.1:0"
[agents]
rules_dirs = ["$rules"]
TOML
password="bench-$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')"
backend="${BACKEND:-$target/picket-backend}"
picketctl="${PICKETCTL:-$target/picketctl}"
PICKET_ADMIN_PASSWORD="$password" "$backend" --config "$tmp/backend.toml" create-admin --name admin >/dev/null
"$backend" --config "$tmp/backend.toml" >"$tmp/backend.log" 2>&1 &
pid=$!
url="http://127.0.0.1:$port"
for _ in $(seq 1 300); do curl -fsS "$url/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
token=$(curl -fsS -H 'content-type: application/json' \
  -d "{\"name\":\"admin\",\"password\":\"$password\"}" "$url/api/v1/auth/login" |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')

mapfile -d '' files < <(find "$evtx" -name '*.evtx' -print0 | sort -z)
bytes=$(cat "${files[@]}" | wc -c)
echo "files: ${#files[@]}, $((bytes / 1024)) KiB; rules: $rules"
args=()
for f in "${files[@]}"; do args+=(-F "file=@$f"); done

for round in $(seq 1 "$rounds"); do
  id=$(curl -fsS -H "authorization: Bearer $token" -F "name=round $round" "${args[@]}" "$url/api/v1/hunts" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
  while :; do
    job=$(curl -fsS -H "authorization: Bearer $token" "$url/api/v1/hunts/$id")
    state=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["state"])' "$job")
    [ "$state" = queued ] || [ "$state" = running ] || break
    sleep 0.2
  done
  python3 -c '
import json, sys
j = json.loads(sys.argv[1])
secs = (j["finished_ms"] - j["started_ms"]) / 1000
failed = sum(1 for f in j["files"] if f["state"] == "failed")
records, matches, state = j["records_done"], j["matches"], j["state"]
print(f"backend job   round {sys.argv[2]}: {secs:6.2f} s, {records} records ({records / secs:,.0f}/s), "
      f"{matches} matches, {failed} files failed, state {state}")
' "$job" "$round"
  curl -fsS -X DELETE -H "authorization: Bearer $token" "$url/api/v1/hunts/$id" >/dev/null
  start=$(date +%s.%N)
  "$picketctl" hunt --no-progress --jsonl --threads 2 --rules "$rules" "${files[@]}" >"$tmp/cli.jsonl" 2>"$tmp/cli.err"
  end=$(date +%s.%N)
  matches=$(wc -l <"$tmp/cli.jsonl")
  python3 -c 'import sys; print(f"picketctl hunt round {sys.argv[3]}: {float(sys.argv[2]) - float(sys.argv[1]):6.2f} s (with rule loading), {sys.argv[4]} matches")' \
    "$start" "$end" "$round" "$matches"
  grep -o '[0-9]* events.*s on 2 threads' "$tmp/cli.err" | sed 's/^/  picketctl: /'
done
