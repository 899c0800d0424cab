package ingest

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"

	flowv1 "github.com/flowlens/flowlens/proto/flowlens/flow/v1"
)

// BatchPath is where HTTPS ingest takes batches: POST, one FlowBatch a request.
const BatchPath = "/v1/batches"

// ProtobufType is the content type of a batch and of the ack that answers it.
const ProtobufType = "application/x-protobuf"

// DefaultMaxBodyBytes is the largest batch body HTTPS ingest takes, compressed and again after
// decompression. A full batch is a few hundred records of about 50 bytes before compression: 4 MiB leaves
// a hundredfold margin and still bounds what one request can make the collector hold.
const DefaultMaxBodyBytes = 4 << 20

// HTTPSOptions tune HTTPS ingest; the zero value takes every default.
type HTTPSOptions struct {
	MaxBodyBytes  int64                 // largest body, compressed and decompressed; default DefaultMaxBodyBytes
	MaxInFlight   int                   // requests decoded or stored at once, beyond which 429; default 64
	ReadTimeout   time.Duration         // how long a request may take to arrive, body included; default 30s
	RetryAfter    time.Duration         // what a 429 advises, rounded up to whole seconds; default 1s
	ShutdownGrace time.Duration         // how long Close lets requests in flight finish; default 5s
	Registerer    prometheus.Registerer // where flowlens_collector_https_requests_total goes; nil: not exported
}

func (o *HTTPSOptions) defaults() {
	if o.MaxBodyBytes <= 0 {
		o.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if o.MaxInFlight <= 0 {
		// Each request may hold two MaxBodyBytes buffers: 64 bounds that at 512 MiB in the worst case,
		// while typical batches of a few tens of KiB keep it near 5 MiB. 64 batches in the sink at once
		// is more than any store here takes in parallel.
		o.MaxInFlight = 64
	}
	if o.ReadTimeout <= 0 {
		o.ReadTimeout = 30 * time.Second
	}
	if o.RetryAfter <= 0 {
		o.RetryAfter = time.Second
	}
	if o.ShutdownGrace <= 0 {
		o.ShutdownGrace = 5 * time.Second
	}
}

// HTTPS is the http.Handler of HTTPS ingest, the same over HTTP/3, HTTP/2 and HTTP/1.1. It answers
// POST BatchPath with Content-Type ProtobufType and an optional Content-Encoding of zstd or gzip:
//
//	200  stored or a duplicate; the body is the BatchAck
//	400  not protobuf, or a batch the wire format refuses (unknown version, bad record); never resend
//	408  the body did not arrive within ReadTimeout
//	413  body over MaxBodyBytes, before or after decompression
//	415  another content type or encoding
//	429  the pipeline is full, the store failed, or MaxInFlight requests are already running; resend
//	     after Retry-After
//
// ServeHTTP blocks until the sink has answered for the batch; it is safe for concurrent use.
type HTTPS struct {
	h          *Handler
	max        int64
	readTO     time.Duration
	retryAfter string
	altSvc     string        // Alt-Svc advertised on responses not already on HTTP/3; set before serving starts
	inFlight   chan struct{} // a slot per request being decoded or stored: excess requests are refused, not queued
	requests   *prometheus.CounterVec
	zstd       *zstd.Decoder
	gzips      sync.Pool // *gzip.Reader, reset per request: each holds ~40 KiB of tables
	bufs       sync.Pool // *[]byte for bodies, so a steady request rate allocates no body buffers
}

// NewHTTPS makes the HTTPS ingest handler for h and registers its request counter on o.Registerer.
func NewHTTPS(h *Handler, o HTTPSOptions) (*HTTPS, error) {
	o.defaults()
	// DecodeAll runs on at most GOMAXPROCS decoders at once (concurrency 0); further requests wait for
	// one, so decompression memory is bounded by the CPU count, not by the request rate.
	dec, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(0), zstd.WithDecoderMaxMemory(uint64(o.MaxBodyBytes)))
	if err != nil {
		return nil, fmt.Errorf("zstd decoder: %w", err)
	}
	requests := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "flowlens_collector_https_requests_total",
		Help: "HTTPS ingest requests, by status code and protocol (h3, h2, h1).",
	}, []string{"code", "proto"})
	if o.Registerer != nil {
		if err := o.Registerer.Register(requests); err != nil {
			// A second listener on the same registry shares the first one's counter.
			are, ok := errors.AsType[prometheus.AlreadyRegisteredError](err)
			if !ok {
				dec.Close()
				return nil, fmt.Errorf("register https request counter: %w", err)
			}
			requests = are.ExistingCollector.(*prometheus.CounterVec)
		}
	}
	secs := int((o.RetryAfter + time.Second - 1) / time.Second)
	return &HTTPS{h: h, max: o.MaxBodyBytes, readTO: o.ReadTimeout, retryAfter: strconv.Itoa(secs),
		requests: requests, zstd: dec, inFlight: make(chan struct{}, o.MaxInFlight)}, nil
}

