package capture_test

import (
	"context"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"
	"golang.org/x/sys/unix"

	"github.com/flowlens/flowlens/exporter/capture"

	"github.com/flowlens/flowlens/internal/flow"
	"github.com/flowlens/flowlens/internal/nettest"
)

// TestLoopbackExactCounts: N connections from a client process to a server, both in one namespace, give
// exactly N records a side with the exact payload bytes, the roles, ports, pids and comms.
func TestLoopbackExactCounts(t *testing.T) {
	const n = 20
	ns := nettest.NewNetns(t)
	p := probe(t, ns.Inode)
	ln := listen(t, ns, "tcp", "127.0.0.1:0")
	served := serveEcho(ln)
	sport := portOf(ln.Addr())
	start := time.Now()

	pid := runClient(t, ns, "flowlens-client", ln.Addr().String(), n)
	up := map[int]int{} // client port -> upload size
	for range n {
		s := <-served
		up[s[0]] = s[1]
	}
	recs := newCollector(t, p).until(2*n, 10*time.Second, port(sport))

	self := filepath.Base(os.Args[0])[:min(15, len(filepath.Base(os.Args[0])))]
	lo := netip.MustParseAddr("127.0.0.1")
	byPort := map[int]map[flow.Role]flow.Record{}
	for _, r := range recs {
		cport := int(r.LocalPort)
		if r.Role == flow.RoleServer {
			cport = int(r.RemotePort)
		}
		if byPort[cport] == nil {
			byPort[cport] = map[flow.Role]flow.Record{}
		}
		if _, dup := byPort[cport][r.Role]; dup {
			t.Fatalf("two %s records for client port %d", r.Role, cport)
		}
		byPort[cport][r.Role] = r
	}
	if len(byPort) != n {
		t.Fatalf("records for %d client ports, want %d:\n%s", len(byPort), n, dump(recs))
	}
	for cport, sides := range byPort {
		u, ok := up[cport]
		if !ok {
			t.Fatalf("record for client port %d, which the server never saw", cport)
		}
		d := 3*u + 7
		c, s := sides[flow.RoleClient], sides[flow.RoleServer]
		for _, chk := range []struct {
			name      string
			got, want any
		}{
			{"client role", c.Role, flow.RoleClient},
			{"server role", s.Role, flow.RoleServer},
			{"client local", netip.AddrPortFrom(c.LocalAddr, c.LocalPort), netip.AddrPortFrom(lo, uint16(cport))},
			{"client remote", netip.AddrPortFrom(c.RemoteAddr, c.RemotePort), netip.AddrPortFrom(lo, uint16(sport))},
			{"server local", netip.AddrPortFrom(s.LocalAddr, s.LocalPort), netip.AddrPortFrom(lo, uint16(sport))},
			{"server remote", netip.AddrPortFrom(s.RemoteAddr, s.RemotePort), netip.AddrPortFrom(lo, uint16(cport))},
			{"client bytes_sent", c.BytesSent, uint64(u)},
			{"client bytes_received", c.BytesReceived, uint64(d)},
			{"server bytes_sent", s.BytesSent, uint64(d)},
			{"server bytes_received", s.BytesReceived, uint64(u)},
			// Loopback loses nothing, so every segment one side sent is one the other received.
			{"client segs_sent = server segs_received", c.SegsSent, s.SegsReceived},
			{"server segs_sent = client segs_received", s.SegsSent, c.SegsReceived},
			{"client pid", c.Pid, uint32(pid)},
			{"client comm", c.Comm, "flowlens-client"},
			{"server pid", s.Pid, uint32(os.Getpid())},
			{"server comm", s.Comm, self},
			{"client close", c.Close, flow.CloseNormal},
			{"server close", s.Close, flow.CloseNormal},
			{"client netns", c.Netns, ns.Inode},
			{"server netns", s.Netns, ns.Inode},
			{"client retransmits", c.Retransmits, uint32(0)},
		} {
			if chk.got != chk.want {
				t.Errorf("client port %d: %s = %v, want %v", cport, chk.name, chk.got, chk.want)
			}
		}
		// Segments: at least the data segments (64 KiB GSO on loopback) plus SYN/SYN-ACK, FIN and ACKs.
		if min := uint32(d/65483 + 3); c.SegsReceived < min || s.SegsReceived < uint32(u/65483+3) {
			t.Errorf("client port %d: segs %d/%d implausibly low", cport, c.SegsReceived, s.SegsReceived)
		}
		for _, r := range []flow.Record{c, s} {
			if r.StartTime < start.UnixNano() || r.EndTime < r.StartTime || r.EndTime > time.Now().UnixNano() {
				t.Errorf("client port %d %s: start %d end %d outside the test's [%d, now]", cport, r.Role, r.StartTime, r.EndTime, start.UnixNano())
			}
			if r.SrttUs == 0 || r.MinRttUs == 0 || r.MinRttUs > r.SrttUs*4 {
				t.Errorf("client port %d %s: srtt %d min_rtt %d", cport, r.Role, r.SrttUs, r.MinRttUs)
			}
			if r.Preexisting || r.CgroupID == 0 {
				t.Errorf("client port %d %s: preexisting %v cgroup %d", cport, r.Role, r.Preexisting, r.CgroupID)
			}
		}
	}
}

