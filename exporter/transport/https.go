package transport

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"

	flowv1 "github.com/flowlens/flowlens/proto/flowlens/flow/v1"
)

// HTTPSOptions tune the HTTPS transport; the zero value takes every default.
type HTTPSOptions struct {
	// Pin is "h3" or "h2" to use only that protocol; empty tries HTTP/3 and falls back to HTTP/2.
	Pin string
	// HandshakeTimeout is how long HTTP/3 may wait for the collector's QUIC handshake before this batch
	// goes over HTTP/2 instead. Default 1s: a QUIC handshake is one round trip plus a retransmission or
	// two, and a path that drops UDP must not hold a batch back for long.
	HandshakeTimeout time.Duration
	// ProbeInterval is how long the transport stays on HTTP/2 after HTTP/3 failed before it tries HTTP/3
	// again. Default 5 minutes: a blocked path costs one HandshakeTimeout per interval.
	ProbeInterval time.Duration
	// DialContext makes the TCP connections of HTTP/2 (to the collector, or to the proxy). Default: a
	// net.Dialer with a 10s timeout.
	DialContext func(ctx context.Context, network, addr string) (net.Conn, error)
	// ListenPacket makes the one UDP socket HTTP/3 uses, on the first HTTP/3 attempt; the transport
	// closes it. Default: an unbound dual-stack UDP socket.
	ListenPacket func() (net.PacketConn, error)
	// Proxy picks the proxy for HTTP/2 requests. Default http.ProxyFromEnvironment (HTTPS_PROXY,
	// NO_PROXY). HTTP/3 never goes through a proxy.
	Proxy func(*http.Request) (*url.URL, error)
	// Log receives protocol switches and the collector's reasons for refusing batches. Default: none.
	Log *zap.Logger
}

func (o *HTTPSOptions) defaults() error {
	switch o.Pin {
	case "", "h3", "h2":
	default:
		return fmt.Errorf("https pin %q: want h3, h2 or empty", o.Pin)
	}
	if o.HandshakeTimeout <= 0 {
		o.HandshakeTimeout = time.Second
	}
	if o.ProbeInterval <= 0 {
		o.ProbeInterval = 5 * time.Minute
	}
	if o.DialContext == nil {
		o.DialContext = (&net.Dialer{Timeout: 10 * time.Second}).DialContext
	}
	if o.ListenPacket == nil {
		o.ListenPacket = func() (net.PacketConn, error) { return net.ListenUDP("udp", nil) }
	}
	if o.Proxy == nil {
		o.Proxy = http.ProxyFromEnvironment
	}
	if o.Log == nil {
		o.Log = zap.NewNop()
	}
	return nil
}

// maxAckBytes bounds what is read of an answer: an ack is a few bytes, a refusal one line of text.
const maxAckBytes = 64 << 10

// errNoH3 marks an HTTP/3 attempt that could not reach the collector over QUIC at all (no UDP socket,
// or no handshake completed in time): the cue to fall back to HTTP/2.
var errNoH3 = errors.New("http3 unavailable")

// HTTPS POSTs each batch, zstd-compressed, to the collector's HTTPS ingest URL over HTTP/3 (QUIC) and
// falls back to HTTP/2 over TLS when no QUIC handshake completes within HandshakeTimeout, as on paths
// that drop UDP. It returns to HTTP/3 only when a probe, at most once per ProbeInterval, succeeds. A
// batch sent over HTTP/3 and then again over HTTP/2 is stored once: the collector de-duplicates on
// (exporter id, seq).
//
// Answers map to acks: 2xx carries the BatchAck; 400, 413 and 415 are REJECTED (never resent); 429 and
// 5xx are RETRY; anything else, and every network failure, is an error.
//
// Send holds a lock for its whole run, so Close waits for a Send in progress (bounded by its context).
type HTTPS struct {
	url     string
	addr    string // host:port of url, for QUIC, which takes no proxy
	tlsConf *tls.Config
	o       HTTPSOptions
	enc     *zstd.Encoder
	h2      *http.Transport
	h3      http3.Transport // builds client connections; it dials nothing itself
	onH2    atomic.Bool     // read by Proto from any goroutine

	mu       sync.Mutex // held by Send and Close
	raw      []byte     // the marshalled batch, reused: only EncodeAll reads it, before Send returns
	pc       net.PacketConn
	qt       *quic.Transport
	qconn    *quic.Conn
	cc       *http3.ClientConn
	fellBack time.Time // when HTTP/2 took over
	closed   bool
	hint     string // the collector's preferred transport, from its latest ack
}

