package ingest

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/flowlens/flowlens/internal/udpwire"
	flowv1 "github.com/flowlens/flowlens/proto/flowlens/flow/v1"
)

const (
	// seqWindow is how far below an exporter's highest datagram a late one is still placed: it is then
	// taken off the lost count (or dropped as a replay if it came before). Further back it is stale.
	seqWindow = 1024
	// maxUDPExporters bounds the exporters whose sequence numbers are tracked, at about 200 bytes each
	// (the 128-byte window, the entry, the map and list links): 100,000 take some 20 MB.
	maxUDPExporters = 100_000
	// udpReadBuffer is each socket's kernel receive queue. 4 MiB holds some 1,800 datagrams of 1,400
	// bytes (the kernel charges about 2.3 KiB each), a pause of several milliseconds at full rate.
	udpReadBuffer = 4 << 20
)

// UDPServer receives datagrams on several SO_REUSEPORT sockets bound to one address, among which the
// kernel spreads exporters by their address and port, with one reader goroutine per socket. Each datagram
// is checked (udpwire), placed in its exporter's sequence to count what was lost, and stored without
// de-duplication: UDP is at most once. Close stops it.
type UDPServer struct {
	conns  []*net.UDPConn
	codec  *udpwire.Codec
	h      *Handler
	log    *zap.Logger
	bufs   sync.Pool // *[]byte of udpwire.MaxDatagram+1: a longer datagram shows as too large, not cut
	seqs   *seqTracker
	m      udpMetrics
	ctx    context.Context // ends at Close, so a sink blocked in Put lets go
	cancel context.CancelFunc
	wg     sync.WaitGroup
	once   sync.Once
}

type udpMetrics struct {
	datagrams prometheus.Counter     // accepted and placed in sequence
	dropped   *prometheus.CounterVec // by reason
	lost      prometheus.Counter     // sequence numbers skipped
	late      prometheus.Counter     // skipped ones that came after all, reordered
}

func newUDPMetrics(reg prometheus.Registerer) (udpMetrics, error) {
	m := udpMetrics{
		datagrams: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "flowlens_collector_udp_datagrams_total", Help: "UDP datagrams accepted.",
		}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flowlens_collector_udp_dropped_total",
			Help: "UDP datagrams dropped, by reason: short, bad_magic, bad_hmac, too_large, malformed (udpwire), " +
				"duplicate (a replay inside the window), stale (older than the window), store (the sink failed).",
		}, []string{"reason"}),
		lost: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "flowlens_collector_udp_lost_datagrams_total",
			Help: "UDP datagram sequence numbers skipped. Counters only rise: those that turn up late are counted in " +
				"flowlens_collector_udp_late_datagrams_total, so the net loss is the difference.",
		}),
		late: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "flowlens_collector_udp_late_datagrams_total",
			Help: "UDP datagrams that arrived after a later one, already counted lost and now taken back.",
		}),
	}
	for i, c := range []prometheus.Collector{m.datagrams, m.dropped, m.lost, m.late} {
		if err := reg.Register(c); err != nil {
			for _, r := range []prometheus.Collector{m.datagrams, m.dropped, m.lost, m.late}[:i] {
				reg.Unregister(r)
			}
			return m, fmt.Errorf("register udp ingest metrics: %w", err)
		}
	}
	return m, nil
}

// ListenUDP opens sockets UDP sockets on addr (host:port; port 0 picks one, shared by all) and starts
// their readers, which verify datagrams with key and store through h. It counts on reg. The caller
// closes the UDPServer.
func ListenUDP(addr string, sockets int, key []byte, h *Handler, reg prometheus.Registerer, log *zap.Logger) (*UDPServer, error) {
	if sockets < 1 {
		return nil, fmt.Errorf("udp listener on %s: %d sockets, want at least 1", addr, sockets)
	}
	s, err := newUDPServer(key, h, reg, log)
	if err != nil {
		return nil, err
	}
	lc := net.ListenConfig{Control: controlUDP}
	for i := range sockets {
		pc, err := lc.ListenPacket(s.ctx, "udp", addr)
		if err != nil {
			s.Close()
			return nil, fmt.Errorf("udp socket %d on %s: %w", i, addr, err)
		}
		c := pc.(*net.UDPConn)
		s.conns = append(s.conns, c)
		addr = c.LocalAddr().String() // the port the first socket got, for the others to share
	}
	for _, c := range s.conns {
		s.wg.Add(1)
		go s.read(c)
	}
	s.log.Info("udp ingest listening", zap.String("addr", addr), zap.Int("sockets", sockets))
	return s, nil
}

