//go:build ignore

// SPDX-License-Identifier: GPL-2.0
/* flow.bpf.c: turns the TCP connections of one network namespace (or of the whole host) into flow records.
 *
 * Hooks, all tracepoints (kprobes and fentry are not available everywhere, tracepoints are a stable ABI):
 *   tp_btf/inet_sock_set_state          the lifecycle: connect, child socket, close.
 *   tp_btf/tcp_send_reset               RSTs this side sent.
 *   tp_btf/tcp_retransmit_skb           retransmissions in scope, counted live.
 *   tracepoint/syscalls/sys_exit_accept4 and sys_exit_accept
 *                                        the process that accepted a server-side connection.
 *   raw_tracepoint (never attached)      `snapshot`, run by the exporter through BPF_PROG_RUN every flush
 *                                        interval: it reads live connections' counters for interim records.
 *
 * tp_btf programs are raw tracepoints whose arguments carry their BTF types: the kernel builds no trace
 * record for them, and the socket's fields are read with plain loads, which the verifier guards with an
 * exception table, instead of bpf_probe_read_kernel calls that cost ~50 ns each. The same goes for
 * pointers made typed with bpf_rdonly_cast. This is what keeps a hit under 100 ns in scope.
 *
 * Every program first checks the socket's network namespace against target_netns and returns before any map
 * or ring-buffer work when it is out of scope.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_endian.h>

#include "flow.h"

char LICENSE[] SEC("license") = "GPL";

/* Anchors that put the types only Go reads into BTF, where bpf2go finds them. */
const struct flow_event *unused_flow_event __attribute__((unused));
const enum event_kind *unused_event_kind __attribute__((unused));
const enum flow_role *unused_flow_role __attribute__((unused));
const enum flow_close *unused_flow_close __attribute__((unused));
const enum event_flag *unused_event_flag __attribute__((unused));
const enum counter *unused_counter __attribute__((unused));

/* target_netns is the inode of the network namespace to watch; 0 watches every namespace (host scope).
 * Set by the exporter before load, so the verifier prunes the branch that does not apply. */
volatile const __u32 target_netns = 0;

/* wakeup_bytes: the reader is woken only once this much waits in the ring buffer. A wakeup is an irq_work,
 * which raises a self-interrupt: under virtualization a VM exit costing microseconds on every record. The
 * exporter polls the buffer on its own tick anyway; set by the exporter to a quarter of the buffer. */
volatile const __u64 wakeup_bytes = 0;

struct {
	__uint(type, BPF_MAP_TYPE_HASH); /* preallocated: inserts never allocate on the hot path */
	__uint(max_entries, 65536);      /* resized by the exporter from its config */
	__type(key, __u64);              /* struct sock * */
	__type(value, struct sock_info);
} flows SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4 << 20); /* resized by the exporter from its config */
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, COUNTER_MAX);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

static __always_inline void count(__u32 which)
{
	__u64 *n = bpf_map_lookup_elem(&counters, &which);
	/* Atomic although per-CPU: a softirq-context hook can interrupt a process-context one on this CPU. */
	if (n)
		__sync_fetch_and_add(n, 1);
}

/* bpf_rdonly_cast makes a typed, read-only view of a kernel pointer, so its fields load directly. */
extern void *bpf_rdonly_cast(const void *obj, __u32 btf_id) __ksym;
#define CAST(ptr, type) ((type *)bpf_rdonly_cast((const void *)(ptr), bpf_core_type_id_kernel(type)))

static __always_inline __u64 wakeup_flag(void)
{
	return bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA) >= wakeup_bytes ? BPF_RB_FORCE_WAKEUP : BPF_RB_NO_WAKEUP;
}

static __always_inline __u32 sk_netns(const struct sock *sk)
{
	return sk->__sk_common.skc_net.net->ns.inum;
}

static __always_inline bool in_scope(const struct sock *sk)
{
	return target_netns == 0 || sk_netns(sk) == target_netns;
}

