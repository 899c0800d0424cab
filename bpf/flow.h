/* flow.h: the types shared between the BPF programs and the exporter.
 * bpf2go turns every type named with -type in gen.go into a Go type, so the two sides cannot drift. */
#ifndef FLOWLENS_FLOW_H
#define FLOWLENS_FLOW_H

#define AF_INET 2
#define AF_INET6 10
#define IPPROTO_TCP 6
#define TASK_COMM_LEN 16

/* Errno values the close reason is derived from (include/uapi/asm-generic/errno*.h). */
#define EPIPE 32
#define ECONNRESET 104
#define ETIMEDOUT 110
#define ECONNREFUSED 111

enum flow_role {
	ROLE_UNKNOWN = 0, /* the connection predates the exporter: who opened it is unknown */
	ROLE_CLIENT = 1,  /* this side connected */
	ROLE_SERVER = 2,  /* this side accepted */
};

enum flow_close {
	CLOSE_ACTIVE = 0,         /* interim record: the connection is still open */
	CLOSE_NORMAL = 1,         /* FIN exchange, or a close with nothing unusual */
	CLOSE_RESET_SENT = 2,     /* this side aborted the connection with a RST */
	CLOSE_RESET_RECEIVED = 3, /* the peer aborted the connection with a RST */
	CLOSE_CONNECT_FAILED = 4, /* the handshake never completed: refused, timed out or abandoned */
	CLOSE_TIMEOUT = 5,        /* an established connection died of retransmission or keepalive timeout */
};

enum event_kind {
	EVENT_CLOSE = 1,      /* final record of a connection */
	EVENT_ACTIVE = 2,     /* interim record with cumulative counters, from the snapshot program */
	EVENT_RESET_SENT = 3, /* a RST left a socket that had already moved to CLOSE (tcp_close, tcp_disconnect) */
};

enum event_flag {
	FLAG_RST_SENT = 1,    /* a RST left the socket before it closed */
	FLAG_PREEXISTING = 2, /* the connection was open before the programs were attached */
};

/* counter indexes the per-CPU counters map; the exporter exports each. */
enum counter {
	COUNTER_RINGBUF_FULL = 0, /* drop: a final record found the ring buffer full and was lost */
	COUNTER_RESET_LOST = 1,   /* drop: a late RST notice found the ring buffer full; its record stays NORMAL */
	COUNTER_UNTRACKED = 2,    /* a new connection found the flows map full: reported at close as preexisting */
	COUNTER_RETRANSMITS = 3,  /* retransmissions in scope, a live signal between records */
	COUNTER_MAX = 4,
};

/* sock_info is what the kernel keeps per live connection, keyed by the socket's address.
 * Everything else is read from struct tcp_sock when a record is made, so this stays small (40 bytes with
 * alignment), and a 64k-entry preallocated map near 6 MiB with the hash table's own overhead. */
struct sock_info {
	__u64 start_ns;        /* CLOCK_MONOTONIC when the connect or the child socket began */
	__u32 pid;             /* tgid that connected or accepted; 0 until accept() returns */
	__u32 last_tick;       /* snapshot tick that last reported this connection */
	__u8 role;             /* enum flow_role */
	__u8 flags;            /* enum event_flag */
	__u8 _pad[2];
	char comm[TASK_COMM_LEN];
};

/* flow_event is one ring-buffer record: a final or interim flow, or a late RST notice. */
struct flow_event {
	__u64 sk;              /* socket address: the key that ties a late RST to its flow */
	__u64 start_ns;        /* CLOCK_MONOTONIC; 0 when FLAG_PREEXISTING */
	__u64 end_ns;          /* CLOCK_MONOTONIC at close, or at the snapshot */
	__u64 bytes_sent;      /* data bytes sent, each once: tcp_sock.bytes_sent - bytes_retrans */
	__u64 bytes_received;  /* data bytes received: tcp_sock.bytes_received less the peer's FIN */
	__u64 cgroup_id;       /* cgroup v2 id of the socket's cgroup */
	__u32 segs_out;        /* tcp_sock.segs_out, every segment incl. SYN, FIN, pure ACKs; +1 SYN-ACK on servers */
	__u32 segs_in;         /* tcp_sock.segs_in */
	__u32 total_retrans;   /* tcp_sock.total_retrans */
	__u32 srtt_us;         /* smoothed RTT */
	__u32 rttvar_us;       /* RTT mean deviation, as tcp_info's tcpi_rttvar */
	__u32 min_rtt_us;      /* windowed minimum RTT */
	__u32 netns;           /* inode number of the socket's network namespace */
	__u32 pid;
	__s32 sk_err;          /* sk_err at close: ECONNREFUSED, ETIMEDOUT, ECONNRESET, ... */
	__u16 family;          /* AF_INET or AF_INET6 */
	__u16 lport;           /* host byte order */
	__u16 rport;           /* host byte order */
	__u8 kind;             /* enum event_kind */
	__u8 role;             /* enum flow_role */
	__u8 close;            /* enum flow_close */
	__u8 flags;            /* enum event_flag */
	__u8 state;            /* TCP state when the record was made */
	__u8 _pad;
	__u8 laddr[16];        /* IPv4 in the first 4 bytes, or IPv6 (v4-mapped included) */
	__u8 raddr[16];
	char comm[TASK_COMM_LEN];
};

#endif
