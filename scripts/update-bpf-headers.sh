#!/usr/bin/env bash
# update-bpf-headers.sh refreshes the vendored BPF headers in bpf/headers:
#   vmlinux.h  - the kernel's types, dumped from the running kernel's BTF (CO-RE relocates
#                field offsets at load time, so one dump serves every BTF-enabled kernel);
#   bpf/*.h    - libbpf's helper headers, copied from Debian's libbpf-dev.
# Run it when the programs need a type or helper the vendored copies lack, then `make generate`.
set -euo pipefail
cd "$(dirname "$0")/../bpf/headers"
bpftool btf dump file /sys/kernel/btf/vmlinux format c > vmlinux.h
for h in bpf_helpers.h bpf_helper_defs.h bpf_core_read.h bpf_tracing.h bpf_endian.h; do
  cp "/usr/include/bpf/$h" "bpf/$h"
done
echo "vmlinux.h from $(uname -r); libbpf headers from $(dpkg-query -W -f='${Version}' libbpf-dev)" > VERSION
