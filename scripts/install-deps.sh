#!/usr/bin/env bash
# install-deps.sh installs the system packages and Go tools that building and testing flowlens need.
# It skips what is already present, so it is cheap to run before every `make test` / `make run`.
set -euo pipefail
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

need_apt=()
have() { command -v "$1" >/dev/null 2>&1; }
have clang    || need_apt+=(clang llvm)
have bpftool  || need_apt+=(bpftool)
[ -f /usr/include/bpf/bpf_helpers.h ] || need_apt+=(libbpf-dev)
have ip       || need_apt+=(iproute2)
have tc       || need_apt+=(iproute2)
have nft      || need_apt+=(nftables)
have protoc   || need_apt+=(protobuf-compiler)
have curl     || need_apt+=(curl)

if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps: need root to apt-get install: ${need_apt[*]}" >&2
    exit 1
  fi
  echo "install-deps: apt-get install ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

# tracefs: the tracepoint programs attach through it. Mount it when it is missing (root only).
if [ "$(id -u)" -eq 0 ] && [ ! -e /sys/kernel/tracing/events ]; then
  mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null || echo "install-deps: could not mount tracefs" >&2
fi
exit 0