// TestCloseReasons: how a connection ends is reported on both sides.
func TestCloseReasons(t *testing.T) {
	ns := nettest.NewNetns(t)
	p := probe(t, ns.Inode)
	col := newCollector(t, p)

	// exchange makes one connection, sends 100 bytes each way, then lets end close it.
	exchange := func(t *testing.T, end func(client, server *net.TCPConn)) (int, int) {
		ln := listen(t, ns, "tcp", "127.0.0.1:0")
		acc := make(chan *net.TCPConn, 1)
		go func() {
			c, err := ln.Accept()
			if err == nil {
				acc <- c.(*net.TCPConn)
			}
			close(acc)
		}()
		c := dial(t, ns, "tcp", ln.Addr().String()).(*net.TCPConn)
		s := <-acc
		if s == nil {
			t.Fatal("accept failed")
		}
		for _, pair := range [][2]*net.TCPConn{{c, s}, {s, c}} {
			pair[0].Write(make([]byte, 100))
			io.ReadFull(pair[1], make([]byte, 100))
		}
		end(c, s)
		return portOf(c.LocalAddr()), portOf(ln.Addr())
	}
	byRole := func(recs []flow.Record) map[flow.Role]flow.Record {
		m := map[flow.Role]flow.Record{}
		for _, r := range recs {
			m[r.Role] = r
		}
		return m
	}
	cases := []struct {
		name                     string
		end                      func(client, server *net.TCPConn)
		clientClose, serverClose flow.Close
		clientErr, serverErr     string
	}{
		{"normal", func(c, s *net.TCPConn) { c.Close(); io.Copy(io.Discard, s); s.Close() },
			flow.CloseNormal, flow.CloseNormal, "", ""},
		{"client aborts with SO_LINGER 0", func(c, s *net.TCPConn) {
			c.SetLinger(0)
			c.Close()
			io.Copy(io.Discard, s)
			s.Close()
		}, flow.CloseResetSent, flow.CloseResetReceived, "", "ECONNRESET"},
		{"server aborts with SO_LINGER 0", func(c, s *net.TCPConn) {
			s.SetLinger(0)
			s.Close()
			io.Copy(io.Discard, c)
			c.Close()
		}, flow.CloseResetReceived, flow.CloseResetSent, "ECONNRESET", ""},
		{"server closes with unread data", func(c, s *net.TCPConn) {
			c.Write(make([]byte, 50))
			time.Sleep(50 * time.Millisecond) // let the bytes land unread in the server's queue
			s.Close()
			io.Copy(io.Discard, c)
			c.Close()
		}, flow.CloseResetReceived, flow.CloseResetSent, "ECONNRESET", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cport, _ := exchange(t, tc.end)
			recs := byRole(col.until(2, 5*time.Second, port(cport)))
			c, s := recs[flow.RoleClient], recs[flow.RoleServer]
			if c.Close != tc.clientClose || s.Close != tc.serverClose {
				t.Errorf("close client %s server %s, want %s and %s", c.Close, s.Close, tc.clientClose, tc.serverClose)
			}
			if c.Error != tc.clientErr || s.Error != tc.serverErr {
				t.Errorf("error client %q server %q, want %q and %q", c.Error, s.Error, tc.clientErr, tc.serverErr)
			}
			if c.BytesReceived < 100 || s.BytesReceived < 100 {
				t.Errorf("bytes received client %d server %d, want at least 100", c.BytesReceived, s.BytesReceived)
			}
		})
	}

	t.Run("refused", func(t *testing.T) {
		ln := listen(t, ns, "tcp", "127.0.0.1:0")
		addr := ln.Addr().String()
		ln.Close() // nothing listens there now: the kernel answers the SYN with a RST
		var err error
		var cport int
		ns.Do(t, func() {
			var c net.Conn
			c, err = net.Dial("tcp", addr)
			if c != nil {
				c.Close()
			}
		})
		if err == nil {
			t.Fatal("connect succeeded")
		}
		recs := col.until(1, 5*time.Second, func(r *flow.Record) bool {
			cport = int(r.LocalPort)
			return r.RemotePort == uint16(portOf(ln.Addr())) && r.Role == flow.RoleClient
		})
		if recs[0].Close != flow.CloseConnectFailed || recs[0].Error != "ECONNREFUSED" {
			t.Errorf("close %s error %q, want CONNECT_FAILED ECONNREFUSED", recs[0].Close, recs[0].Error)
		}
		if recs[0].BytesSent != 0 || recs[0].BytesReceived != 0 || cport == 0 {
			t.Errorf("refused connect: %s", dump(recs))
		}
	})
}

