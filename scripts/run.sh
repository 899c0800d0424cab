#!/usr/bin/env bash
# run.sh starts the single-machine pipeline: flow-collector on loopback, and a host-scope flow-exporter
# that ships every connection of this machine to it. The collector prints the records it receives as JSON
# lines. Ctrl-C stops both in order: the exporter first, so its last records reach the collector.
set -euo pipefail
cd "$(dirname "$0")/.."
# Each runs in a session of its own, so Ctrl-C reaches only this script, which stops them in order.
setsid bin/flow-collector --insecure --grpc-addr=127.0.0.1:9990 --metrics-addr=127.0.0.1:9478 --output=stdout &
collector=$!
exporter=
stop() {
  trap - INT TERM EXIT
  if [ -n "$exporter" ]; then kill -INT "$exporter" 2>/dev/null || true; wait "$exporter" 2>/dev/null || true; fi
  kill -INT "$collector" 2>/dev/null || true
  wait "$collector" 2>/dev/null || true
}
trap stop INT TERM EXIT
for _ in $(seq 50); do
  curl -sf -o /dev/null http://127.0.0.1:9478/healthz && break
  sleep 0.1
done
cat >&2 <<MSG

flowlens is running on this machine:
  collector  gRPC 127.0.0.1:9990, metrics http://127.0.0.1:9478/metrics; it prints each record it receives below
  exporter   host scope, metrics http://127.0.0.1:9477/metrics
  try        curl -s http://127.0.0.1:9478/healthz   (its connection appears below within a few seconds)
  stop       Ctrl-C

MSG
setsid bin/flow-exporter --scope=host --output=collector --collector-grpc-addr=127.0.0.1:9990 --collector-insecure \
  --metrics-addr=127.0.0.1:9477 --log-level=warn &
exporter=$!
wait "$exporter"
