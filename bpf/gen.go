// Package bpf holds flowlens's eBPF programs and their generated Go bindings.
//
// flow.bpf.c is compiled by bpf2go (pinned in go.mod as a tool) with clang against the vendored
// headers/vmlinux.h; the object and bindings are committed, so building flowlens needs no clang.
// `make generate` rebuilds them; TestGeneratedUpToDate fails when they are stale.
package bpf

//go:generate go tool bpf2go -cc clang -cflags "-O2 -g -Wall -Werror" -target bpfel -type flow_event -type sock_info -type event_kind -type flow_role -type flow_close -type event_flag -type counter Flow flow.bpf.c -- -I./headers