// newUDPServer is a server without sockets: ListenUDP adds them, benchmarks call handle directly.
func newUDPServer(key []byte, h *Handler, reg prometheus.Registerer, log *zap.Logger) (*UDPServer, error) {
	codec, err := udpwire.NewCodec(key)
	if err != nil {
		return nil, err
	}
	m, err := newUDPMetrics(reg)
	if err != nil {
		codec.Close()
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &UDPServer{codec: codec, h: h, log: log.With(zap.String("component", "udp-ingest")),
		seqs: newSeqTracker(maxUDPExporters), m: m, ctx: ctx, cancel: cancel}
	s.bufs.New = func() any { b := make([]byte, udpwire.MaxDatagram+1); return &b }
	return s, nil
}

// controlUDP sets SO_REUSEPORT, so that several sockets share the address, and a large receive queue.
// SO_RCVBUFFORCE passes net.core.rmem_max but needs CAP_NET_ADMIN; without it SO_RCVBUF gets what the
// limit allows.
func controlUDP(_, _ string, rc syscall.RawConn) error {
	var err error
	cerr := rc.Control(func(fd uintptr) {
		if err = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1); err != nil {
			err = fmt.Errorf("set SO_REUSEPORT: %w", err)
			return
		}
		if unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, udpReadBuffer) != nil {
			_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, udpReadBuffer) // best effort
		}
	})
	return errors.Join(cerr, err)
}

// Addr is the address the sockets are bound to.
func (s *UDPServer) Addr() net.Addr { return s.conns[0].LocalAddr() }

// read serves one socket until it is closed.
func (s *UDPServer) read(c *net.UDPConn) {
	defer s.wg.Done()
	for {
		bp := s.bufs.Get().(*[]byte)
		n, from, err := c.ReadFromUDPAddrPort(*bp)
		if err != nil {
			s.bufs.Put(bp)
			if errors.Is(err, net.ErrClosed) {
				return
			}
			s.log.Warn("read udp datagram", zap.Error(err))
			continue
		}
		s.handle((*bp)[:n], from)
		s.bufs.Put(bp) // the batch was copied out of it by the decoder
	}
}

// handle checks, places and stores one datagram.
func (s *UDPServer) handle(d []byte, from netip.AddrPort) {
	var b flowv1.FlowBatch
	seq, err := s.codec.Decode(d, &b)
	if err != nil {
		s.m.dropped.WithLabelValues(udpwire.Reason(err)).Inc()
		s.log.Debug("udp datagram dropped", zap.Stringer("from", from), zap.Error(err))
		return
	}
	v, lost, missing := s.seqs.see(b.ExporterId, seq, b.SendTime)
	if lost > 0 {
		s.m.lost.Add(float64(lost))
	}
	switch v {
	case seqDuplicate, seqStale:
		s.m.dropped.WithLabelValues(v.String()).Inc()
		s.log.Debug("udp datagram dropped", zap.Stringer("from", from), zap.String("exporter", b.ExporterId),
			zap.Uint64("datagram", seq), zap.Stringer("reason", v))
		return
	case seqLate:
		s.m.late.Inc()
	case seqRestart:
		s.log.Info("udp exporter restarted its sequence", zap.String("exporter", b.ExporterId), zap.Uint64("datagram", seq))
	}
	s.m.datagrams.Inc()
	a := Arrival{Transport: "udp", Bytes: len(d), At: time.Now(), LostDatagrams: missing}
	if _, err := s.h.Store(s.ctx, a, &b); err != nil {
		s.m.dropped.WithLabelValues("store").Inc()
		s.log.Warn("store udp batch", zap.String("exporter", b.ExporterId), zap.Uint64("datagram", seq), zap.Error(err))
	}
}

// Lost is how many of exporterID's datagrams are missing: sequence numbers skipped and not arrived since.
// An exporter not seen, or forgotten as the least recent of too many, has 0.
func (s *UDPServer) Lost(exporterID string) uint64 { return s.seqs.get(exporterID).lost }

// Received is how many of exporterID's datagrams were accepted (before the sink, which may still fail).
func (s *UDPServer) Received(exporterID string) uint64 { return s.seqs.get(exporterID).received }

// Close stops the readers, waits for them, and releases the sockets. It may be called more than once.
func (s *UDPServer) Close() error {
	var err error
	s.once.Do(func() {
		s.cancel()
		for _, c := range s.conns {
			err = errors.Join(err, c.Close())
		}
		s.wg.Wait()
		s.codec.Close()
	})
	return err
}

// seqVerdict says where a datagram falls in its exporter's sequence.
type seqVerdict uint8

const (
	seqNext      seqVerdict = iota // above the highest so far: accepted; any numbers skipped are lost
	seqLate                        // a skipped number arriving after all: accepted, and no longer lost
	seqEarly                       // below where tracking began, inside the window: accepted, never counted lost
	seqDuplicate                   // seen before: a replay, dropped
	seqStale                       // below the window: cannot be told from a replay, dropped (it stays lost)
	seqRestart                     // the exporter started over at 1: accepted, and tracked anew
)

