package ingest_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/quic-go/quic-go/http3"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
	"google.golang.org/protobuf/proto"

	"github.com/flowlens/flowlens/collector/ingest"
	"github.com/flowlens/flowlens/exporter/transport"
	"github.com/flowlens/flowlens/internal/flow"
	"github.com/flowlens/flowlens/internal/tlstest"
	"github.com/flowlens/flowlens/internal/wire"
	flowv1 "github.com/flowlens/flowlens/proto/flowlens/flow/v1"
)

// httpsSink counts what reaches it; with full set it refuses everything with ErrFull.
type httpsSink struct {
	full    atomic.Bool
	batches atomic.Int64
	records atomic.Int64
}

func (s *httpsSink) Put(_ context.Context, b *ingest.Batch) error {
	if s.full.Load() {
		return ingest.ErrFull
	}
	s.batches.Add(1)
	s.records.Add(int64(len(b.Records)))
	return nil
}

func newHTTPSHandler(log *zap.Logger, sink ingest.Sink) *ingest.Handler {
	return &ingest.Handler{Sink: sink, Dedup: ingest.NewDedup(100), Metrics: ingest.NewMetrics(prometheus.NewRegistry()), Log: log}
}

// httpsFlows makes n records shaped like a busy pod's: mostly outbound calls to a few dozen service
// addresses on well-known ports, some inbound ones, random ephemeral ports, durations, sizes and RTTs,
// the odd reset or refused connect. Seeded, so sizes measured on it repeat.
func httpsFlows(n int, seed uint64) []flow.Record {
	rng := rand.New(rand.NewPCG(seed, 1))
	w := flow.Workload{Name: "checkout", Namespace: "shop", Pod: "checkout-7d9f", Node: "n1"}
	end := int64(1_795_000_000_000_000_000)
	out := make([]flow.Record, n)
	for i := range out {
		end += rng.Int64N(40_000_000) // a batch of 256 spans about 5 s
		r := flow.Record{LocalAddr: netip.AddrFrom4([4]byte{10, 1, 2, 3}), Role: flow.RoleClient,
			LocalPort: uint16(32768 + rng.IntN(28000)), RemotePort: []uint16{443, 8080, 5432, 6379, 9092}[rng.IntN(5)],
			RemoteAddr: netip.AddrFrom4([4]byte{10, 9, byte(rng.IntN(4)), byte(rng.IntN(10))}),
			StartTime:  end - int64(1_000_000*(1+rng.ExpFloat64()*300)), EndTime: end,
			BytesSent: uint64(200 + rng.ExpFloat64()*4000), BytesReceived: uint64(500 + rng.ExpFloat64()*40000),
			SrttUs: uint32(100 + rng.IntN(900)), Close: flow.CloseNormal, Pid: []uint32{4242, 4250}[rng.IntN(2)],
			Comm: "checkout", Netns: 4026532641, CgroupID: 91234, LocalWorkload: w}
		if rng.IntN(5) == 0 { // inbound
			r.Role, r.LocalPort, r.RemotePort = flow.RoleServer, 8080, uint16(32768+rng.IntN(28000))
			r.RemoteAddr = netip.AddrFrom4([4]byte{10, 7, byte(rng.IntN(8)), byte(rng.IntN(250))})
		}
		r.SegsSent, r.SegsReceived = uint32(r.BytesSent/1448+3), uint32(r.BytesReceived/1448+3)
		r.RttVarUs, r.MinRttUs = r.SrttUs/4, r.SrttUs*7/10
		if rng.IntN(20) == 0 {
			r.Retransmits = uint32(1 + rng.IntN(3))
		}
		switch rng.IntN(40) {
		case 0:
			r.Close = flow.CloseResetReceived
		case 1:
			r.Close, r.Error, r.BytesSent, r.BytesReceived, r.SegsSent, r.SegsReceived = flow.CloseConnectFailed, "ECONNREFUSED", 0, 0, 1, 1
		}
		out[i] = r
	}
	return out
}

func httpsBatch(seq uint64, version uint32) *flowv1.FlowBatch {
	recs := httpsFlows(8, seq)
	b := wire.NewBatch("exp-1", seq, time.Now().UnixNano(), recs[0].LocalWorkload, recs)
	b.Version = version
	return b
}