/* fill_event reads the connection's addresses and counters from the socket itself, so they are exact at the
 * moment of the record whatever happened before the programs were attached. */
static __always_inline void fill_event(struct flow_event *ev, const struct sock *sk, const struct sock_info *info,
				       __u64 now)
{
	const struct tcp_sock *tp = CAST(sk, struct tcp_sock);

	__builtin_memset(ev, 0, sizeof(*ev)); /* ring-buffer memory is not zeroed; never leak kernel bytes */
	ev->sk = (__u64)sk;
	ev->end_ns = now;
	ev->family = sk->__sk_common.skc_family;
	/* inet_sport, not skc_num: by the time the move to CLOSE is traced the port is released and skc_num is 0. */
	ev->lport = bpf_ntohs(tp->inet_conn.icsk_inet.inet_sport);
	ev->rport = bpf_ntohs(sk->__sk_common.skc_dport);
	if (ev->family == AF_INET6) {
		__builtin_memcpy(ev->laddr, sk->__sk_common.skc_v6_rcv_saddr.in6_u.u6_addr8, 16);
		__builtin_memcpy(ev->raddr, sk->__sk_common.skc_v6_daddr.in6_u.u6_addr8, 16);
	} else {
		*(__u32 *)ev->laddr = sk->__sk_common.skc_rcv_saddr;
		*(__u32 *)ev->raddr = sk->__sk_common.skc_daddr;
	}
	ev->state = sk->__sk_common.skc_state;
	ev->netns = sk_netns(sk);
	ev->cgroup_id = sk->sk_cgrp_data.cgroup->kn->id;
	ev->sk_err = sk->sk_err;

	/* Data bytes only. bytes_acked and bytes_received count sequence space, where SYN and FIN take one
	 * each; bytes_sent counts each transmission of data, so retransmitted bytes come off it. */
	ev->bytes_sent = tp->bytes_sent - tp->bytes_retrans;
	ev->bytes_received = tp->bytes_received;
	/* tcp_fin() sets SOCK_DONE when the peer's FIN arrives, and the FIN advanced rcv_nxt by one. */
	if ((sk->__sk_common.skc_flags & (1UL << bpf_core_enum_value(enum sock_flags, SOCK_DONE))) && ev->bytes_received)
		ev->bytes_received -= 1;
	ev->segs_out = tp->segs_out;
	ev->segs_in = tp->segs_in;
	ev->srtt_us = tp->srtt_us >> 3;  /* stored scaled by 8 */
	ev->rttvar_us = tp->mdev_us >> 2; /* stored scaled by 4, as tcp_info reports it */
	ev->min_rtt_us = tp->rtt_min.s[0].v;
	ev->total_retrans = tp->total_retrans;

	if (info) {
		/* A server's SYN-ACK leaves from the request socket, before this socket exists, so tcp_sock never
		 * counted it: add it, so the two ends of a lossless connection agree segment for segment. */
		if (info->role == ROLE_SERVER)
			ev->segs_out += 1;
		ev->start_ns = info->start_ns;
		ev->pid = info->pid;
		ev->role = info->role;
		ev->flags = info->flags;
		__builtin_memcpy(ev->comm, info->comm, sizeof(ev->comm));
	} else {
		ev->flags = FLAG_PREEXISTING;
	}
}

/* close_reason decides how a connection ended from the state it left and the error the kernel recorded. An
 * abort by close() or SO_LINGER 0 sends its RST only after the move to CLOSE; that case arrives as a separate
 * EVENT_RESET_SENT and the exporter amends the record. */
static __always_inline __u8 close_reason(int oldstate, const struct flow_event *ev)
{
	/* A client whose SYN was never answered, or a server socket whose handshake never completed. */
	if (oldstate == TCP_SYN_SENT || oldstate == TCP_SYN_RECV)
		return CLOSE_CONNECT_FAILED;
	if (ev->flags & FLAG_RST_SENT)
		return CLOSE_RESET_SENT;
	switch (ev->sk_err) {
	case ECONNRESET:
	case EPIPE:
		return CLOSE_RESET_RECEIVED;
	case ETIMEDOUT:
		return CLOSE_TIMEOUT;
	}
	return CLOSE_NORMAL;
}