func (v seqVerdict) String() string {
	return [...]string{"next", "late", "early", "duplicate", "stale", "restart"}[v]
}

// seqTracker counts, per exporter, the datagrams received and the sequence numbers skipped. Safe for
// concurrent use.
type seqTracker struct {
	mu    sync.Mutex
	limit int
	byID  map[string]*list.Element // of *exporterSeqs
	lru   list.List                // most recently seen at the front
}

// exporterSeqs is one exporter's place in its sequence.
type exporterSeqs struct {
	id       string
	high     uint64                 // highest sequence number accepted
	floor    uint64                 // numbers up to floor predate tracking: never counted lost
	newest   int64                  // latest send_time accepted: tells a restarted exporter from a replay
	bits     [seqWindow / 64]uint64 // bit n%seqWindow: n in (high-seqWindow, high] arrived
	received uint64
	lost     uint64
}

func newSeqTracker(limit int) *seqTracker {
	return &seqTracker{limit: limit, byID: make(map[string]*list.Element)}
}

// see places datagram seq, sent at sendTime, of exporter id, and returns where it fell, how many
// sequence numbers it newly showed to be lost, and how many of the exporter's are missing now.
//
// Sequence numbers restart at 1 when an exporter restarts. A low number (within the first window) at or
// below the highest, with a send_time later than any seen, is therefore a restart, not a replay (a
// replay carries its original, authenticated send_time) nor a late datagram (sent before the highest, so
// not later): it starts the exporter over, its counts kept. This takes an exporter's send_time to rise
// with its sequence numbers; a wall clock stepped back while datagrams are reordered can fool it.
func (t *seqTracker) see(id string, seq uint64, sendTime int64) (seqVerdict, uint64, uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	v, lost, e := t.place(id, seq, sendTime)
	return v, lost, e.lost
}

func (t *seqTracker) place(id string, seq uint64, sendTime int64) (seqVerdict, uint64, *exporterSeqs) {
	var e *exporterSeqs
	if el := t.byID[id]; el != nil {
		t.lru.MoveToFront(el)
		e = el.Value.(*exporterSeqs)
	} else {
		if len(t.byID) >= t.limit {
			delete(t.byID, t.lru.Remove(t.lru.Back()).(*exporterSeqs).id)
		}
		e = &exporterSeqs{id: id}
		t.byID[id] = t.lru.PushFront(e)
		return seqNext, e.start(seq, sendTime), e
	}
	switch {
	case seq > e.high:
		lost := seq - e.high - 1
		for n := e.high + 1; n < seq && n-e.high <= seqWindow; n++ {
			e.clear(n) // the numbers skipped, and what slides out of the window
		}
		e.high, e.lost = seq, e.lost+lost
		e.accept(seq, sendTime)
		return seqNext, lost, e
	case seq <= seqWindow && sendTime > e.newest:
		return seqRestart, e.start(seq, sendTime), e
	case e.high-seq >= seqWindow:
		return seqStale, 0, e
	case e.has(seq):
		return seqDuplicate, 0, e
	}
	e.accept(seq, sendTime)
	if seq <= e.floor {
		return seqEarly, 0, e
	}
	e.lost--
	return seqLate, 0, e
}

// start begins tracking at seq. An exporter's numbers start at 1, so a first seq within the window is
// taken as its start and the numbers before it as lost; a higher one means it ran before this collector
// (or this tracker forgot it), and what came before is not this collector's to count.
func (e *exporterSeqs) start(seq uint64, sendTime int64) uint64 {
	e.high, e.floor, e.bits = seq, 0, [seqWindow / 64]uint64{}
	lost := seq - 1
	if seq > seqWindow {
		e.floor, lost = seq-1, 0
	}
	e.lost += lost
	e.accept(seq, sendTime)
	return lost
}

func (e *exporterSeqs) accept(seq uint64, sendTime int64) {
	e.bits[(seq%seqWindow)/64] |= 1 << (seq % 64)
	e.received++
	e.newest = max(e.newest, sendTime)
}

func (e *exporterSeqs) clear(seq uint64) { e.bits[(seq%seqWindow)/64] &^= 1 << (seq % 64) }

func (e *exporterSeqs) has(seq uint64) bool { return e.bits[(seq%seqWindow)/64]&(1<<(seq%64)) != 0 }

// get is a copy of id's counts; zero if id is not tracked.
func (t *seqTracker) get(id string) exporterSeqs {
	t.mu.Lock()
	defer t.mu.Unlock()
	if el := t.byID[id]; el != nil {
		return *el.Value.(*exporterSeqs)
	}
	return exporterSeqs{}
}