// NewHTTPS prepares a transport for rawURL (https://host:port/v1/batches) with tlsConf, which holds the
// roots that verify the collector and, for mutual TLS, this exporter's certificate; it is cloned. It
// connects lazily, on the first Send.
func NewHTTPS(rawURL string, tlsConf *tls.Config, o HTTPSOptions) (*HTTPS, error) {
	if err := o.defaults(); err != nil {
		return nil, err
	}
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("https url: %w", err)
	}
	if u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("https url %q: want https://host[:port]/path", rawURL)
	}
	addr := u.Host
	if u.Port() == "" {
		addr = net.JoinHostPort(u.Hostname(), "443")
	}
	if tlsConf == nil {
		tlsConf = &tls.Config{}
	}
	// Flow batches repeat addresses, ports and names, which zstd's default level finds. The frame CRC is
	// left out: TLS and QUIC already authenticate every byte.
	// The fastest level: ~30 % less CPU than the default for ~1 byte more per flow, and CPU is the budget
	// that matters in the exporter.
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1), zstd.WithEncoderCRC(false), zstd.WithLowerEncoderMem(true),
		zstd.WithEncoderLevel(zstd.SpeedFastest))
	if err != nil {
		return nil, fmt.Errorf("zstd encoder: %w", err)
	}
	t := &HTTPS{
		url: rawURL, addr: addr, tlsConf: tlsConf.Clone(), o: o, enc: enc,
		h2: &http.Transport{
			Proxy:               o.Proxy,
			DialContext:         o.DialContext,
			TLSClientConfig:     tlsConf.Clone(),
			ForceAttemptHTTP2:   true, // a custom dialer or TLS config turns HTTP/2 off unless forced
			TLSHandshakeTimeout: 10 * time.Second,
			MaxIdleConnsPerHost: 1, // one batch in flight: one connection is all this transport needs
			IdleConnTimeout:     90 * time.Second,
			DisableCompression:  true, // acks are tiny; gzip would only cost
		},
	}
	t.onH2.Store(o.Pin == "h2")
	return t, nil
}

// Name is "https".
func (t *HTTPS) Name() string { return "https" }

// Hint is the transport the collector said it prefers in its latest ack (set under mu, by Send).
func (t *HTTPS) Hint() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.hint
}

// Proto is the protocol the last batch went over, or the next will try: "h3" or "h2".
func (t *HTTPS) Proto() string {
	if t.onH2.Load() {
		return "h2"
	}
	return "h3"
}

// Send posts b and waits for the collector's answer until ctx ends. Over HTTP/3 it waits for the
// handshake at most HandshakeTimeout, and at most half of what is left of ctx, so that the same call can
// still deliver b over HTTP/2.
func (t *HTTPS) Send(ctx context.Context, b *flowv1.FlowBatch) (flowv1.AckStatus, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return 0, fmt.Errorf("send batch %d: https transport closed", b.Seq)
	}
	raw, err := proto.MarshalOptions{}.MarshalAppend(t.raw[:0], b)
	if err != nil {
		return 0, fmt.Errorf("marshal batch %d: %w", b.Seq, err)
	}
	t.raw = raw
	// A fresh body each time: an HTTP transport may still be reading it after RoundTrip returned.
	body := t.enc.EncodeAll(raw, nil)

	if now := time.Now(); t.wantH3(now) {
		status, err := t.sendH3(ctx, b.Seq, body)
		if err == nil || t.o.Pin == "h3" || !errors.Is(err, errNoH3) || ctx.Err() != nil {
			return status, err
		}
		if !t.onH2.Swap(true) {
			t.o.Log.Warn("http3 unreachable, falling back to http2", zap.String("url", t.url),
				zap.Duration("retry_http3_in", t.o.ProbeInterval), zap.Error(err))
		}
		t.fellBack = now
	}
	return t.post(ctx, t.h2, "h2", b.Seq, body)
}

// wantH3 says whether this batch should try HTTP/3: always on it, and on HTTP/2 once ProbeInterval passed.
func (t *HTTPS) wantH3(now time.Time) bool {
	switch t.o.Pin {
	case "h3":
		return true
	case "h2":
		return false
	}
	return !t.onH2.Load() || now.Sub(t.fellBack) >= t.o.ProbeInterval
}

func (t *HTTPS) sendH3(ctx context.Context, seq uint64, body []byte) (flowv1.AckStatus, error) {
	if err := t.connectH3(ctx); err != nil {
		return 0, fmt.Errorf("send batch %d over h3: %w", seq, err)
	}
	status, err := t.post(ctx, t.cc, "h3", seq, body)
	if err != nil {
		// The connection may be dead (collector restarted) or stuck: the next batch dials afresh.
		t.dropH3()
		return 0, err
	}
	if t.onH2.Swap(false) {
		t.o.Log.Info("back on http3", zap.String("url", t.url))
	}
	return status, nil
}

