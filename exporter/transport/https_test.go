package transport_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap/zaptest"

	"github.com/flowlens/flowlens/collector/ingest"
	"github.com/flowlens/flowlens/exporter/transport"
	"github.com/flowlens/flowlens/internal/flow"
	"github.com/flowlens/flowlens/internal/nettest"
	"github.com/flowlens/flowlens/internal/tlstest"
	"github.com/flowlens/flowlens/internal/wire"
	flowv1 "github.com/flowlens/flowlens/proto/flowlens/flow/v1"
)

// httpsSink keeps every batch it stored, outliving collector restarts as a durable store does.
type httpsSink struct {
	mu      sync.Mutex
	stored  map[uint64]int // times each seq was stored
	records map[int64]flow.Record
	full    atomic.Bool // refuse everything with ErrFull
}

func newHTTPSSink() *httpsSink {
	return &httpsSink{stored: map[uint64]int{}, records: map[int64]flow.Record{}}
}

func (s *httpsSink) Put(_ context.Context, b *ingest.Batch) error {
	if s.full.Load() {
		return ingest.ErrFull
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stored[b.Seq]++
	for _, r := range b.Records {
		s.records[r.StartTime] = r
	}
	return nil
}

// check fails t unless the sink stored each of batches exactly once and holds want field for field.
func (s *httpsSink) check(t *testing.T, batches int, want []flow.Record) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.stored) != batches {
		t.Errorf("%d distinct batches stored, want %d", len(s.stored), batches)
	}
	for seq, n := range s.stored {
		if n != 1 {
			t.Errorf("batch %d stored %d times", seq, n)
		}
	}
	if len(s.records) != len(want) {
		t.Fatalf("%d records stored, want %d", len(s.records), len(want))
	}
	for _, r := range want {
		if s.records[r.StartTime] != r {
			t.Fatalf("record differs:\n got %+v\nwant %+v", s.records[r.StartTime], r)
		}
	}
}

// httpsPKI is one test's certificates: a CA, a server certificate for loopback and extra IPs, and an
// exporter's client certificate.
type httpsPKI struct {
	ca     *tlstest.CA
	server *tlstest.Pair
	client *tlstest.Pair
}

func newHTTPSPKI(t *testing.T, ips ...net.IP) *httpsPKI {
	t.Helper()
	ca, err := tlstest.NewCA("https test ca")
	if err != nil {
		t.Fatal(err)
	}
	server, err := ca.Server(ips...)
	if err != nil {
		t.Fatal(err)
	}
	client, err := ca.Client("exp-1")
	if err != nil {
		t.Fatal(err)
	}
	return &httpsPKI{ca: ca, server: server, client: client}
}

