package transport

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/flowlens/flowlens/internal/udpwire"
	flowv1 "github.com/flowlens/flowlens/proto/flowlens/flow/v1"
)

// DefaultMaxDatagram keeps a datagram, with its IPv6 and UDP headers (48 bytes), inside the 1,500-byte
// Ethernet MTU with room for a tunnel's encapsulation, so it is never fragmented.
const DefaultMaxDatagram = 1400

// UDP sends each batch as one or more signed datagrams (internal/udpwire) and forgets it: delivery is at
// most once, and the collector counts what is lost from the datagrams' sequence numbers, which run 1, 2,
// 3, ... over the life of the UDP. Send never waits for the collector.
type UDP struct {
	mu     sync.Mutex // one Send at a time, and Close after it
	conn   *net.UDPConn
	to     netip.AddrPort
	codec  *udpwire.Codec
	split  *udpwire.Splitter
	next   uint64 // sequence number of the next datagram
	stats  UDPStats
	closed bool
	// Abandoned, when set, is told how many records each send abandoned (see UDPStats), so that the
	// exporter counts them with its other drops.
	Abandoned func(records int)
}

// UDPStats counts what a UDP has sent since it was made.
type UDPStats struct {
	Datagrams uint64 // datagrams written, sequence numbers 1 to Datagrams + Abandoned
	Bytes     uint64 // UDP payload bytes written
	Records   uint64 // records in the datagrams written
	// Abandoned datagrams (and the records in them) are those not written because a write failed, or ctx
	// ended, after an earlier datagram of the same batch had left. Their sequence numbers are spent, so
	// the collector counts them lost.
	Abandoned        uint64
	AbandonedRecords uint64
}

// NewUDP prepares to send to addr (host:port, resolved once, now) from an unconnected socket of its own,
// signing with key (at least udpwire.MinKeySize bytes), in datagrams of at most maxDatagram bytes of UDP
// payload (0: DefaultMaxDatagram). The caller closes the UDP.
func NewUDP(addr string, key []byte, maxDatagram int) (*UDP, error) {
	if maxDatagram == 0 {
		maxDatagram = DefaultMaxDatagram
	}
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return nil, fmt.Errorf("udp collector address %q: %w", addr, err)
	}
	to := ua.AddrPort()
	to = netip.AddrPortFrom(to.Addr().Unmap(), to.Port())
	codec, err := udpwire.NewCodec(key)
	if err != nil {
		return nil, err
	}
	split, err := udpwire.NewSplitter(codec, maxDatagram)
	if err != nil {
		codec.Close()
		return nil, err
	}
	network := "udp6"
	if to.Addr().Is4() {
		network = "udp4"
	}
	// Unconnected: a connected socket turns an ICMP port-unreachable, which a restarting collector causes,
	// into an error on a later, unrelated write. Fire and forget has no use for it.
	conn, err := net.ListenUDP(network, nil)
	if err != nil {
		codec.Close()
		return nil, fmt.Errorf("udp socket for %s: %w", addr, err)
	}
	return &UDP{conn: conn, to: to, codec: codec, split: split, next: 1}, nil
}

// Name is "udp".
func (u *UDP) Name() string { return "udp" }

// Send cuts b into datagrams and writes them, returning ACK_STATUS_STORED once they have left: nothing
// answers a datagram. It blocks only while the socket's send buffer is full, and no longer than ctx
// allows. When nothing of b has left (ctx ended first, or the first write failed) it returns an error and
// b may be sent again; once part has left it returns STORED, and the rest is counted in Stats as
// abandoned, since sending b again would store its first part twice. A record too large for a datagram
// fails with ACK_STATUS_REJECTED and an error: sending it again cannot help.
func (u *UDP) Send(ctx context.Context, b *flowv1.FlowBatch) (flowv1.AckStatus, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.closed {
		return 0, fmt.Errorf("send batch %d: udp transport closed", b.GetSeq())
	}
	if err := ctx.Err(); err != nil {
		return 0, fmt.Errorf("send batch %d: %w", b.GetSeq(), err)
	}
	dgs, err := u.split.Split(b, u.next)
	if err != nil {
		if errors.Is(err, udpwire.ErrTooLarge) {
			return flowv1.AckStatus_ACK_STATUS_REJECTED, fmt.Errorf("split batch %d: %w", b.GetSeq(), err)
		}
		return 0, fmt.Errorf("split batch %d: %w", b.GetSeq(), err)
	}
	release := u.bound(ctx)
	defer release()
	for k, d := range dgs {
		err := ctx.Err()
		if err == nil {
			_, err = u.conn.WriteToUDPAddrPort(d.Bytes, u.to)
		}
		if err != nil && k == 0 {
			// Nothing has left: the sequence numbers are not spent, so the collector sees no gap.
			return 0, fmt.Errorf("send batch %d to %s: %w", b.GetSeq(), u.to, err)
		}
		if err != nil {
			lost := 0
			for _, rest := range dgs[k:] {
				u.stats.Abandoned++
				u.stats.AbandonedRecords += uint64(rest.Records)
				lost += rest.Records
			}
			if u.Abandoned != nil {
				u.Abandoned(lost)
			}
			break
		}
		u.stats.Datagrams++
		u.stats.Bytes += uint64(len(d.Bytes))
		u.stats.Records += uint64(d.Records)
	}
	u.next += uint64(len(dgs))
	return flowv1.AckStatus_ACK_STATUS_STORED, nil
}

// bound makes a write blocked on a full send buffer return when ctx ends. The returned func undoes it and
// must be called before the next Send sets its own bound.
func (u *UDP) bound(ctx context.Context) (release func()) {
	u.conn.SetWriteDeadline(time.Time{})
	done := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		u.conn.SetWriteDeadline(time.Unix(1, 0)) // in the past: the blocked write returns at once
		close(done)
	})
	return func() {
		if !stop() {
			<-done // it ran or is running: let it finish before the next Send clears the deadline
		}
	}
}

// Stats says what has been sent so far; it waits for a Send in progress.
func (u *UDP) Stats() UDPStats {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.stats
}

// Close closes the socket, after a Send in progress returns; a later Send fails. It may be called more
// than once.
func (u *UDP) Close() error {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.closed {
		return nil
	}
	u.closed = true
	u.codec.Close()
	return u.conn.Close()
}