func mustMarshal(t testing.TB, m proto.Message) []byte {
	t.Helper()
	raw, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

func zstdEncode(t testing.TB, raw []byte) []byte {
	t.Helper()
	enc, err := zstd.NewWriter(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer enc.Close()
	return enc.EncodeAll(raw, nil)
}

func gzipEncode(t testing.TB, raw []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write(raw)
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// startHTTPS starts HTTPS ingest on loopback with a server certificate from a fresh CA and returns it
// with client TLS settings that trust it. The server closes when the test ends.
func startHTTPS(t testing.TB, h *ingest.Handler, o ingest.HTTPSOptions) (*ingest.HTTPSServer, *tls.Config) {
	t.Helper()
	ca, err := tlstest.NewCA("ingest test ca")
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ca.Server()
	if err != nil {
		t.Fatal(err)
	}
	srv, err := ingest.ServeHTTPS("127.0.0.1:0", ca.ServerConfig(cert, tls.NoClientCert), h, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := srv.Close(); err != nil {
			t.Error(err)
		}
	})
	return srv, ca.ClientConfig(nil)
}

// httpsClients are raw HTTP/2 and HTTP/3 clients, for requests the exporter would never make.
func httpsClients(t *testing.T, tlsConf *tls.Config) map[string]http.RoundTripper {
	h2 := &http.Transport{TLSClientConfig: tlsConf, ForceAttemptHTTP2: true}
	h3 := &http3.Transport{TLSClientConfig: tlsConf}
	t.Cleanup(func() { h2.CloseIdleConnections(); h3.Close() })
	return map[string]http.RoundTripper{"h2": h2, "h3": h3}
}

type httpsAnswer struct {
	code   int
	header http.Header
	body   []byte
}

func httpsPost(t *testing.T, rt http.RoundTripper, method, url, ctype, encoding string, body []byte) httpsAnswer {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", ctype)
	if encoding != "" {
		req.Header.Set("Content-Encoding", encoding)
	}
	resp, err := rt.RoundTrip(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	got, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return httpsAnswer{resp.StatusCode, resp.Header, got}
}

// httpsRequests reads flowlens_collector_https_requests_total{code, proto} from reg.
func httpsRequests(t *testing.T, reg *prometheus.Registry, code, proto string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "flowlens_collector_https_requests_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["code"] == code && labels["proto"] == proto {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

// TestHTTPSBadInput: over HTTP/2 and HTTP/3, bad requests get their 4xx and are counted, and the server
// goes on storing good batches; the TCP answers advertise HTTP/3 on the same port.
func TestHTTPSBadInput(t *testing.T) {
	sink := &httpsSink{}
	reg := prometheus.NewRegistry()
	srv, tlsConf := startHTTPS(t, newHTTPSHandler(zaptest.NewLogger(t), sink), ingest.HTTPSOptions{Registerer: reg})
	url := "https://" + srv.Addr + ingest.BatchPath
	_, port, _ := net.SplitHostPort(srv.Addr)

	good := mustMarshal(t, httpsBatch(1, wire.Version))
	// Zeros compress to almost nothing: a small body that decompresses past the limit.
	bomb := make([]byte, ingest.DefaultMaxBodyBytes+1)
	seq := uint64(0)
	for version, rt := range httpsClients(t, tlsConf) {
		for _, tc := range []struct {
			name, method, url, ctype, encoding string
			body                               []byte
			code                               int
		}{
			{"malformed protobuf", "POST", url, ingest.ProtobufType, "", []byte{0xff, 0xff, 0xff}, 400},
			{"unknown version", "POST", url, ingest.ProtobufType, "", mustMarshal(t, httpsBatch(99, 7)), 400},
			{"record refused", "POST", url, ingest.ProtobufType, "", func() []byte {
				b := httpsBatch(98, wire.Version)
				b.Records[3].LocalAddr = []byte{1, 2, 3}
				return mustMarshal(t, b)
			}(), 400},
			{"bad zstd", "POST", url, ingest.ProtobufType, "zstd", good, 400},
			{"oversize", "POST", url, ingest.ProtobufType, "", make([]byte, ingest.DefaultMaxBodyBytes+1), 413},
			{"zstd bomb", "POST", url, ingest.ProtobufType, "zstd", zstdEncode(t, bomb), 413},
			{"gzip bomb", "POST", url, ingest.ProtobufType, "gzip", gzipEncode(t, bomb), 413},
			{"wrong content type", "POST", url, "application/json", "", good, 415},
			{"unknown encoding", "POST", url, ingest.ProtobufType, "br", good, 415},
			{"wrong method", "PUT", url, ingest.ProtobufType, "", good, 405},
			{"wrong path", "POST", "https://" + srv.Addr + "/v2/batches", ingest.ProtobufType, "", good, 404},
		} {
			got := httpsPost(t, rt, tc.method, tc.url, tc.ctype, tc.encoding, tc.body)
			if got.code != tc.code || len(got.body) == 0 {
				t.Errorf("%s, %s: %d %q, want %d and a reason", version, tc.name, got.code, got.body, tc.code)
			}
			if alt := got.header.Get("Alt-Svc"); (version == "h2") != (alt == `h3=":`+port+`"; ma=86400`) {
				t.Errorf("%s, %s: Alt-Svc %q", version, tc.name, alt)
			}
		}

		// Still serving: a good batch in each encoding is stored, and its resend is a duplicate.
		for _, enc := range []string{"", "zstd", "gzip"} {
			seq++
			raw := mustMarshal(t, httpsBatch(seq, wire.Version))
			body := map[string][]byte{"": raw, "zstd": zstdEncode(t, raw), "gzip": gzipEncode(t, raw)}[enc]
			for _, want := range []flowv1.AckStatus{flowv1.AckStatus_ACK_STATUS_STORED, flowv1.AckStatus_ACK_STATUS_DUPLICATE} {
				got := httpsPost(t, rt, "POST", url, ingest.ProtobufType+"; charset=binary", enc, body)
				var ack flowv1.BatchAck
				if err := proto.Unmarshal(got.body, &ack); got.code != 200 || err != nil || ack.Status != want || ack.Seq != seq {
					t.Fatalf("%s, %q batch %d: %d %v (%v), want 200 %v", version, enc, seq, got.code, &ack, err, want)
				}
				if ct := got.header.Get("Content-Type"); ct != ingest.ProtobufType {
					t.Errorf("%s: ack content type %q", version, ct)
				}
			}
		}
		for code, n := range map[string]float64{"200": 6, "400": 4, "413": 3, "415": 2, "404": 1, "405": 1} {
			if got := httpsRequests(t, reg, code, version); got != n {
				t.Errorf("requests{code=%s,proto=%s} = %v, want %v", code, version, got, n)
			}
		}
	}
	if n := sink.batches.Load(); n != int64(seq) {
		t.Errorf("sink holds %d batches, want %d", n, seq)
	}
}

// TestHTTPSRetry: a full pipeline answers 429 with Retry-After over both protocols, and the exporter's
// transport turns that into RETRY, not an error; once the pipeline drains the same batch is stored.
func TestHTTPSRetry(t *testing.T) {
	sink := &httpsSink{}
	sink.full.Store(true)
	srv, tlsConf := startHTTPS(t, newHTTPSHandler(zaptest.NewLogger(t), sink), ingest.HTTPSOptions{RetryAfter: 1500 * time.Millisecond})
	url := "https://" + srv.Addr + ingest.BatchPath
	for version, rt := range httpsClients(t, tlsConf) {
		got := httpsPost(t, rt, "POST", url, ingest.ProtobufType, "", mustMarshal(t, httpsBatch(1, wire.Version)))
		if got.code != http.StatusTooManyRequests || got.header.Get("Retry-After") != "2" {
			t.Errorf("%s: %d, Retry-After %q; want 429 and 2", version, got.code, got.header.Get("Retry-After"))
		}
	}
	for i, pin := range []string{"h3", "h2"} {
		tr, err := transport.NewHTTPS(url, tlsConf, transport.HTTPSOptions{Pin: pin})
		if err != nil {
			t.Fatal(err)
		}
		defer tr.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		sink.full.Store(true)
		b := httpsBatch(uint64(10+i), wire.Version)
		if st, err := tr.Send(ctx, b); st != flowv1.AckStatus_ACK_STATUS_RETRY || err != nil {
			t.Errorf("%s: %v, %v; want RETRY", pin, st, err)
		}
		sink.full.Store(false)
		if st, err := tr.Send(ctx, b); st != flowv1.AckStatus_ACK_STATUS_STORED || err != nil || tr.Proto() != pin {
			t.Errorf("%s: %v, %v over %s; want STORED", pin, st, err, tr.Proto())
		}
	}
}

// heldSink holds each batch until release closes.
type heldSink struct{ entered, release chan struct{} }

func (s heldSink) Put(context.Context, *ingest.Batch) error {
	s.entered <- struct{}{}
	<-s.release
	return nil
}

// TestHTTPSBusy: beyond MaxInFlight requests the handler answers 429 at once instead of queueing.
func TestHTTPSBusy(t *testing.T) {
	sink := heldSink{make(chan struct{}, 1), make(chan struct{})}
	h, err := ingest.NewHTTPS(newHTTPSHandler(zaptest.NewLogger(t), sink), ingest.HTTPSOptions{MaxInFlight: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	serve := func(seq uint64) *httptest.ResponseRecorder {
		req := httptest.NewRequest("POST", ingest.BatchPath, bytes.NewReader(mustMarshal(t, httpsBatch(seq, wire.Version))))
		req.Header.Set("Content-Type", ingest.ProtobufType)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		return w
	}
	first := make(chan int, 1)
	go func() { first <- serve(1).Code }()
	<-sink.entered
	if w := serve(2); w.Code != http.StatusTooManyRequests || w.Header().Get("Retry-After") == "" {
		t.Errorf("second request while the first is held: %d, Retry-After %q; want 429", w.Code, w.Header().Get("Retry-After"))
	}
	close(sink.release)
	if code := <-first; code != 200 {
		t.Errorf("held request: %d, want 200", code)
	}
	if code := serve(3).Code; code != 200 {
		t.Errorf("request after the first finished: %d, want 200", code)
	}
}

// FuzzHTTPSBody: whatever the body and its declared encoding, the handler answers with one of its codes
// and never panics.
func FuzzHTTPSBody(f *testing.F) {
	raw := mustMarshal(f, httpsBatch(1, wire.Version))
	f.Add(raw, uint8(0))
	f.Add(zstdEncode(f, raw), uint8(1))
	f.Add(gzipEncode(f, raw), uint8(2))
	f.Add(mustMarshal(f, httpsBatch(2, 9)), uint8(0))
	withStatus := httpsBatch(3, wire.Version)
	withStatus.Status = &flowv1.ExporterStatus{Transport: "https", TransportReason: "an HTTPS proxy is configured",
		StartedAt: 1, Drops: map[string]uint64{"kernel/ringbuf_full": 5, "transport/buffer_full": 512}, QueuedRecords: 64}
	f.Add(mustMarshal(f, withStatus), uint8(0))
	f.Add(zstdEncode(f, mustMarshal(f, withStatus)), uint8(1))
	f.Add([]byte{0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f}, uint8(0))
	h, err := ingest.NewHTTPS(newHTTPSHandler(zap.NewNop(), &httpsSink{}), ingest.HTTPSOptions{MaxBodyBytes: 1 << 16})
	if err != nil {
		f.Fatal(err)
	}
	defer h.Close()
	f.Fuzz(func(t *testing.T, body []byte, enc uint8) {
		req := httptest.NewRequest("POST", ingest.BatchPath, bytes.NewReader(body))
		req.Header.Set("Content-Type", ingest.ProtobufType)
		req.Header.Set("Content-Encoding", []string{"", "zstd", "gzip", "identity"}[enc%4])
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		switch w.Code {
		case 200, 400, 413:
		default:
			t.Fatalf("answer %d %q", w.Code, w.Body.Bytes())
		}
	})
}

// BenchmarkHTTPSIngest measures the collector's decode-to-sink rate for zstd batches of 256 records on
// one goroutine (flows/s per core), and the bytes a flow costs: in the body, and on the wire (the
// exporter's own transport to a loopback server, everything it writes, framing and TLS included).
func BenchmarkHTTPSIngest(b *testing.B) {
	const per, distinct = 256, 512
	sink := &httpsSink{}
	h := newHTTPSHandler(zap.NewNop(), sink)
	hs, err := ingest.NewHTTPS(h, ingest.HTTPSOptions{})
	if err != nil {
		b.Fatal(err)
	}
	defer hs.Close()
	// The exporter's encoder settings (transport.NewHTTPS).
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1), zstd.WithEncoderCRC(false), zstd.WithLowerEncoderMem(true))
	if err != nil {
		b.Fatal(err)
	}
	bodies := make([][]byte, distinct)
	var bodyBytes int
	for i := range bodies {
		recs := httpsFlows(per, uint64(i))
		bodies[i] = enc.EncodeAll(mustMarshal(b, wire.NewBatch("exp-1", uint64(i+1), 1, recs[0].LocalWorkload, recs)), nil)
		bodyBytes += len(bodies[i])
	}
	enc.Close()

	i := 0
	for b.Loop() {
		if i%distinct == 0 && i > 0 {
			b.StopTimer()
			h.Dedup = ingest.NewDedup(100) // the same seqs again would be duplicates, never reaching the sink
			b.StartTimer()
		}
		req := httptest.NewRequest("POST", ingest.BatchPath, bytes.NewReader(bodies[i%distinct]))
		req.Header.Set("Content-Type", ingest.ProtobufType)
		req.Header.Set("Content-Encoding", "zstd")
		w := httptest.NewRecorder()
		hs.ServeHTTP(w, req)
		if w.Code != 200 {
			b.Fatalf("answer %d %s", w.Code, w.Body.Bytes())
		}
		i++
	}
	if sink.records.Load() != int64(i*per) {
		b.Fatalf("sink got %d records, want %d", sink.records.Load(), i*per)
	}
	rate := float64(i*per) / b.Elapsed().Seconds()
	body := float64(bodyBytes) / distinct / per
	b.ReportMetric(rate, "flows/s")
	b.ReportMetric(body, "B/flow")
	httpsFigure("https ingest decode-to-sink, zstd, 256/batch, 1 core", rate, "flows/s", "none set")
	httpsFigure("https body bytes per flow, zstd, batch of 256", body, "B", "<= 32 B")
	for _, proto := range []string{"h3", "h2"} {
		httpsFigure(fmt.Sprintf("https wire bytes per flow, %s upstream, batch of 256", proto), httpsWirePerFlow(b, proto, per), "B", "<= 32 B")
	}
}

func httpsFigure(name string, value float64, unit, goal string) {
	fmt.Printf("figure | %-52s | %12.2f %-8s | goal %s\n", name, value, unit, goal)
}

// httpsWirePerFlow sends batches of per records through the exporter's transport pinned to proto and
// returns the bytes its sockets wrote per record, after a first batch that pays for the handshake.
func httpsWirePerFlow(b *testing.B, proto string, per int) float64 {
	srv, tlsConf := startHTTPS(b, newHTTPSHandler(zap.NewNop(), &httpsSink{}), ingest.HTTPSOptions{})
	var written atomic.Int64
	tr, err := transport.NewHTTPS("https://"+srv.Addr+ingest.BatchPath, tlsConf, transport.HTTPSOptions{
		Pin: proto,
		ListenPacket: func() (net.PacketConn, error) {
			pc, err := net.ListenUDP("udp", nil)
			return &httpsCountingPacketConn{pc, &written}, err
		},
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
			return &httpsCountingConn{c, &written}, err
		},
	})
	if err != nil {
		b.Fatal(err)
	}
	defer tr.Close()
	const batches = 50
	for i := 0; i <= batches; i++ {
		if i == 1 {
			written.Store(0)
		}
		recs := httpsFlows(per, uint64(1000+i))
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		st, err := tr.Send(ctx, wire.NewBatch("exp-1", uint64(i+1), time.Now().UnixNano(), recs[0].LocalWorkload, recs))
		cancel()
		if err != nil || st != flowv1.AckStatus_ACK_STATUS_STORED {
			b.Fatalf("%s batch %d: %v %v", proto, i, st, err)
		}
	}
	return float64(written.Load()) / batches / float64(per)
}

// httpsCountingPacketConn hides the *net.UDPConn so that quic-go writes through WriteTo, where it is
// counted, rather than through the batched system calls of a real UDP socket.
type httpsCountingPacketConn struct {
	net.PacketConn
	n *atomic.Int64
}

func (c *httpsCountingPacketConn) WriteTo(p []byte, addr net.Addr) (int, error) {
	n, err := c.PacketConn.WriteTo(p, addr)
	c.n.Add(int64(n))
	return n, err
}

type httpsCountingConn struct {
	net.Conn
	n *atomic.Int64
}

func (c *httpsCountingConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.n.Add(int64(n))
	return n, err
}