// Close releases the decoders; call it once no request is being served.
func (s *HTTPS) Close() { s.zstd.Close() }

// errTooLarge marks a body over the limit, before or after decompression.
var errTooLarge = errors.New("body too large")

// errUnsupported marks a content type or encoding HTTPS ingest does not read.
var errUnsupported = errors.New("unsupported media")

// ServeHTTP answers one request; see HTTPS.
func (s *HTTPS) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	version := "h1"
	switch r.ProtoMajor {
	case 3:
		version = "h3"
	case 2:
		version = "h2"
	}
	if s.altSvc != "" && version != "h3" {
		w.Header().Set("Alt-Svc", s.altSvc)
	}
	reply := func(code int, body []byte) {
		s.requests.WithLabelValues(strconv.Itoa(code), version).Inc()
		if code == http.StatusOK {
			w.Header().Set("Content-Type", ProtobufType)
		} else {
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			w.Header().Set("X-Content-Type-Options", "nosniff")
		}
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		w.WriteHeader(code)
		w.Write(body) // a client gone before its answer is not ours to report
	}
	if r.URL.Path != BatchPath {
		reply(http.StatusNotFound, []byte("not found\n"))
		return
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		reply(http.StatusMethodNotAllowed, []byte("use POST\n"))
		return
	}
	select {
	case s.inFlight <- struct{}{}:
		defer func() { <-s.inFlight }()
	default:
		s.h.Metrics.Batches.WithLabelValues("https", "busy").Inc()
		if rf, ok := s.h.Sink.(Refuser); ok {
			rf.Refused("https")
		}
		w.Header().Set("Retry-After", s.retryAfter)
		reply(http.StatusTooManyRequests, []byte("too many batches in flight\n"))
		return
	}
	// The server's own timeouts do not reach HTTP/3 streams; the deadline bounds a client that trickles
	// its body. Not every ResponseWriter supports it (httptest's does not), which only loses the bound.
	_ = http.NewResponseController(w).SetReadDeadline(time.Now().Add(s.readTO))

	b, size, err := s.decode(r)
	if err != nil {
		code, outcome := http.StatusBadRequest, "malformed"
		switch {
		case errors.Is(err, errTooLarge):
			code, outcome = http.StatusRequestEntityTooLarge, "too_large"
		case errors.Is(err, errUnsupported):
			code, outcome = http.StatusUnsupportedMediaType, "unsupported"
		case isTimeout(err):
			code, outcome = http.StatusRequestTimeout, "timeout"
		}
		s.h.Metrics.Batches.WithLabelValues("https", outcome).Inc()
		s.h.Log.Warn("https batch refused", zap.String("remote", r.RemoteAddr), zap.String("proto", version), zap.Error(err))
		reply(code, []byte(err.Error()+"\n"))
		return
	}

	ack := s.h.HandleArrival(r.Context(), Arrival{Transport: "https", Bytes: size, At: time.Now()}, b)
	switch ack.Status {
	case flowv1.AckStatus_ACK_STATUS_STORED, flowv1.AckStatus_ACK_STATUS_DUPLICATE:
		body, err := proto.Marshal(ack)
		if err != nil { // cannot happen for a message this simple; answer rather than crash if it does
			reply(http.StatusInternalServerError, []byte("encode ack\n"))
			return
		}
		reply(http.StatusOK, body)
	case flowv1.AckStatus_ACK_STATUS_REJECTED:
		reply(http.StatusBadRequest, []byte(ack.Message+"\n"))
	case flowv1.AckStatus_ACK_STATUS_RETRY:
		w.Header().Set("Retry-After", s.retryAfter)
		reply(http.StatusTooManyRequests, []byte(ack.Message+"\n"))
	default:
		reply(http.StatusInternalServerError, []byte("no ack status\n"))
	}
}

// decode reads, decompresses and unmarshals the request's batch, and returns it with the size of the
// body as it came. It fails with errTooLarge or errUnsupported (wrapped) for those answers, and with
// another error for input that is not a batch.
func (s *HTTPS) decode(r *http.Request) (*flowv1.FlowBatch, int, error) {
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != ProtobufType {
		return nil, 0, fmt.Errorf("%w: content type %q, want %s", errUnsupported, r.Header.Get("Content-Type"), ProtobufType)
	}
	if r.ContentLength > s.max {
		return nil, 0, fmt.Errorf("%w: %d bytes, limit %d", errTooLarge, r.ContentLength, s.max)
	}
	raw := s.getBuf()
	defer s.bufs.Put(raw)
	if *raw, err = readLimited(*raw, r.Body, s.max); err != nil {
		return nil, 0, fmt.Errorf("read body: %w", err)
	}
	payload, err := s.decompress(r.Header.Get("Content-Encoding"), *raw)
	defer s.bufs.Put(payload)
	if err != nil {
		return nil, 0, err
	}
	b := &flowv1.FlowBatch{}
	// Unmarshal copies what it keeps, so both buffers go back to the pool afterwards.
	if err := proto.Unmarshal(*payload, b); err != nil {
		return nil, 0, fmt.Errorf("malformed batch: %w", err)
	}
	return b, len(*raw), nil
}

