// Package exporters is the collector's fleet view: which exporters send to it, over which transport
// and why they chose it, what they dropped and how far behind they are, and the collector's own ingest
// rates over the last minute. A Registry learns all of it from the batches ingest accepts (wrap the
// pipeline with Registry.Sink) and serves it as JSON (Registry.Mount) and as Prometheus metrics.
package exporters

import (
	"cmp"
	"context"
	"errors"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/flowlens/flowlens/collector/ingest"
	"github.com/flowlens/flowlens/internal/flow"
	flowv1 "github.com/flowlens/flowlens/proto/flowlens/flow/v1"
)

// Window is the span of the ingest rates, in one-second buckets.
const Window = 60

// Transports are the ingest transports, in the order rates are kept.
var Transports = [...]string{"grpc", "https", "udp"}

// Config bounds a Registry. Zero values take the defaults.
type Config struct {
	// MaxExporters is the most exporters remembered. Beyond it a new exporter is not tracked (its
	// batches still count in the rates) and flowlens_collector_exporters_overflow_total counts its
	// batches: the exporters already known keep their history. Default 10,000: an honest exporter takes
	// some 500 bytes, its drops map included (5 MB for all); one that fills every bound (32 drop reasons,
	// 256-byte names and identity fields) about 10 KB, so 100 MB at worst.
	MaxExporters int
	// ForgetAfter is how long an exporter unseen is remembered. Default 24h: a day's restarts of a
	// fleet (each run has a new exporter id) are still shown, and then make room.
	ForgetAfter time.Duration
	// StaleAfter is how long unseen makes an exporter stale (counted in exporters_stale). Default 3m:
	// exporters send interim records every flush interval (60s by default), so a quiet one still sends.
	StaleAfter time.Duration
	// Queue, when set, reads the pipeline's queue for /api/v1/ingest.
	Queue func() Queue
	// Now is the clock; default time.Now.
	Now func() time.Time
}

// Queue is the collector's pipeline, in records.
type Queue struct {
	Records  int // accepted, not yet committed
	Capacity int // the most Records may reach before ingest refuses batches
	Parked   int // waiting for the owner of their remote address
}