// TestConnectTimeout: a SYN dropped by the server host's firewall ends in CONNECT_FAILED with ETIMEDOUT.
func TestConnectTimeout(t *testing.T) {
	a, b := nettest.NewNetns(t), nettest.NewNetns(t)
	nettest.Veth(t, a, b, "10.199.1.1/24", "10.199.1.2/24")
	b.Exec(t, "nft", "add table inet fltest")
	b.Exec(t, "nft", "add chain inet fltest in { type filter hook input priority 0 ; }")
	b.Exec(t, "nft", "add rule inet fltest in tcp dport 7777 drop")
	p := probe(t, a.Inode)

	var err error
	a.Do(t, func() {
		d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
			// One SYN retry: the kernel gives up after about 3 s instead of 2 minutes.
			return rc.Control(func(fd uintptr) { unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_SYNCNT, 1) })
		}}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_, err = d.DialContext(ctx, "tcp", "10.199.1.2:7777")
	})
	if err == nil {
		t.Fatal("connect through a firewall that drops SYNs succeeded")
	}
	recs := newCollector(t, p).until(1, 10*time.Second, port(7777))
	r := recs[0]
	if r.Role != flow.RoleClient || r.Close != flow.CloseConnectFailed || r.Error != "ETIMEDOUT" {
		t.Errorf("got %s", dump(recs))
	}
	if r.Retransmits == 0 {
		t.Errorf("retransmits 0, want the SYN retries")
	}
	if d := time.Duration(r.EndTime - r.StartTime); d < 2*time.Second {
		t.Errorf("connect failed after %v, want the kernel's ~3 s timeout", d)
	}
}