// connectH3 makes sure a QUIC connection to the collector is up, dialling one if there is none or the
// last one ended. A missing socket or a failed handshake is wrapped in errNoH3.
func (t *HTTPS) connectH3(ctx context.Context) error {
	if t.qconn != nil && t.qconn.Context().Err() == nil {
		return nil
	}
	t.dropH3()
	if t.qt == nil {
		pc, err := t.o.ListenPacket()
		if err != nil {
			return fmt.Errorf("%w: udp socket: %w", errNoH3, err)
		}
		t.pc, t.qt = pc, &quic.Transport{Conn: pc}
	}
	udpAddr, err := resolveUDP(ctx, t.addr)
	if err != nil {
		return err
	}
	wait := t.o.HandshakeTimeout
	if dl, ok := ctx.Deadline(); ok {
		wait = min(wait, time.Until(dl)/2)
	}
	dctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	tlsConf := t.tlsConf.Clone()
	tlsConf.NextProtos = []string{http3.NextProtoH3}
	if tlsConf.ServerName == "" {
		tlsConf.ServerName, _, _ = net.SplitHostPort(t.addr)
	}
	conn, err := t.qt.Dial(dctx, udpAddr, tlsConf, &quic.Config{
		HandshakeIdleTimeout: wait,
		MaxIdleTimeout:       time.Minute,
		KeepAlivePeriod:      15 * time.Second, // keeps NAT bindings between flushes
		MaxIncomingStreams:   -1,               // the collector never opens request streams to us
	})
	if err != nil {
		return fmt.Errorf("%w: handshake with %s: %w", errNoH3, t.addr, err)
	}
	t.qconn, t.cc = conn, t.h3.NewClientConn(conn)
	return nil
}

// dropH3 closes the QUIC connection, if any, keeping the socket for the next dial.
func (t *HTTPS) dropH3() {
	if t.qconn != nil {
		t.qconn.CloseWithError(0, "")
		t.qconn, t.cc = nil, nil
	}
}

// resolveUDP resolves host:port to one UDP address, honouring ctx.
func resolveUDP(ctx context.Context, hostport string) (*net.UDPAddr, error) {
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		return nil, fmt.Errorf("collector address %q: %w", hostport, err)
	}
	p, err := net.DefaultResolver.LookupPort(ctx, "udp", port)
	if err != nil {
		return nil, fmt.Errorf("collector port %q: %w", port, err)
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		return net.UDPAddrFromAddrPort(netip.AddrPortFrom(ip, uint16(p))), nil
	}
	ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	if err != nil {
		return nil, fmt.Errorf("resolve collector %q: %w", host, err)
	}
	return net.UDPAddrFromAddrPort(netip.AddrPortFrom(ips[0].Unmap(), uint16(p))), nil
}

// post sends one compressed batch through rt and maps the answer.
func (t *HTTPS) post(ctx context.Context, rt http.RoundTripper, over string, seq uint64, body []byte) (flowv1.AckStatus, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, t.url, bytes.NewReader(body))
	if err != nil {
		return 0, fmt.Errorf("request for batch %d: %w", seq, err)
	}
	req.Header.Set("Content-Type", "application/x-protobuf")
	req.Header.Set("Content-Encoding", "zstd")
	resp, err := rt.RoundTrip(req)
	if err != nil {
		return 0, fmt.Errorf("post batch %d over %s: %w", seq, over, err)
	}
	defer resp.Body.Close()
	answer, err := io.ReadAll(io.LimitReader(resp.Body, maxAckBytes))
	if err != nil {
		return 0, fmt.Errorf("read answer to batch %d over %s: %w", seq, over, err)
	}
	switch c := resp.StatusCode; {
	case c >= 200 && c < 300:
		var ack flowv1.BatchAck
		if err := proto.Unmarshal(answer, &ack); err != nil {
			return 0, fmt.Errorf("ack of batch %d over %s: %w", seq, over, err)
		}
		if ack.Seq != seq || ack.Status == flowv1.AckStatus_ACK_STATUS_UNSPECIFIED {
			return 0, fmt.Errorf("ack of batch %d over %s: seq %d, status %v", seq, over, ack.Seq, ack.Status)
		}
		t.hint = ack.PreferredTransport
		return ack.Status, nil
	case c == http.StatusBadRequest || c == http.StatusRequestEntityTooLarge || c == http.StatusUnsupportedMediaType:
		t.o.Log.Warn("collector refused a batch", zap.Uint64("seq", seq), zap.Int("status", c),
			zap.ByteString("reason", bytes.TrimSpace(answer)))
		return flowv1.AckStatus_ACK_STATUS_REJECTED, nil
	case c == http.StatusTooManyRequests || c >= 500:
		return flowv1.AckStatus_ACK_STATUS_RETRY, nil
	default:
		return 0, fmt.Errorf("post batch %d over %s: unexpected answer %s: %s", seq, over, resp.Status, bytes.TrimSpace(answer))
	}
}

// Close ends the QUIC connection and socket and the idle HTTP/2 connections, after waiting for a Send in
// progress. Sends after Close fail.
func (t *HTTPS) Close() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil
	}
	t.closed = true
	t.dropH3()
	var err error
	if t.qt != nil {
		// quic.Transport leaves a socket it was given open.
		err = errors.Join(t.qt.Close(), t.pc.Close())
	}
	t.h2.CloseIdleConnections()
	t.enc.Close()
	return err
}