// decompress undoes encoding on raw into a buffer from the pool, which the caller puts back even on
// error; for no encoding it copies raw all the same, to keep one ownership rule (the exporter sends zstd).
func (s *HTTPS) decompress(encoding string, raw []byte) (*[]byte, error) {
	out := s.getBuf()
	var err error
	switch encoding {
	case "", "identity":
		*out = append(*out, raw...)
	case "zstd":
		*out, err = s.zstd.DecodeAll(raw, *out)
		if errors.Is(err, zstd.ErrDecoderSizeExceeded) || errors.Is(err, zstd.ErrWindowSizeExceeded) {
			err = fmt.Errorf("%w: zstd body decompresses past %d bytes", errTooLarge, s.max)
		} else if err != nil {
			err = fmt.Errorf("zstd body: %w", err)
		}
	case "gzip":
		*out, err = s.gunzip(raw, *out)
	default:
		err = fmt.Errorf("%w: content encoding %q, want zstd, gzip or none", errUnsupported, encoding)
	}
	return out, err
}

func (s *HTTPS) gunzip(raw, out []byte) ([]byte, error) {
	zr, _ := s.gzips.Get().(*gzip.Reader)
	var err error
	if zr == nil {
		zr, err = gzip.NewReader(bytes.NewReader(raw))
	} else {
		err = zr.Reset(bytes.NewReader(raw))
	}
	if err != nil {
		return out, fmt.Errorf("gzip body: %w", err)
	}
	defer s.gzips.Put(zr)
	out, err = readLimited(out, zr, s.max)
	if err != nil {
		return out, fmt.Errorf("gzip body: %w", err)
	}
	return out, nil
}

func (s *HTTPS) getBuf() *[]byte {
	if p, ok := s.bufs.Get().(*[]byte); ok {
		*p = (*p)[:0]
		return p
	}
	p := make([]byte, 0, 64<<10)
	return &p
}

// readLimited appends all of r to buf, failing with errTooLarge once more than limit bytes came.
func readLimited(buf []byte, r io.Reader, limit int64) ([]byte, error) {
	end := int64(len(buf)) + limit + 1 // one byte past the limit tells a body over it from one at it
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := r.Read(buf[len(buf):min(int64(cap(buf)), end)])
		buf = buf[:len(buf)+n]
		if int64(len(buf)) == end {
			return buf, fmt.Errorf("%w: more than %d bytes", errTooLarge, limit)
		}
		if errors.Is(err, io.EOF) {
			return buf, nil
		}
		if err != nil {
			return buf, err
		}
	}
}

func isTimeout(err error) bool {
	ne, ok := errors.AsType[net.Error](err)
	return (ok && ne.Timeout()) || errors.Is(err, context.DeadlineExceeded)
}

// HTTPSServer serves HTTPS ingest on one port number over TCP (HTTP/2 and HTTP/1.1 with TLS) and UDP
// (HTTP/3 over QUIC), and advertises HTTP/3 with Alt-Svc on the TCP answers.
type HTTPSServer struct {
	Addr    string // host:port that both the TCP and the UDP socket are bound to
	handler *HTTPS
	h2      *http.Server
	h3      *http3.Server
	udp     net.PacketConn
	grace   time.Duration
	log     *zap.Logger

	wg    sync.WaitGroup // the two serve goroutines
	mu    sync.Mutex
	errs  []error // what the serve goroutines ended with, other than being closed
	close sync.Once
}