// serveHTTPS starts a real HTTPS ingest server on addr (TCP and UDP) in front of sink, with a de-duplication
// state seeded from what the sink holds, as a restarted collector seeds it from its store.
func serveHTTPS(t *testing.T, addr string, tlsConf *tls.Config, sink *httpsSink) *ingest.HTTPSServer {
	t.Helper()
	dedup := ingest.NewDedup(100)
	sink.mu.Lock()
	for seq := range sink.stored {
		dedup.Seed("exp-1", seq)
	}
	sink.mu.Unlock()
	h := &ingest.Handler{Sink: sink, Dedup: dedup, Metrics: ingest.NewMetrics(prometheus.NewRegistry()), Log: zaptest.NewLogger(t)}
	srv, err := ingest.ServeHTTPS(addr, tlsConf, h, ingest.HTTPSOptions{ShutdownGrace: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return srv
}

func newHTTPSTransport(t *testing.T, srvAddr string, tlsConf *tls.Config, o transport.HTTPSOptions) *transport.HTTPS {
	t.Helper()
	o.Log = zaptest.NewLogger(t)
	tr, err := transport.NewHTTPS("https://"+srvAddr+ingest.BatchPath, tlsConf, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tr.Close() })
	return tr
}

// httpsBatchOf makes batch seq of per records, numbered so that no two batches share a start time.
func httpsBatchOf(seq, per int) (*flowv1.FlowBatch, []flow.Record) {
	recs := make([]flow.Record, per)
	for i := range recs {
		recs[i] = record(seq*per + i)
	}
	return wire.NewBatch("exp-1", uint64(seq), time.Now().UnixNano(), recs[0].LocalWorkload, recs), recs
}

// sendHTTPS sends one batch with a deadline and returns the ack status.
func sendHTTPS(tr *transport.HTTPS, b *flowv1.FlowBatch, timeout time.Duration) (flowv1.AckStatus, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return tr.Send(ctx, b)
}

// TestHTTPSEndToEnd: over HTTP/3 (chosen by itself) and over HTTP/2 (pinned), batches go through the
// Sender to a real server and its ingest handler, across a collector restart in the middle; every
// record arrives once, field for field, and the transport ends on the protocol it should.
func TestHTTPSEndToEnd(t *testing.T) {
	for _, tc := range []struct{ pin, want string }{{"", "h3"}, {"h2", "h2"}} {
		t.Run(tc.want, func(t *testing.T) {
			pki := newHTTPSPKI(t)
			sink := newHTTPSSink()
			srv := serveHTTPS(t, "127.0.0.1:0", pki.ca.ServerConfig(pki.server, tls.NoClientCert), sink)
			// A short probe interval: if the restart sends the transport to HTTP/2, it comes back.
			tr := newHTTPSTransport(t, srv.Addr, pki.ca.ClientConfig(nil),
				transport.HTTPSOptions{Pin: tc.pin, ProbeInterval: 300 * time.Millisecond})

			dropped := 0
			buf := transport.NewBuffer(10000, 64<<20, func(n int) { dropped += n })
			s := &transport.Sender{Buf: buf, T: tr, Timeout: 3 * time.Second, Rejected: func(int) { t.Error("rejected") }, Log: zaptest.NewLogger(t)}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() { defer close(done); s.Run(ctx) }()
			defer func() { cancel(); <-done }()

			const batches, per = 100, 10
			var want []flow.Record
			push := func(from, to int) {
				for seq := from; seq <= to; seq++ {
					b, recs := httpsBatchOf(seq, per)
					want = append(want, recs...)
					buf.Push(b)
				}
			}
			drained := func() {
				deadline := time.Now().Add(30 * time.Second)
				for n, _ := buf.Len(); n > 0; n, _ = buf.Len() {
					if time.Now().After(deadline) {
						t.Fatalf("%d batches still undelivered", n)
					}
					time.Sleep(10 * time.Millisecond)
				}
			}
			// The first half is delivered on a live connection; the collector then goes away under it,
			// the second half is queued while it is down, and a new collector takes over its port.
			push(1, batches/2)
			drained()
			if err := srv.Close(); err != nil {
				t.Error(err)
			}
			push(batches/2+1, batches)
			time.Sleep(500 * time.Millisecond)
			srv = serveHTTPS(t, srv.Addr, pki.ca.ServerConfig(pki.server, tls.NoClientCert), sink)
			defer srv.Close()
			drained()
			// One more batch after the probe interval settles the protocol.
			time.Sleep(300 * time.Millisecond)
			push(batches+1, batches+1)
			drained()
			if dropped != 0 {
				t.Errorf("%d records dropped", dropped)
			}
			sink.check(t, batches+1, want)
			if tr.Proto() != tc.want {
				t.Errorf("ended on %s, want %s", tr.Proto(), tc.want)
			}
		})
	}
}

// TestHTTPSFallback: with the collector in one network namespace and the exporter in another, a
// firewall rule that drops the collector's UDP port sends the transport to HTTP/2 within the handshake
// timeout, and every batch is delivered; once the rule goes, the next probe brings HTTP/3 back.
func TestHTTPSFallback(t *testing.T) {
	nettest.RequirePrivileged(t)
	colNS, expNS := nettest.NewNetns(t), nettest.NewNetns(t)
	nettest.Veth(t, colNS, expNS, "10.199.8.1/24", "10.199.8.2/24")
	pki := newHTTPSPKI(t, net.ParseIP("10.199.8.1"))
	sink := newHTTPSSink()
	var srv *ingest.HTTPSServer
	colNS.Do(t, func() { srv = serveHTTPS(t, "10.199.8.1:0", pki.ca.ServerConfig(pki.server, tls.NoClientCert), sink) })
	defer srv.Close()
	_, port, _ := net.SplitHostPort(srv.Addr)
	colNS.Exec(t, "nft", "add", "table", "inet", "fltest")
	colNS.Exec(t, "nft", "add", "chain", "inet", "fltest", "in", "{ type filter hook input priority 0 ; }")
	colNS.Exec(t, "nft", "add", "rule", "inet", "fltest", "in", "udp", "dport", port, "drop")

	// Every socket the transport makes, TCP and UDP, is made inside the exporter's namespace.
	const handshake, probe = 500 * time.Millisecond, 2 * time.Second
	tr := newHTTPSTransport(t, srv.Addr, pki.ca.ClientConfig(nil), transport.HTTPSOptions{
		HandshakeTimeout: handshake,
		ProbeInterval:    probe,
		DialContext: func(ctx context.Context, network, addr string) (c net.Conn, err error) {
			if nerr := nettest.InNetns(expNS.Path, func() { c, err = (&net.Dialer{}).DialContext(ctx, network, addr) }); nerr != nil {
				return nil, nerr
			}
			return c, err
		},
		ListenPacket: func() (pc net.PacketConn, err error) {
			if nerr := nettest.InNetns(expNS.Path, func() { pc, err = net.ListenUDP("udp", nil) }); nerr != nil {
				return nil, nerr
			}
			return pc, err
		},
	})

	const batches, per = 20, 10
	var want []flow.Record
	start := time.Now()
	for seq := 1; seq <= batches; seq++ {
		b, recs := httpsBatchOf(seq, per)
		want = append(want, recs...)
		if st, err := sendHTTPS(tr, b, 5*time.Second); err != nil || st != flowv1.AckStatus_ACK_STATUS_STORED {
			t.Fatalf("batch %d: %v, %v", seq, st, err)
		}
		if tr.Proto() != "h2" {
			t.Fatalf("batch %d went over %s with UDP blocked", seq, tr.Proto())
		}
	}
	// Only the first batch waited for HTTP/3; the rest went straight to HTTP/2 until the next probe.
	if took := time.Since(start); took < handshake || took > handshake+probe {
		t.Errorf("%d batches took %v: want one handshake timeout (%v) and no probe", batches, took, handshake)
	}
	sink.check(t, batches, want)

	colNS.Exec(t, "nft", "delete", "table", "inet", "fltest")
	time.Sleep(probe)
	b, recs := httpsBatchOf(batches+1, per)
	if st, err := sendHTTPS(tr, b, 5*time.Second); err != nil || st != flowv1.AckStatus_ACK_STATUS_STORED || tr.Proto() != "h3" {
		t.Fatalf("after unblocking: %v, %v over %s; want STORED over h3", st, err, tr.Proto())
	}
	sink.check(t, batches+1, append(want, recs...))
}

// TestHTTPSAnswers: a batch the collector refuses is REJECTED and one it cannot take now is RETRY, over
// both protocols, never an error; a deadline shorter than the sink's delay ends Send in time.
func TestHTTPSAnswers(t *testing.T) {
	pki := newHTTPSPKI(t)
	sink := newHTTPSSink()
	srv := serveHTTPS(t, "127.0.0.1:0", pki.ca.ServerConfig(pki.server, tls.NoClientCert), sink)
	defer srv.Close()
	for i, pin := range []string{"h3", "h2"} {
		tr := newHTTPSTransport(t, srv.Addr, pki.ca.ClientConfig(nil), transport.HTTPSOptions{Pin: pin})
		bad, _ := httpsBatchOf(10*i+1, 3)
		bad.Version = 42
		if st, err := sendHTTPS(tr, bad, 5*time.Second); st != flowv1.AckStatus_ACK_STATUS_REJECTED || err != nil {
			t.Errorf("%s, unknown version: %v, %v; want REJECTED", pin, st, err)
		}
		sink.full.Store(true)
		b, _ := httpsBatchOf(10*i+2, 3)
		if st, err := sendHTTPS(tr, b, 5*time.Second); st != flowv1.AckStatus_ACK_STATUS_RETRY || err != nil {
			t.Errorf("%s, full sink: %v, %v; want RETRY", pin, st, err)
		}
		sink.full.Store(false)
		if st, err := sendHTTPS(tr, b, 5*time.Second); st != flowv1.AckStatus_ACK_STATUS_STORED || err != nil {
			t.Errorf("%s, resend: %v, %v; want STORED", pin, st, err)
		}
		if st, err := sendHTTPS(tr, b, 5*time.Second); st != flowv1.AckStatus_ACK_STATUS_DUPLICATE || err != nil {
			t.Errorf("%s, second resend: %v, %v; want DUPLICATE", pin, st, err)
		}
	}
}

// TestHTTPSDeadline: Send returns when its context ends, over both protocols, even while the collector
// holds the request.
func TestHTTPSDeadline(t *testing.T) {
	pki := newHTTPSPKI(t)
	release := make(chan struct{})
	h := &ingest.Handler{Sink: blockingSink(release), Dedup: ingest.NewDedup(10),
		Metrics: ingest.NewMetrics(prometheus.NewRegistry()), Log: zaptest.NewLogger(t)}
	srv, err := ingest.ServeHTTPS("127.0.0.1:0", pki.ca.ServerConfig(pki.server, tls.NoClientCert), h, ingest.HTTPSOptions{ShutdownGrace: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	defer close(release)
	for i, pin := range []string{"h3", "h2"} {
		tr := newHTTPSTransport(t, srv.Addr, pki.ca.ClientConfig(nil), transport.HTTPSOptions{Pin: pin})
		b, _ := httpsBatchOf(i+1, 1)
		start := time.Now()
		if _, err := sendHTTPS(tr, b, 300*time.Millisecond); err == nil {
			t.Errorf("%s: no error from a send the collector never answered", pin)
		}
		if took := time.Since(start); took > 2*time.Second {
			t.Errorf("%s: send took %v past its 300ms deadline", pin, took)
		}
	}
}

// blockingSink holds every batch until release closes or the request's context ends.
type blockingSink chan struct{}

func (s blockingSink) Put(ctx context.Context, _ *ingest.Batch) error {
	select {
	case <-s:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// TestHTTPSMutualTLS: a server that requires client certificates refuses an exporter without one, or
// with one from another CA, over HTTP/3, HTTP/2 and with fallback; its own exporter gets through.
func TestHTTPSMutualTLS(t *testing.T) {
	pki := newHTTPSPKI(t)
	sink := newHTTPSSink()
	srv := serveHTTPS(t, "127.0.0.1:0", pki.ca.ServerConfig(pki.server, tls.RequireAndVerifyClientCert), sink)
	defer srv.Close()
	other, err := tlstest.NewCA("other ca")
	if err != nil {
		t.Fatal(err)
	}
	stranger, err := other.Client("exp-1")
	if err != nil {
		t.Fatal(err)
	}
	withCert := func(p *tlstest.Pair) *tls.Config {
		c := pki.ca.ClientConfig(nil)
		c.Certificates = []tls.Certificate{p.TLS}
		return c
	}
	seq := 0
	for _, pin := range []string{"h3", "h2", ""} {
		for _, tc := range []struct {
			name string
			conf *tls.Config
			ok   bool
		}{
			{"no certificate", pki.ca.ClientConfig(nil), false},
			{"certificate of another ca", withCert(stranger), false},
			{"own certificate", pki.ca.ClientConfig(pki.client), true},
		} {
			seq++
			tr := newHTTPSTransport(t, srv.Addr, tc.conf, transport.HTTPSOptions{Pin: pin})
			b, _ := httpsBatchOf(seq, 1)
			st, err := sendHTTPS(tr, b, 5*time.Second)
			if ok := err == nil && st == flowv1.AckStatus_ACK_STATUS_STORED; ok != tc.ok {
				t.Errorf("pin %q, %s: %v, %v; want success %v", pin, tc.name, st, err, tc.ok)
			}
		}
	}
	sink.mu.Lock()
	defer sink.mu.Unlock()
	if len(sink.stored) != 3 {
		t.Errorf("%d batches stored, want the 3 with the exporter's own certificate", len(sink.stored))
	}
}

// TestHTTPSProxy: over HTTP/2 the transport reaches the collector through an HTTPS proxy (CONNECT), as
// HTTPS_PROXY would make it; the tunnel keeps TLS end to end.
func TestHTTPSProxy(t *testing.T) {
	pki := newHTTPSPKI(t)
	sink := newHTTPSSink()
	srv := serveHTTPS(t, "127.0.0.1:0", pki.ca.ServerConfig(pki.server, tls.NoClientCert), sink)
	defer srv.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var tunnels atomic.Int32
	nettest.Serve(ln, func(c net.Conn) { connectProxy(c, &tunnels) })
	proxyURL := &url.URL{Scheme: "http", Host: ln.Addr().String()}
	// ProxyFromEnvironment never proxies loopback, so the test names the proxy itself.
	tr := newHTTPSTransport(t, srv.Addr, pki.ca.ClientConfig(nil), transport.HTTPSOptions{Pin: "h2",
		Proxy: func(*http.Request) (*url.URL, error) { return proxyURL, nil }})
	for seq := 1; seq <= 3; seq++ {
		b, _ := httpsBatchOf(seq, 2)
		if st, err := sendHTTPS(tr, b, 5*time.Second); err != nil || st != flowv1.AckStatus_ACK_STATUS_STORED {
			t.Fatalf("batch %d through the proxy: %v, %v", seq, st, err)
		}
	}
	if n := tunnels.Load(); n != 1 {
		t.Errorf("%d CONNECT tunnels, want 1 kept open for all batches", n)
	}
}

// connectProxy serves one proxy connection: a CONNECT request, then bytes both ways until either side
// closes.
func connectProxy(c net.Conn, tunnels *atomic.Int32) {
	defer c.Close()
	br := bufio.NewReader(c)
	req, err := http.ReadRequest(br)
	if err != nil || req.Method != http.MethodConnect {
		fmt.Fprint(c, "HTTP/1.1 405 Method Not Allowed\r\n\r\n")
		return
	}
	up, err := net.Dial("tcp", req.Host)
	if err != nil {
		fmt.Fprint(c, "HTTP/1.1 502 Bad Gateway\r\n\r\n")
		return
	}
	defer up.Close()
	tunnels.Add(1)
	fmt.Fprint(c, "HTTP/1.1 200 Connection established\r\n\r\n")
	go func() { io.Copy(up, br); up.Close() }()
	io.Copy(c, up)
}