// TestIPv6AndMapped: IPv6 connections, and IPv4 connections carried by IPv6 sockets (v4-mapped), which
// are reported with their IPv4 addresses.
func TestIPv6AndMapped(t *testing.T) {
	ns := nettest.NewNetns(t)
	p := probe(t, ns.Inode)
	col := newCollector(t, p)
	cases := []struct {
		name, lnNet, lnAddr, dialNet, dialHost string
		want                                   netip.Addr
	}{
		{"ipv6", "tcp6", "[::1]:0", "tcp6", "::1", netip.MustParseAddr("::1")},
		{"v4 client to dual-stack server", "tcp", "[::]:0", "tcp4", "127.0.0.1", netip.MustParseAddr("127.0.0.1")},
		{"v6 socket dialing a v4-mapped address", "tcp4", "127.0.0.1:0", "tcp6", "::ffff:127.0.0.1", netip.MustParseAddr("127.0.0.1")},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ln := listen(t, ns, tc.lnNet, tc.lnAddr)
			served := serveEcho(ln)
			sport := portOf(ln.Addr())
			var err error
			ns.Do(t, func() {
				var c net.Conn
				if tc.dialNet == "tcp6" {
					c, err = dial6(netip.AddrPortFrom(netip.MustParseAddr(tc.dialHost), uint16(sport)))
				} else {
					c, err = net.Dial(tc.dialNet, net.JoinHostPort(tc.dialHost, strconv.Itoa(sport)))
				}
				if err != nil {
					return
				}
				defer c.Close()
				c.Write(make([]byte, upSize(i)))
				c.(*net.TCPConn).CloseWrite()
				io.Copy(io.Discard, c)
			})
			if err != nil {
				t.Fatal(err)
			}
			<-served
			recs := col.until(2, 5*time.Second, port(sport))
			for _, r := range recs {
				if r.LocalAddr != tc.want || r.RemoteAddr != tc.want {
					t.Errorf("%s: addresses %s -> %s, want %s", r.Role, r.LocalAddr, r.RemoteAddr, tc.want)
				}
				sent, recv := uint64(upSize(i)), uint64(downSize(i))
				if r.Role == flow.RoleServer {
					sent, recv = recv, sent
				}
				if r.BytesSent != sent || r.BytesReceived != recv || r.Close != flow.CloseNormal {
					t.Errorf("%s: sent %d received %d close %s, want %d %d NORMAL", r.Role, r.BytesSent, r.BytesReceived, r.Close, sent, recv)
				}
			}
		})
	}
}

// TestNetnsScope: two namespaces joined by veth. A probe scoped to one sees only that side's record; a
// host-scope probe sees both, each with its namespace.
func TestNetnsScope(t *testing.T) {
	a, b := nettest.NewNetns(t), nettest.NewNetns(t)
	nettest.Veth(t, a, b, "10.199.2.1/24", "10.199.2.2/24")
	pa, pb, ph := probe(t, a.Inode), probe(t, b.Inode), probe(t, 0)

	ln := listen(t, b, "tcp", "10.199.2.2:0")
	served := serveEcho(ln)
	sport := portOf(ln.Addr())
	// Noise on the host's own loopback, which no namespace-scoped probe may report.
	hostLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer hostLn.Close()
	hostServed := serveEcho(hostLn)
	if err := exchangeAddr(hostLn.Addr().String()); err != nil {
		t.Fatal(err)
	}
	<-hostServed

	var xerr error
	a.Do(t, func() { xerr = exchangeAddr(ln.Addr().String()) })
	if xerr != nil {
		t.Fatal(xerr)
	}
	<-served

	any := func(r *flow.Record) bool { return true }
	ra := newCollector(t, pa).until(1, 5*time.Second, any)[0]
	rb := newCollector(t, pb).until(1, 5*time.Second, any)[0]
	if ra.Role != flow.RoleClient || ra.Netns != a.Inode || ra.RemoteAddr != netip.MustParseAddr("10.199.2.2") || int(ra.RemotePort) != sport {
		t.Errorf("namespace a: %s", dump([]flow.Record{ra}))
	}
	if rb.Role != flow.RoleServer || rb.Netns != b.Inode || rb.LocalAddr != netip.MustParseAddr("10.199.2.2") || int(rb.LocalPort) != sport {
		t.Errorf("namespace b: %s", dump([]flow.Record{rb}))
	}
	hostRecs := newCollector(t, ph).until(2, 5*time.Second, port(sport))
	seen := map[uint32]flow.Role{}
	for _, r := range hostRecs {
		seen[r.Netns] = r.Role
	}
	if seen[a.Inode] != flow.RoleClient || seen[b.Inode] != flow.RoleServer {
		t.Errorf("host scope: %s", dump(hostRecs))
	}
}

func exchangeAddr(addr string) error { return exchange(addr, upSize(0), downSize(0)) }