// ServeHTTPS binds addr over TCP and UDP (with port 0, one free port number for both) and serves h on
// them until Close. The sockets are made before it returns, in the caller's network namespace; the
// serving goroutines belong to the returned server. tlsConf must hold the server certificate; it is
// cloned, and its ClientAuth decides whether exporters need certificates of their own.
func ServeHTTPS(addr string, tlsConf *tls.Config, h *Handler, o HTTPSOptions) (*HTTPSServer, error) {
	o.defaults()
	handler, err := NewHTTPS(h, o)
	if err != nil {
		return nil, err
	}
	tcp, udp, err := listenPair(addr)
	if err != nil {
		handler.Close()
		return nil, err
	}
	port := tcp.Addr().(*net.TCPAddr).Port
	// ma: clients may remember for a day that HTTP/3 answers on this port.
	handler.altSvc = fmt.Sprintf(`h3=":%d"; ma=86400`, port)
	log := h.Log.With(zap.String("listener", "https"))
	s := &HTTPSServer{
		Addr:    tcp.Addr().String(),
		handler: handler,
		udp:     udp,
		grace:   o.ShutdownGrace,
		log:     log,
		h2: &http.Server{
			Handler:           handler,
			TLSConfig:         tlsConf.Clone(),
			ReadHeaderTimeout: 10 * time.Second,
			ReadTimeout:       o.ReadTimeout,
			WriteTimeout:      o.ReadTimeout + time.Minute, // the sink may take its time before the ack
			IdleTimeout:       2 * time.Minute,
			MaxHeaderBytes:    64 << 10,
			ErrorLog:          zap.NewStdLog(log),
		},
		h3: &http3.Server{
			Handler:        handler,
			TLSConfig:      tlsConf.Clone(),
			MaxHeaderBytes: 64 << 10,
			IdleTimeout:    2 * time.Minute,
			// No 0-RTT: a replayed early batch would be de-duplicated, but there is nothing to win for
			// an exporter that keeps its connection open.
			QUICConfig: &quic.Config{MaxIdleTimeout: 2 * time.Minute},
		},
	}
	s.wg.Add(2)
	go s.serve("h2", func() error { return s.h2.ServeTLS(tcp, "", "") })
	go s.serve("h3", func() error { return s.h3.Serve(udp) })
	return s, nil
}

// listenPair binds TCP and UDP sockets to the same port. With port 0 the kernel picks the TCP port,
// which may be taken on UDP: try a few times before giving up.
func listenPair(addr string) (net.Listener, net.PacketConn, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, nil, fmt.Errorf("https listen address %q: %w", addr, err)
	}
	for attempt := 0; ; attempt++ {
		tcp, err := net.Listen("tcp", addr)
		if err != nil {
			return nil, nil, fmt.Errorf("https listen tcp %s: %w", addr, err)
		}
		bound := net.JoinHostPort(host, strconv.Itoa(tcp.Addr().(*net.TCPAddr).Port))
		udp, err := net.ListenPacket("udp", bound)
		if err == nil {
			return tcp, udp, nil
		}
		tcp.Close()
		if port != "0" || attempt == 8 || !errors.Is(err, syscall.EADDRINUSE) {
			return nil, nil, fmt.Errorf("https listen udp %s: %w", bound, err)
		}
	}
}

func (s *HTTPSServer) serve(name string, serve func() error) {
	defer s.wg.Done()
	if err := serve(); err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, net.ErrClosed) {
		s.log.Error("https server stopped", zap.String("proto", name), zap.Error(err))
		s.mu.Lock()
		s.errs = append(s.errs, fmt.Errorf("serve %s: %w", name, err))
		s.mu.Unlock()
	}
}

// Close stops taking connections, lets requests in flight finish for up to ShutdownGrace, aborts the
// rest, closes both sockets and waits for the serving goroutines. It returns what went wrong in serving
// or stopping. Calling it again returns nil.
func (s *HTTPSServer) Close() error {
	var err error
	s.close.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), s.grace)
		defer cancel()
		var stop sync.WaitGroup
		var err2, err3 error
		stop.Go(func() { err2 = s.shutdown(ctx, "h2", s.h2.Shutdown, s.h2.Close) })
		stop.Go(func() { err3 = s.shutdown(ctx, "h3", s.h3.Shutdown, s.h3.Close) })
		stop.Wait()
		// http3.Server leaves the socket it was given to its owner.
		errUDP := s.udp.Close()
		s.wg.Wait()
		s.handler.Close()
		s.mu.Lock()
		defer s.mu.Unlock()
		err = errors.Join(append(s.errs, err2, err3, errUDP)...)
	})
	return err
}

// shutdown stops one server gracefully until ctx ends, then aborts what is left.
func (s *HTTPSServer) shutdown(ctx context.Context, name string, graceful func(context.Context) error, abort func() error) error {
	err := graceful(ctx)
	if err == nil {
		return nil
	}
	aerr := abort()
	if errors.Is(aerr, net.ErrClosed) {
		aerr = nil // the graceful stop closed the listener already: not news
	}
	if errors.Is(err, context.DeadlineExceeded) {
		s.log.Warn("requests still running after the grace period were aborted", zap.String("proto", name), zap.Duration("grace", s.grace))
		err = nil
	}
	if err = errors.Join(err, aerr); err != nil {
		return fmt.Errorf("shut down %s: %w", name, err)
	}
	return nil
}
