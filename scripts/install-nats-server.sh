#!/usr/bin/env bash
# install-nats-server.sh makes nats-server available for the fleet-mode tests (internal/natstest). It
# does nothing when nats-server is already on PATH or in $(go env GOPATH)/bin; otherwise it builds the
# pinned version from source with `go install` (the Go module proxy serves it; no prebuilt download).
# Idempotent and cheap to run before every `make test`.
set -euo pipefail
version="v2.15.2"
gobin="$(go env GOBIN)"
[ -n "$gobin" ] || gobin="$(go env GOPATH)/bin"

if path="$(command -v nats-server 2>/dev/null)"; then
  echo "install-nats-server: $path already on PATH ($("$path" --version 2>/dev/null || echo "version unknown"))"
  exit 0
fi
if [ -x "$gobin/nats-server" ]; then
  echo "install-nats-server: $gobin/nats-server already installed ($("$gobin/nats-server" --version 2>/dev/null || echo "version unknown"))"
  exit 0
fi
echo "install-nats-server: go install github.com/nats-io/nats-server/v2@$version into $gobin"
# Outside the module, so the project's go.mod is neither read nor touched.
(cd / && GOFLAGS=-mod=mod go install "github.com/nats-io/nats-server/v2@$version")
echo "install-nats-server: installed $("$gobin/nats-server" --version)"