// TestRetransmits: loss on the path (nftables drops every 7th TCP segment arriving at the server's
// namespace; this kernel has no netem) shows as retransmits on the sender's record, and the byte counts
// stay exact.
func TestRetransmits(t *testing.T) {
	a, b := nettest.NewNetns(t), nettest.NewNetns(t)
	nettest.Veth(t, a, b, "10.199.3.1/24", "10.199.3.2/24")
	b.Exec(t, "nft", "add table inet fltest")
	b.Exec(t, "nft", "add chain inet fltest in { type filter hook input priority 0 ; }")
	b.Exec(t, "nft", "add rule inet fltest in tcp dport 7778 numgen inc mod 7 0 drop")
	p := probe(t, a.Inode)
	ln := listen(t, b, "tcp", "10.199.3.2:7778")
	served := serveEcho(ln)

	const up = 2 << 20
	var err error
	a.Do(t, func() { err = exchange(ln.Addr().String(), up, 3*up+7) })
	if err != nil {
		t.Fatal(err)
	}
	<-served
	r := newCollector(t, p).until(1, 10*time.Second, port(7778))[0]
	if r.Retransmits == 0 {
		t.Errorf("no retransmits reported with every 7th segment dropped: %s", dump([]flow.Record{r}))
	}
	if r.BytesSent != up || r.BytesReceived != 3*up+7 {
		t.Errorf("bytes sent %d received %d, want %d and %d", r.BytesSent, r.BytesReceived, up, 3*up+7)
	}
	// The live counter of the tcp_retransmit_skb hook saw them too (it counts attempts, the record segments).
	if c, err := p.Counters(); err != nil || c.Retransmits == 0 {
		t.Errorf("live retransmit counter %d (%v), want > 0", c.Retransmits, err)
	}
}

// dial6 connects an AF_INET6 socket to ap, v4-mapped addresses included (Go's dialer turns those into
// AF_INET sockets).
func dial6(ap netip.AddrPort) (net.Conn, error) {
	fd, err := unix.Socket(unix.AF_INET6, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fd), "tcp6")
	defer f.Close()
	if err := unix.Connect(fd, &unix.SockaddrInet6{Addr: ap.Addr().As16(), Port: int(ap.Port())}); err != nil {
		return nil, err
	}
	return net.FileConn(f)
}

// TestKernelDropsExact: with a ring buffer too small for the burst and nobody reading, every final record
// is either in the buffer or counted as dropped; and connections beyond the flows map are counted too.
func TestKernelDropsExact(t *testing.T) {
	nettest.RequirePrivileged(t)
	ns := nettest.NewNetns(t)
	p, err := capture.Open(capture.Options{Netns: ns.Inode, MaxConnections: 64, RingBufferBytes: 4096}, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()

	// 100 connections held open at once: 200 sockets for a 64-entry map.
	const n = 100
	ln := listen(t, ns, "tcp", "127.0.0.1:0")
	accepted := make(chan net.Conn, n)
	nettest.Serve(ln, func(c net.Conn) { accepted <- c })
	var conns []net.Conn
	for range n {
		c := dial(t, ns, "tcp", ln.Addr().String())
		conns = append(conns, c, <-accepted)
	}
	tracked, err := p.FlowsInMap()
	if err != nil {
		t.Fatal(err)
	}
	c, err := p.Counters()
	if err != nil {
		t.Fatal(err)
	}
	if tracked != 64 || c.Untracked != 2*n-64 {
		t.Errorf("tracked %d, untracked %d: want 64 and %d", tracked, c.Untracked, 2*n-64)
	}
	for _, c := range conns {
		c.Close()
	}
	time.Sleep(500 * time.Millisecond) // let every close happen, unread

	read := 0
	for {
		var ev capture.Event
		p.SetDeadline(time.Now().Add(100 * time.Millisecond))
		err := p.Read(&ev)
		if capture.IsTimeout(err) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if ev.Kind == capture.KindClose {
			read++
		}
	}
	if c, err = p.Counters(); err != nil {
		t.Fatal(err)
	}
	lost := c.Drops["ringbuf_full"]
	if read == 0 || lost == 0 {
		t.Fatalf("read %d, dropped %d: the test needs both", read, lost)
	}
	// Every socket's close is either read or counted; the untracked ones come as preexisting records.
	if got := uint64(read) + lost; got != 2*n {
		t.Errorf("read %d + dropped %d = %d final records, want %d", read, lost, got, 2*n)
	}
	if c.Drops["reset_notice_lost"] != 0 || c.Drops["recursion"] != 0 {
		t.Errorf("unexpected drops %v", c.Drops)
	}
}
