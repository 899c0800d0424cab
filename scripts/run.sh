#!/usr/bin/env bash
# run.sh starts the single-machine default: flow-collector on loopback (embedded sonar, DuckDB under
# ./data, query API) and a host-scope flow-exporter that ships every TCP connection of this machine to
# it. Ctrl-C stops both in order: the exporter first, so its last records reach the collector, which
# then commits what it holds. The data stay in ./data for the next run.
set -euo pipefail
cd "$(dirname "$0")/.."
FLUSH=${FLOWLENS_FLUSH_INTERVAL:-5s}
API=127.0.0.1:9480
# Each runs in a session of its own, so Ctrl-C reaches only this script, which stops them in order.
# The attribution deadline is two of the exporter's flush intervals (see the README).
setsid bin/flow-collector --insecure --grpc-addr=127.0.0.1:9990 --api-addr=$API --metrics-addr=127.0.0.1:9478 \
  --data-dir=data --attribution-deadline=$(( ${FLUSH%s} * 2 ))s --log-level=warn &
collector=$!
exporter=
stop() {
  trap - INT TERM EXIT
  if [ -n "$exporter" ]; then kill -INT "$exporter" 2>/dev/null || true; wait "$exporter" 2>/dev/null || true; fi
  kill -INT "$collector" 2>/dev/null || true
  wait "$collector" 2>/dev/null || true
  echo "stopped; the flows are kept in ./data" >&2
}
trap stop INT TERM EXIT
ready=
for _ in $(seq 100); do
  if curl -sf -o /dev/null http://$API/readyz; then ready=1; break; fi
  if ! kill -0 "$collector" 2>/dev/null; then echo "flow-collector exited; see its log above" >&2; exit 1; fi
  sleep 0.1
done
[ -n "$ready" ] || { echo "flow-collector did not become ready" >&2; exit 1; }
setsid bin/flow-exporter --scope=host --output=collector --collector-grpc-addr=127.0.0.1:9990 --collector-insecure \
  --flush-interval="$FLUSH" --metrics-addr=127.0.0.1:9477 --log-level=warn &
exporter=$!
cat >&2 <<MSG

flowlens is running on this machine:
  console    http://$API/   (dependency map, flow explorer, IP lookup, fleet health)
  query API  http://$API/api/v1/flows   (also /deps, /top, /failing, /cross, /lookup?ip=..., /ranges?ip=...)
  collector  gRPC ingest 127.0.0.1:9990; metrics http://127.0.0.1:9478/metrics; health http://$API/readyz
  exporter   host scope, flush every $FLUSH; metrics http://127.0.0.1:9477/metrics
  data       ./data (DuckDB; kept across restarts)
  try        curl -s http://$API/healthz; sleep $FLUSH; bin/flowctl flows --port 9480
             bin/flowctl deps          bin/flowctl top          bin/flowctl failing
             bin/flowctl lookup IP --at -1m   (an address this machine talked to; loopback is attributed per socket)
  stop       Ctrl-C

MSG
wait "$exporter"
