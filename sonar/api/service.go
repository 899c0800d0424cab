package api

import (
	"runtime"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/flowlens/flowlens/sonar/index"
)

// Journal makes reported claims durable before they are acknowledged (sonar/persist's Log). Append
// buffers the claims; Sync returns once everything appended is on disk.
type Journal interface {
	Append(claims []index.Claim) error
	Sync() error
}

// Option configures NewHTTP and NewGRPC.
type Option func(*service)

// WithMetrics counts lookups, reports and refused requests into m.
func WithMetrics(m *Metrics) Option { return func(s *service) { s.metrics = m } }

// WithJournal makes Report write claims to j and wait until they are durable before answering.
func WithJournal(j Journal) Option { return func(s *service) { s.journal = j } }

// WithClock sets the clock relative lookup times count from (default time.Now).
func WithClock(now func() time.Time) Option { return func(s *service) { s.now = now } }

// service is what the HTTP and gRPC front ends share.
type service struct {
	idx     *index.Index
	log     *zap.Logger
	metrics *Metrics
	journal Journal
	now     func() time.Time
}

func newService(idx *index.Index, log *zap.Logger, opts []Option) *service {
	s := &service{idx: idx, log: log, now: time.Now}
	for _, o := range opts {
		o(s)
	}
	if s.metrics == nil {
		s.metrics = NewMetrics(nil)
	}
	return s
}

// Metrics are the API's counters.
type Metrics struct {
	lookups  [3]prometheus.Counter // by index.Status
	claims   prometheus.Counter
	conflict prometheus.Counter
	refused  *prometheus.CounterVec
}

// NewMetrics registers the API's counters with reg (nil: not registered, for tests).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	lookups := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "flowlens_sonar_lookups_total",
		Help: "Lookups answered, by status (OWNER, UNKNOWN, CONFLICT)."}, []string{"status"})
	m := &Metrics{
		claims: prometheus.NewCounter(prometheus.CounterOpts{Name: "flowlens_sonar_claims_reported_total",
			Help: "Claims accepted through Report."}),
		conflict: prometheus.NewCounter(prometheus.CounterOpts{Name: "flowlens_sonar_claims_conflicting_total",
			Help: "Reported claims that overlapped a different owner (recorded as conflicts, never resolved)."}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "flowlens_sonar_requests_refused_total",
			Help: "API requests refused, by reason."}, []string{"reason"}),
	}
	for _, st := range []index.Status{index.Unknown, index.Owned, index.Conflict} {
		m.lookups[st] = lookups.WithLabelValues(st.String())
	}
	if reg != nil {
		reg.MustRegister(lookups, m.claims, m.conflict, m.refused)
	}
	return m
}

func (s *service) lookup(q query) index.Answer {
	a := s.idx.Lookup(q.ip, q.at)
	s.metrics.lookups[a.Status].Inc()
	return a
}

// lookupAll answers queries in order. A large batch is split over the cores: most of a lookup is
// waiting for memory, and the batch's latency is what a collector waits on.
func (s *service) lookupAll(queries []query) []index.Answer {
	answers := make([]index.Answer, len(queries))
	const chunk = 256
	parts := min(runtime.GOMAXPROCS(0), (len(queries)+chunk-1)/chunk)
	if parts <= 1 {
		for i, q := range queries {
			answers[i] = s.lookup(q)
		}
		return answers
	}
	var wg sync.WaitGroup
	per := (len(queries) + parts - 1) / parts
	for lo := 0; lo < len(queries); lo += per {
		hi := min(lo+per, len(queries))
		wg.Go(func() {
			for i := lo; i < hi; i++ {
				answers[i] = s.lookup(queries[i])
			}
		})
	}
	wg.Wait()
	return answers
}

// report adds claims, after the journal (if any) has made them durable. Claims go into the index
// first so that a snapshot taken after the journal rotates always holds what the old log held.
func (s *service) report(claims []index.Claim) (conflicts int, err error) {
	for _, c := range claims {
		if s.idx.Add(c) {
			conflicts++
		}
	}
	if s.journal != nil {
		if err := s.journal.Append(claims); err != nil {
			return 0, err
		}
		if err := s.journal.Sync(); err != nil {
			return 0, err
		}
	}
	s.metrics.claims.Add(float64(len(claims)))
	s.metrics.conflict.Add(float64(conflicts))
	return conflicts, nil
}