/* stamp_process records the current process. comm is read with typed loads from the task: the helper
 * bpf_get_current_comm costs ~70 ns on a VM, two loads next to nothing. */
static __always_inline void stamp_process(struct sock_info *info)
{
	struct task_struct *task = bpf_get_current_task_btf();

	info->pid = task->tgid;
	__builtin_memcpy(info->comm, task->comm, sizeof(info->comm));
}

static __always_inline void on_open(__u64 key, __u8 role)
{
	struct sock_info info = {
		.start_ns = bpf_ktime_get_ns(),
		.role = role,
	};
	if (role == ROLE_CLIENT) {
		/* connect() runs in the caller's context; a server-side child is made in softirq, where the current
		 * task is unrelated, so its process is filled in when accept() returns it. */
		stamp_process(&info);
	}
	if (bpf_map_update_elem(&flows, &key, &info, BPF_ANY))
		count(COUNTER_UNTRACKED);
}

static __always_inline bool was_connected(int oldstate)
{
	switch (oldstate) {
	case TCP_ESTABLISHED:
	case TCP_FIN_WAIT1:
	case TCP_FIN_WAIT2:
	case TCP_CLOSE_WAIT:
	case TCP_LAST_ACK:
	case TCP_CLOSING:
	case TCP_TIME_WAIT:
		return true;
	}
	return false;
}

static __always_inline void on_close(const struct sock *sk, __u64 key, int oldstate)
{
	struct sock_info *info = bpf_map_lookup_elem(&flows, &key);

	/* A socket we never saw open: report it only if it carried a connection (not a listener or a socket
	 * that never connected), flagged as pre-existing. */
	if (!info && !was_connected(oldstate))
		return;

	struct flow_event *ev = bpf_ringbuf_reserve(&events, sizeof(*ev), 0);
	if (!ev) {
		count(COUNTER_RINGBUF_FULL);
	} else {
		fill_event(ev, sk, info, bpf_ktime_get_ns());
		ev->kind = EVENT_CLOSE;
		ev->close = close_reason(oldstate, ev);
		bpf_ringbuf_submit(ev, wakeup_flag());
	}
	if (info)
		bpf_map_delete_elem(&flows, &key);
}

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(on_set_state, const struct sock *sk, const int oldstate, const int newstate)
{
	if (!in_scope(sk))
		return 0;
	/* Only the transitions that matter: established, FIN_WAIT and friends cost nothing more. */
	if (newstate != TCP_SYN_SENT && newstate != TCP_SYN_RECV && newstate != TCP_CLOSE)
		return 0;
	/* MPTCP and SCTP sockets use the same tracepoint but not struct tcp_sock. */
	if (sk->sk_protocol != IPPROTO_TCP)
		return 0;

	__u64 key = (__u64)sk;
	switch (newstate) {
	case TCP_SYN_SENT:
		on_open(key, ROLE_CLIENT);
		break;
	case TCP_SYN_RECV:
		on_open(key, ROLE_SERVER);
		break;
	case TCP_CLOSE:
		if (oldstate != TCP_LISTEN)
			on_close(sk, key, oldstate);
		break;
	}
	return 0;
}

