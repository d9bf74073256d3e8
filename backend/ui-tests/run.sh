#!/usr/bin/env bash
# Browser tests of the Picket web UI against a real picket-backend:
# builds the backend and the seeder, starts the backend on free loopback
# ports with a temporary data directory, creates an admin, enrolls simulated
# devices and publishes their alerts over MQTT (mTLS, signed batches),
# installs a fleet root, pushes two rule bundles and rolls them out (the
# simulated devices acknowledge over MQTT), then runs the node:test suites in
# tests/ with Debian's Chromium.
#
# Environment:
#   SEED_DEVICES, SEED_ALERTS  fleet size (default 300 devices, 20000 alerts)
#   PICKET_UI_SERVER           a server binary to run instead of picket-backend
#                              (same CLI: --config FILE); for development only
#   KEEP=1                     keep the data directory and the backend log
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
shared=$(cd "$root/../shared" && pwd)
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target}"
devices="${SEED_DEVICES:-300}"
alerts="${SEED_ALERTS:-20000}"

echo "== build picket-backend and the seeder"
# Both target flags: with `--example` alone cargo would build no binary.
(cd "$root" && cargo build --locked -p picket-backend --bin picket-backend -p picket-ui --example seed)
bin="$CARGO_TARGET_DIR/debug/picket-backend"
server="${PICKET_UI_SERVER:-$bin}"
seed="$CARGO_TARGET_DIR/debug/examples/seed"

echo "== browser and test dependencies"
need=()
[ -x /usr/bin/chromium ] || need+=(chromium fonts-dejavu-core)
command -v node >/dev/null 2>&1 || need+=(nodejs)
command -v npm >/dev/null 2>&1 || need+=(npm)
if [ "${#need[@]}" -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  else
    echo "run.sh: missing ${need[*]} (apt-get install ${need[*]})" >&2
    exit 1
  fi
fi
(cd "$here" && npm ci --no-audit --no-fund --loglevel=error)

free_port() {
  node -e 'const s=require("net").createServer();s.listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'
}
http_port=$(free_port)
mqtt_port=$(free_port)
while [ "$mqtt_port" = "$http_port" ]; do mqtt_port=$(free_port); done

tmp=$(mktemp -d /tmp/picket-ui-tests.XXXXXX)
pid=""
cleanup() {
  if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  if [ "${KEEP:-0}" = 1 ]; then echo "kept $tmp"; else rm -rf "$tmp"; fi
}
trap cleanup EXIT

cat >"$tmp/backend.toml" <<TOML
data_dir = "$tmp/data"

[log]
filter = "info,rumqttd=warn"

[http]
listen = "127.0.0.1:$http_port"

[mqtt]
mode = "embedded"
listen = "127.0.0.1:$mqtt_port"
hostnames = ["127.0.0.1", "localhost"]

# The hunting-job test uploads a shared EVTX sample; SigmaHQ's Windows
# rules are the rule set it runs.
[agents]
rules_dirs = ["$shared/data/sigmahq/rules/windows"]
TOML

password="ui-tests-$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')"
PICKET_ADMIN_PASSWORD="$password" "$bin" --config "$tmp/backend.toml" create-admin --name admin

echo "== start the backend (http 127.0.0.1:$http_port, mqtt 127.0.0.1:$mqtt_port)"
"$server" --config "$tmp/backend.toml" >"$tmp/backend.log" 2>&1 &
pid=$!
url="http://127.0.0.1:$http_port"
for _ in $(seq 1 200); do
  if curl -fsS "$url/readyz" >/dev/null 2>&1; then break; fi
  if ! kill -0 "$pid" 2>/dev/null; then cat "$tmp/backend.log" >&2; echo "backend exited" >&2; exit 1; fi
  sleep 0.1
done
curl -fsS "$url/readyz" >/dev/null || { cat "$tmp/backend.log" >&2; echo "backend not ready" >&2; exit 1; }
if ! curl -fsS -D - -o /dev/null "$url/" | grep -qi '^content-security-policy:'; then
  echo "run.sh: $server does not serve the web UI at / (wire picket_ui::router() into it, see backend/ui/README.md)" >&2
  exit 1
fi

echo "== seed $devices devices and $alerts alerts over MQTT, rule bundles and rollouts"
"$seed" fill --api "$url" --mqtt "127.0.0.1:$mqtt_port" --user admin --password "$password" \
  --devices "$devices" --alerts "$alerts" --state "$tmp/seed.json" --data-dir "$tmp/data"
# PUBACKs come after commit, so this is a formality; it guards a change.
for _ in $(seq 1 600); do
  stored=$(curl -fsS "$url/metrics" | awk '/^picket_ingest_alerts_stored_total /{print $2}' || true)
  [ "${stored%.*}" -ge "$alerts" ] 2>/dev/null && break
  sleep 0.1
done
echo "stored alerts: $stored"

echo "== browser tests"
mkdir -p "$here/screenshots"
export PICKET_UI_URL="$url" PICKET_MQTT="127.0.0.1:$mqtt_port" PICKET_SEED_BIN="$seed" \
  PICKET_SEED_STATE="$tmp/seed.json" PICKET_ADMIN_PASSWORD="$password" \
  PICKET_SEEDED_ALERTS="${stored%.*}" PICKET_SEEDED_DEVICES="$devices" \
  PICKET_HUNT_EVTX="$shared/data/evtx/hayabusa-sample-evtx/EVTX-ATTACK-SAMPLES/Defense Evasion/de_unmanagedpowershell_psinject_sysmon_7_8_10.evtx" \
  PICKET_SCREENSHOTS="$here/screenshots"
cd "$here"
status=0
# One test file, its tests in order (Node 18, Debian 12's, and later).
node --test --test-reporter=spec tests/ui.test.js 2>&1 | tee "$tmp/tests.out" || status=$?
# The summary in cargo's format, which .ci/test totals.
passed=$(awk '/^ℹ pass /{print $3}' "$tmp/tests.out" | tail -1)
failed=$(awk '/^ℹ fail /{f=$3} /^ℹ cancelled /{c=$3} END{print f+c}' "$tmp/tests.out")
if [ "$status" != 0 ] && [ "${failed:-0}" = 0 ]; then failed=1; fi
result=ok
[ "$status" = 0 ] || result=FAILED
echo "test result: $result. ${passed:-0} passed; ${failed:-0} failed; 0 ignored; 0 measured; 0 filtered out (browser tests)"
if [ "$status" != 0 ]; then
  echo "== backend log (last 60 lines)"
  tail -n 60 "$tmp/backend.log"
fi
exit "$status"
