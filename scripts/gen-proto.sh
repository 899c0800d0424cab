#!/usr/bin/env bash
# gen-proto.sh generates the Go code for proto/ into OUT (default: proto/ itself) with protoc from Debian
# and the protoc-gen-go and protoc-gen-go-grpc versions pinned as tools in go.mod.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
out="${1:-$root/proto}"
bin="$(mktemp -d)"
trap 'rm -rf "$bin"' EXIT
cd "$root"
go build -o "$bin/protoc-gen-go" google.golang.org/protobuf/cmd/protoc-gen-go
go build -o "$bin/protoc-gen-go-grpc" google.golang.org/grpc/cmd/protoc-gen-go-grpc
cd proto
protos=$(find flowlens -name '*.proto' | sort)
protoc -I . \
  --plugin=protoc-gen-go="$bin/protoc-gen-go" --go_out="$out" --go_opt=paths=source_relative \
  --plugin=protoc-gen-go-grpc="$bin/protoc-gen-go-grpc" --go-grpc_out="$out" --go-grpc_opt=paths=source_relative \
  $protos