/* on_accepted stamps the accepting process on a server-side connection, from the fd accept() returned. */
static __always_inline int on_accepted(long fd)
{
	if (fd < 0)
		return 0;
	struct task_struct *task = bpf_get_current_task_btf();
	struct fdtable *fdt = task->files->fdt;
	if (fd >= fdt->max_fds)
		return 0;
	/* The fd array is indexed by a runtime value, which typed loads cannot do: read that slot. */
	struct file **fds = fdt->fd;
	struct file *file = NULL;
	if (bpf_probe_read_kernel(&file, sizeof(file), (void *)fds + fd * sizeof(file)) || !file)
		return 0;
	struct socket *sock = CAST(file, struct file)->private_data;
	if (!sock)
		return 0;
	struct sock *sk = CAST(sock, struct socket)->sk;
	if (!sk || !in_scope(sk))
		return 0;

	__u64 key = (__u64)sk;
	struct sock_info *info = bpf_map_lookup_elem(&flows, &key);
	if (!info || info->pid)
		return 0;
	stamp_process(info);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_accept4")
int on_accept4_exit(struct trace_event_raw_sys_exit *ctx)
{
	return on_accepted(ctx->ret);
}

SEC("tracepoint/syscalls/sys_exit_accept")
int on_accept_exit(struct trace_event_raw_sys_exit *ctx)
{
	return on_accepted(ctx->ret);
}

SEC("tp_btf/tcp_send_reset")
int BPF_PROG(on_send_reset, const struct sock *sk)
{
	/* NULL: a reply to a segment for no socket. */
	if (!sk || !in_scope(sk))
		return 0;
	__u64 key = (__u64)sk;
	struct sock_info *info = bpf_map_lookup_elem(&flows, &key);
	if (info) {
		info->flags |= FLAG_RST_SENT;
		return 0;
	}
	/* Timewait and request sockets share sock_common but are never in a CLOSE state here. */
	if (sk->__sk_common.skc_state != TCP_CLOSE)
		return 0;
	struct flow_event *ev = bpf_ringbuf_reserve(&events, sizeof(*ev), 0);
	if (!ev) {
		count(COUNTER_RESET_LOST);
		return 0;
	}
	__builtin_memset(ev, 0, sizeof(*ev));
	ev->sk = key;
	ev->kind = EVENT_RESET_SENT;
	bpf_ringbuf_submit(ev, wakeup_flag());
	return 0;
}

/* on_retransmit counts retransmissions in scope: a live signal between records. The records' own count
 * comes from tcp_sock.total_retrans, exact whenever the programs were attached. */
SEC("tp_btf/tcp_retransmit_skb")
int BPF_PROG(on_retransmit, const struct sock *sk)
{
	if (sk && in_scope(sk))
		count(COUNTER_RETRANSMITS);
	return 0;
}

struct snapshot_ctx {
	__u64 now;
	__u32 tick;      /* this round's number; a connection is reported once per tick */
	__u32 full;      /* the ring buffer filled up: the exporter drains it and runs the program again */
};

static long snapshot_one(struct bpf_map *map, __u64 *key, struct sock_info *info, struct snapshot_ctx *c)
{
	if (info->last_tick == c->tick)
		return 0;
	const struct sock *sk = CAST(*key, struct sock);
	/* The socket is alive: its entry goes at the move to CLOSE, before the socket is freed. Handshakes in
	 * progress carry no data yet and are left for the next round. */
	__u8 state = sk->__sk_common.skc_state;
	if (state == TCP_SYN_SENT || state == TCP_SYN_RECV || state == TCP_CLOSE)
		return 0;
	struct flow_event *ev = bpf_ringbuf_reserve(&events, sizeof(*ev), 0);
	if (!ev) {
		c->full = 1;
		return 1; /* stop; not a drop: the exporter runs the round again once it has drained */
	}
	fill_event(ev, sk, info, c->now);
	ev->kind = EVENT_ACTIVE;
	ev->close = CLOSE_ACTIVE;
	bpf_ringbuf_submit(ev, wakeup_flag());
	info->last_tick = c->tick;
	return 0;
}

/* snapshot emits an interim record for every established connection not yet reported in round args[0].
 * It returns 1 when the ring buffer filled before the round was complete. */
SEC("raw_tracepoint")
int snapshot(struct bpf_raw_tracepoint_args *ctx)
{
	struct snapshot_ctx c = {
		.now = bpf_ktime_get_ns(),
		.tick = (__u32)ctx->args[0],
	};
	bpf_for_each_map_elem(&flows, snapshot_one, &c, 0);
	return c.full;
}