func (c Config) withDefaults() Config {
	if c.MaxExporters <= 0 {
		c.MaxExporters = 10_000
	}
	if c.ForgetAfter <= 0 {
		c.ForgetAfter = 24 * time.Hour
	}
	if c.StaleAfter <= 0 {
		c.StaleAfter = 3 * time.Minute
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

// sweepEvery bounds how often the registry walks its exporters to forget the ones unseen too long.
const sweepEvery = time.Minute

// Registry remembers what every exporter's batches said. Safe for concurrent use.
type Registry struct {
	cfg Config
	m   *metrics

	mu        sync.Mutex
	byID      map[string]*entry
	ring      [Window]bucket // per-second ingest counts, bucket sec%Window
	spare     bucket         // where counts too old for the ring go
	lastSweep time.Time
}

// entry is one exporter. Its status is the latest the exporter sent, kept as it came: a batch's status
// is its own allocation, so keeping it costs no copy.
type entry struct {
	id           string
	host         string
	workload     flow.Workload
	receivedOver string
	status       *flowv1.ExporterStatus
	firstSeen    int64 // Unix ns
	lastSeen     int64
	batches      uint64
	records      uint64
	lastSeq      uint64
	lost         uint64
	lag          int64 // receive - send, ns, of the latest batch
	exportLag    int64 // send - its oldest record's end, ns, of the latest batch with records
}

// bucket is one second of ingest.
type bucket struct {
	sec     int64 // Unix seconds it counts; a bucket of an older second is reset before use
	refused uint64
	by      [len(Transports)]struct{ batches, records, bytes uint64 }
}

// New makes a registry and registers its metrics on reg.
func New(cfg Config, reg prometheus.Registerer) (*Registry, error) {
	r := &Registry{cfg: cfg.withDefaults(), byID: make(map[string]*entry)}
	m, err := newMetrics(r, reg)
	if err != nil {
		return nil, err
	}
	r.m = m
	return r, nil
}

func transportIndex(name string) int {
	for i, t := range Transports {
		if t == name {
			return i
		}
	}
	return -1
}

// Sink returns an ingest.Sink that hands every batch to next and records in r each batch next accepted,
// and each it refused as full (ingest.ErrFull): backpressure. It also hears of the batches HTTPS ingest
// refuses before they reach a sink (ingest.Refuser).
func (r *Registry) Sink(next ingest.Sink) ingest.Sink { return &sink{next: next, r: r} }

type sink struct {
	next ingest.Sink
	r    *Registry
}

func (s *sink) Put(ctx context.Context, b *ingest.Batch) error {
	// Read before Put: once the pipeline has the batch, its records are the pipeline's.
	oldest := oldestEnd(b.Records)
	err := s.next.Put(ctx, b)
	switch {
	case err == nil:
		s.r.Observe(b, oldest)
	case errors.Is(err, ingest.ErrFull):
		s.r.Refused(b.Transport)
	}
	return err
}

func (s *sink) Refused(transport string) { s.r.Refused(transport) }

// oldestEnd is the earliest end time of records (Unix ns), or 0 if there are none.
func oldestEnd(records []flow.Record) int64 {
	var oldest int64
	for i := range records {
		if e := records[i].EndTime; e > 0 && (oldest == 0 || e < oldest) {
			oldest = e
		}
	}
	return oldest
}

// Observe records an accepted batch whose oldest record ended at oldestEnd (Unix ns; 0: none).
func (r *Registry) Observe(b *ingest.Batch, oldestEnd int64) {
	now := r.cfg.Now() // the rates count batches when accepted: a slow store must not backdate them
	at := b.ReceivedAt
	if at == 0 {
		at = now.UnixNano()
	}
	ti := transportIndex(b.Transport)
	r.mu.Lock()
	defer r.mu.Unlock()
	e := r.byID[b.ExporterID]
	if e == nil && len(b.ExporterID) <= maxStatusText {
		// An id beyond any honest exporter's is not tracked (counted as overflow): as a map key it
		// cannot be cut without merging exporters.
		e = r.add(b.ExporterID, at)
	}
	// The datagrams of one UDP batch share its sequence number: the batch counts once. On the acked
	// transports ingest hands every batch to the sink once, whatever its number.
	newBatch := e == nil || e.batches == 0 || b.Transport != "udp" || b.Seq != e.lastSeq
	if ti >= 0 {
		bk := r.bucket(now.Unix())
		if newBatch {
			bk.by[ti].batches++
		}
		bk.by[ti].records += uint64(len(b.Records))
		bk.by[ti].bytes += uint64(b.WireBytes)
		r.m.bytes[ti].Add(float64(b.WireBytes))
	}
	if e == nil {
		r.m.overflow.Inc()
		return
	}
	if newBatch {
		e.batches++
	}
	e.records += uint64(len(b.Records))
	e.lastSeq = b.Seq
	e.lastSeen = max(e.lastSeen, at)
	e.host, e.workload, e.receivedOver = short(b.Host), boundedWorkload(b.Workload), b.Transport
	if b.Status != nil {
		e.status = bounded(b.Status)
	}
	if b.Transport == "udp" {
		e.lost = b.LostDatagrams
	}
	if b.SendTime != 0 {
		e.lag = at - b.SendTime
		if oldestEnd != 0 {
			e.exportLag = b.SendTime - oldestEnd
		}
	}
}

// Bounds on what one exporter's batches may make the registry hold: an exporter counts a dozen drop
// reasons with names of some twenty bytes, so these are far beyond an honest one.
const (
	maxDropReasons = 32
	// bytes of a drop reason's name, of the transport and of its reason, of the host and of each
	// workload field; an exporter id longer than this is not tracked.
	maxStatusText = 256
)

// bounded is st, or a copy cut to the bounds when it exceeds them.
func bounded(st *flowv1.ExporterStatus) *flowv1.ExporterStatus {
	ok := len(st.Drops) <= maxDropReasons && len(st.Transport) <= maxStatusText && len(st.TransportReason) <= maxStatusText
	for k := range st.Drops {
		ok = ok && len(k) <= maxStatusText
	}
	if ok {
		return st
	}
	c := &flowv1.ExporterStatus{Transport: cut(st.Transport), TransportReason: cut(st.TransportReason),
		StartedAt: st.StartedAt, QueuedRecords: st.QueuedRecords, Drops: make(map[string]uint64, maxDropReasons)}
	for _, k := range slices.Sorted(maps.Keys(st.Drops)) {
		if len(c.Drops) == maxDropReasons {
			break
		}
		c.Drops[cut(k)] += st.Drops[k]
	}
	return c
}

// cut is s cut to at most maxStatusText bytes, at a character boundary: what protobuf handed us is valid
// UTF-8, and must stay so (a drop reason is a metric label, which the client library refuses otherwise).
// A copy, so the long original is not kept alive.
func cut(s string) string {
	n := min(len(s), maxStatusText)
	for n < len(s) && n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return strings.Clone(s[:n])
}

// short is s, or s cut to maxStatusText bytes (a copy: the long original is not kept alive) when longer.
func short(s string) string {
	if len(s) <= maxStatusText {
		return s
	}
	return cut(s)
}

// boundedWorkload is w with each field cut to maxStatusText bytes: the exporter's host and workload are
// kept per exporter like its status, and bounded like it.
func boundedWorkload(w flow.Workload) flow.Workload {
	return flow.Workload{Name: short(w.Name), Namespace: short(w.Namespace), Pod: short(w.Pod),
		PodUID: short(w.PodUID), Node: short(w.Node), Cluster: short(w.Cluster)}
}

// add starts tracking exporter id, first seen at (Unix ns), or returns nil when MaxExporters are
// tracked even after forgetting those unseen for ForgetAfter. r.mu is held.
func (r *Registry) add(id string, at int64) *entry {
	if len(r.byID) >= r.cfg.MaxExporters {
		r.sweep(false)
		if len(r.byID) >= r.cfg.MaxExporters {
			return nil
		}
	}
	e := &entry{id: id, firstSeen: at}
	r.byID[id] = e
	return e
}

// sweep forgets the exporters unseen for ForgetAfter, at most once per sweepEvery unless always. r.mu is
// held.
func (r *Registry) sweep(always bool) {
	now := r.cfg.Now()
	if !always && now.Sub(r.lastSweep) < sweepEvery {
		return
	}
	r.lastSweep = now
	horizon := now.Add(-r.cfg.ForgetAfter).UnixNano()
	for id, e := range r.byID {
		if e.lastSeen < horizon {
			delete(r.byID, id)
			r.m.forgotten.Inc()
		}
	}
}

// bucket is the ring's bucket of second sec, reset if it held an older second. r.mu is held.
func (r *Registry) bucket(sec int64) *bucket {
	bk := &r.ring[uint64(sec)%Window]
	switch {
	case bk.sec > sec: // a clock read a window before another's: too old to count, too old to reset for
		r.spare = bucket{}
		return &r.spare
	case bk.sec < sec:
		*bk = bucket{sec: sec}
	}
	return bk
}

// Refused counts a batch refused over transport because the collector was full: the exporter resends it.
func (r *Registry) Refused(transport string) {
	now := r.cfg.Now()
	if ti := transportIndex(transport); ti >= 0 {
		r.m.refused[ti].Inc()
	}
	r.mu.Lock()
	r.bucket(now.Unix()).refused++
	r.mu.Unlock()
}

// Exporter is one exporter as GET /api/v1/exporters shows it.
type Exporter struct {
	ID              string            `json:"id"`
	Host            string            `json:"host"`
	Workload        flow.Workload     `json:"workload"`
	ReceivedOver    string            `json:"received_over"`    // the transport its latest batch came over
	Transport       string            `json:"transport"`        // as the exporter reports it; "" if it never did
	TransportReason string            `json:"transport_reason"` // why the exporter chose it
	StartedAt       *time.Time        `json:"started_at"`       // null if the exporter never said
	FirstSeen       time.Time         `json:"first_seen"`
	LastSeen        time.Time         `json:"last_seen"`
	Batches         uint64            `json:"batches"`
	Records         uint64            `json:"records"`
	LostBatches     uint64            `json:"lost_batches"` // UDP datagrams never received
	Drops           map[string]uint64 `json:"drops"`        // cumulative, by stage/reason; never null
	QueuedRecords   uint64            `json:"queued_records"`
	LagMs           float64           `json:"lag_ms"`
	ExportLagMs     float64           `json:"export_lag_ms"`
}

// Exporters returns every exporter remembered, sorted by id.
func (r *Registry) Exporters() []Exporter {
	r.mu.Lock()
	r.sweep(true)
	out := make([]Exporter, 0, len(r.byID))
	for _, e := range r.byID {
		x := Exporter{ID: e.id, Host: e.host, Workload: e.workload, ReceivedOver: e.receivedOver,
			FirstSeen: time.Unix(0, e.firstSeen).UTC(), LastSeen: time.Unix(0, e.lastSeen).UTC(),
			Batches: e.batches, Records: e.records, LostBatches: e.lost, Drops: map[string]uint64{},
			LagMs: float64(e.lag) / 1e6, ExportLagMs: float64(e.exportLag) / 1e6}
		if s := e.status; s != nil {
			x.Transport, x.TransportReason, x.QueuedRecords = s.Transport, s.TransportReason, s.QueuedRecords
			if s.StartedAt != 0 {
				t := time.Unix(0, s.StartedAt).UTC()
				x.StartedAt = &t
			}
			for k, v := range s.Drops {
				x.Drops[k] = v
			}
		}
		out = append(out, x)
	}
	r.mu.Unlock()
	slices.SortFunc(out, func(a, b Exporter) int { return cmp.Compare(a.ID, b.ID) })
	return out
}

// Rate is one transport's ingest over the window, per second.
type Rate struct {
	BatchesPerSecond float64 `json:"batches_per_second"`
	RecordsPerSecond float64 `json:"records_per_second"`
	BytesPerSecond   float64 `json:"bytes_per_second"`
}

// Ingest is what GET /api/v1/ingest shows.
type Ingest struct {
	WindowSeconds    int             `json:"window_seconds"`
	BatchesPerSecond float64         `json:"batches_per_second"`
	RecordsPerSecond float64         `json:"records_per_second"`
	RefusedPerSecond float64         `json:"refused_per_second"`
	ByTransport      map[string]Rate `json:"by_transport"` // every transport, those unused at 0
	QueueRecords     int             `json:"queue_records"`
	QueueCapacity    int             `json:"queue_capacity"`
	ParkedRecords    int             `json:"parked_records"`
	Exporters        int             `json:"exporters"`
	ExportersStale   int             `json:"exporters_stale"`
}

// Ingest returns the ingest rates over the last Window seconds (this one included), the pipeline's
// queue and the number of exporters, and of those stale.
func (r *Registry) Ingest() Ingest {
	now := r.cfg.Now()
	out := Ingest{WindowSeconds: Window, ByTransport: make(map[string]Rate, len(Transports))}
	var batches, records, refused uint64
	var by [len(Transports)]struct{ batches, records, bytes uint64 }
	r.mu.Lock()
	r.sweep(true)
	sec := now.Unix()
	for i := range r.ring {
		bk := &r.ring[i]
		if bk.sec <= sec-Window || bk.sec > sec {
			continue
		}
		refused += bk.refused
		for t := range by {
			by[t].batches += bk.by[t].batches
			by[t].records += bk.by[t].records
			by[t].bytes += bk.by[t].bytes
		}
	}
	out.Exporters = len(r.byID)
	stale := now.Add(-r.cfg.StaleAfter).UnixNano()
	for _, e := range r.byID {
		if e.lastSeen < stale {
			out.ExportersStale++
		}
	}
	r.mu.Unlock()
	for t, name := range Transports {
		batches += by[t].batches
		records += by[t].records
		out.ByTransport[name] = Rate{BatchesPerSecond: float64(by[t].batches) / Window,
			RecordsPerSecond: float64(by[t].records) / Window, BytesPerSecond: float64(by[t].bytes) / Window}
	}
	out.BatchesPerSecond = float64(batches) / Window
	out.RecordsPerSecond = float64(records) / Window
	out.RefusedPerSecond = float64(refused) / Window
	if r.cfg.Queue != nil {
		q := r.cfg.Queue()
		out.QueueRecords, out.QueueCapacity, out.ParkedRecords = q.Records, q.Capacity, q.Parked
	}
	return out
}
