// Package ownership shares the ownership index between collector replicas (and sonar replicas) through a
// NATS JetStream stream. Each replica publishes the claims it learns (every flow record is a heartbeat
// for its local address) on its own subject, and every replica applies the whole stream, its own
// messages included, to its local index. Claims are idempotent in the index (the same owner's ranges
// merge), so replaying the stream after a restart, or applying one's own claims twice, changes nothing.
//
//	stream FLOWLENS_OWNERSHIP, subjects flowlens.ownership.<replica>
//	payload flowlens.sonar.v1.ReportRequest: OwnershipRange messages (ip, start, end, owner, evidence, last_seen)
//
// A replica that starts later replays the stream from now - MaxAge (the stream's retention, and the
// index's own horizon) and so learns every range its peers hold. Sharing is best effort by design: a
// claim that cannot be published is dropped and counted, never waited for, since the next record of the
// same connection or workload claims the address again within an exporter flush interval.
package ownership

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/flowlens/flowlens/collector/fleet"
	"github.com/flowlens/flowlens/internal/flow"
	"github.com/flowlens/flowlens/sonar/index"
)

// Schema names the payload in the fleet.SchemaHeader header of every message.
const Schema = "flowlens.sonar.v1.ReportRequest"

// Config says where claims go and how they are batched. Zero values take the defaults.
type Config struct {
	// Replica names this replica (the pod name): the last token of its subject. Required.
	Replica string `mapstructure:"replica"`
	// Stream defaults: FLOWLENS_OWNERSHIP, subjects flowlens.ownership.<replica>, no size cap, and
	// MaxAge 24h, which is also how far back Run replays: the index's default MaxAge, so older ranges
	// would be expired from the index anyway.
	fleet.StreamSettings `mapstructure:",squash"`
	// FlushInterval is how often buffered claims are published. Default 100ms: it is most of the
	// propagation delay, and at 10 messages/s per replica the stream stays cheap.
	FlushInterval time.Duration `mapstructure:"flush_interval"`
	// MaxPending bounds the ranges buffered between flushes; past it claims are dropped and counted
	// (reason buffer_full). A full buffer also flushes at once. Default 16384 (about 2 MiB).
	MaxPending int `mapstructure:"max_pending"`
	// MaxMessageBytes bounds one message. Default 256 KiB (about 2,500 ranges).
	MaxMessageBytes int `mapstructure:"max_message_bytes"`
	// PublishTimeout bounds the publishing of one message. Default 5s.
	PublishTimeout time.Duration `mapstructure:"publish_timeout"`
}

func (c Config) withDefaults() Config {
	c.StreamSettings = c.StreamSettings.WithDefaults("FLOWLENS_OWNERSHIP", "flowlens.ownership")
	if c.FlushInterval == 0 {
		c.FlushInterval = 100 * time.Millisecond
	}
	if c.MaxPending == 0 {
		c.MaxPending = 16384
	}
	if c.MaxMessageBytes == 0 {
		c.MaxMessageBytes = 256 << 10
	}
	if c.PublishTimeout == 0 {
		c.PublishTimeout = 5 * time.Second
	}
	return c
}

// Validate says what is wrong with c.
func (c Config) Validate() error {
	c = c.withDefaults()
	var errs []error
	if c.Replica == "" {
		errs = append(errs, errors.New("ownership: replica is required"))
	}
	if c.MaxAge < 0 || c.FlushInterval < 0 || c.PublishTimeout < 0 {
		errs = append(errs, errors.New("ownership: durations must not be negative"))
	}
	if c.MaxPending < 1 || c.MaxMessageBytes < 1024 {
		errs = append(errs, errors.New("ownership: max_pending >= 1 and max_message_bytes >= 1024 required"))
	}
	return errors.Join(errs...)
}

// StreamConfig is the stream Run creates, from c with its defaults.
func (c Config) StreamConfig() jetstream.StreamConfig {
	c = c.withDefaults()
	return c.StreamSettings.Config("flowlens ownership claims: flowlens.sonar.v1.ReportRequest per message")
}

// Sharer publishes this replica's claims and applies everyone's to the local index.
type Sharer struct {
	js      jetstream.JetStream
	cfg     Config
	subject string
	idx     *index.Index
	log     *zap.Logger
	m       metrics

	mu      sync.Mutex
	pending map[key][]index.Claim // coalesced claims waiting for the next flush
	n       int                   // ranges in pending
	kick    chan struct{}         // a full buffer asks for a flush now

	synced     chan struct{}
	syncedOnce sync.Once
	bad        atomic.Int64 // bad messages seen, for log sampling
	afterApply func()       // benchmarks: called after each message is applied; nil otherwise
}

type key struct {
	ip    netip.Addr
	owner flow.Workload
	ev    index.Evidence
}

// New returns a sharer for idx on js (see fleet.Connect). It does not touch the network: Run does.
func New(js jetstream.JetStream, cfg Config, idx *index.Index, log *zap.Logger, reg prometheus.Registerer) (*Sharer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	m, err := newMetrics(reg)
	if err != nil {
		return nil, err
	}
	return &Sharer{js: js, cfg: cfg, subject: cfg.SubjectPrefix + "." + fleet.Token(cfg.Replica), idx: idx,
		log: log.With(zap.String("component", "ownership")), m: m,
		pending: make(map[key][]index.Claim), kick: make(chan struct{}, 1), synced: make(chan struct{})}, nil
}

// Share queues claims for publishing and returns at once. Claims of the same address, owner and
// evidence that overlap or touch coalesce into one range (interim records of one connection, and
// concurrent connections, do). Claims with a gap between them stay apart: the receiving index merges
// them itself across its MergeGap unless it knows another owner in the gap, which a range covering the
// gap would turn into a conflict there. When the buffer is full the
// claims that do not fit are dropped and counted (reason buffer_full); invalid claims too (reason
// invalid). Run publishes what is queued every FlushInterval.
func (s *Sharer) Share(claims []index.Claim) {
	var invalid, full int
	s.mu.Lock()
	for i := range claims {
		c := claims[i]
		if !valid(&c) {
			invalid++
			continue
		}
		c.IP = c.IP.Unmap()
		if c.Seen == 0 {
			c.Seen = c.End
		}
		k := key{c.IP, c.Owner, c.Evidence}
		if s.coalesce(k, &c) {
			continue
		}
		if s.n >= s.cfg.MaxPending {
			full++
			continue
		}
		s.pending[k] = append(s.pending[k], c)
		s.n++
	}
	isFull := s.n >= s.cfg.MaxPending
	s.mu.Unlock()

	s.m.shared.Add(float64(len(claims)))
	if invalid > 0 {
		s.m.dropped.WithLabelValues("invalid").Add(float64(invalid))
	}
	if full > 0 {
		s.m.dropped.WithLabelValues("buffer_full").Add(float64(full))
	}
	if isFull {
		select {
		case s.kick <- struct{}{}:
		default:
		}
	}
}

// coalesce merges c into a buffered range of the same key that it overlaps or touches. It looks at the
// latest eight only: claims come roughly in time order, and a busy address must not cost a scan of
// hundreds per claim (one it misses only makes the message longer). s.mu is held.
func (s *Sharer) coalesce(k key, c *index.Claim) bool {
	list := s.pending[k]
	for i := len(list) - 1; i >= 0 && i >= len(list)-8; i-- {
		p := &list[i]
		if c.Start <= p.End && p.Start <= c.End {
			p.Start, p.End, p.Seen = min(p.Start, c.Start), max(p.End, c.End), max(p.Seen, c.Seen)
			return true
		}
	}
	return false
}

// Synced is closed once Run has applied every message the stream held when its consumer started: from
// then on the local index knows every range its peers had shared.
func (s *Sharer) Synced() <-chan struct{} { return s.synced }

// Run creates the stream (retrying until the server answers), then publishes queued claims every
// FlushInterval and applies the whole stream to the index, until ctx is done. At the end it publishes
// what is still queued, within PublishTimeout, so close the NATS connection only after Run returns. A
// server that goes away is waited for; the consumer resumes where it was. Run returns nil when ctx
// ends, and an error only if the consumer cannot be started on a stream that exists.
func (s *Sharer) Run(ctx context.Context) error {
	if err := s.retry(ctx, "create stream "+s.cfg.Stream, func() error {
		_, err := s.js.CreateOrUpdateStream(ctx, s.cfg.StreamConfig())
		return err
	}); err != nil {
		return nil // ctx ended first: a normal stop, the last error is logged
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		s.flushLoop(ctx)
	}()
	err := s.consume(ctx)
	wg.Wait()
	return err
}

// retry calls f until it succeeds or ctx ends (then it returns ctx's error), backing off from 250 ms
// to 5 s.
func (s *Sharer) retry(ctx context.Context, what string, f func() error) error {
	wait := 250 * time.Millisecond
	for {
		err := f()
		if err == nil {
			return nil
		}
		s.log.Warn("ownership stream: retrying", zap.String("what", what), zap.Duration("in", wait), zap.Error(err))
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: %w", what, errors.Join(ctx.Err(), err))
		case <-time.After(wait):
		}
		wait = min(2*wait, 5*time.Second)
	}
}

func (s *Sharer) flushLoop(ctx context.Context) {
	t := time.NewTicker(s.cfg.FlushInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			// The last claims still go out, with a context of their own.
			fctx, cancel := context.WithTimeout(context.Background(), s.cfg.PublishTimeout)
			s.flush(fctx)
			cancel()
			return
		case <-t.C:
		case <-s.kick:
		}
		s.flush(ctx)
	}
}

// flush publishes everything queued. A message that fails loses its ranges (counted, reason
// publish_error): the claims will be made again by later records.
func (s *Sharer) flush(ctx context.Context) {
	s.mu.Lock()
	if s.n == 0 {
		s.mu.Unlock()
		return
	}
	claims := make([]index.Claim, 0, s.n)
	for _, l := range s.pending {
		claims = append(claims, l...)
	}
	s.pending, s.n = make(map[key][]index.Claim, len(s.pending)), 0
	s.mu.Unlock()

	for _, msg := range Encode(claims, s.cfg.MaxMessageBytes) {
		n := msg.Ranges
		pctx, cancel := context.WithTimeout(ctx, s.cfg.PublishTimeout)
		_, err := s.js.PublishMsg(pctx, &nats.Msg{Subject: s.subject, Data: msg.Data, Header: nats.Header{fleet.SchemaHeader: []string{Schema}}}, jetstream.WithExpectStream(s.cfg.Stream))
		cancel()
		if err != nil {
			s.m.dropped.WithLabelValues("publish_error").Add(float64(n))
			s.log.Warn("ownership claims not published", zap.Int("ranges", n), zap.Error(err))
			continue
		}
		s.m.published.Add(float64(n))
		s.m.messages.Inc()
	}
}

func (s *Sharer) consume(ctx context.Context) error {
	var cons jetstream.Consumer
	if err := s.retry(ctx, "ownership consumer", func() error {
		start := time.Now().Add(-s.cfg.MaxAge)
		var err error
		cons, err = s.js.OrderedConsumer(ctx, s.cfg.Stream, jetstream.OrderedConsumerConfig{
			FilterSubjects: []string{s.cfg.SubjectPrefix + ".>"},
			DeliverPolicy:  jetstream.DeliverByStartTimePolicy,
			OptStartTime:   &start,
		})
		return err
	}); err != nil {
		return nil
	}
	cc, err := cons.Consume(s.apply, jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
		s.log.Warn("ownership consumer", zap.Error(err))
	}))
	if err != nil {
		return fmt.Errorf("consume %s: %w", s.cfg.Stream, err)
	}
	defer cc.Stop()
	// An empty stream (or one whose messages are all older than the window) delivers nothing: ask the
	// server whether anything is pending until the first answer says no or a message says so.
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-s.synced:
			t.Stop()
		case <-t.C:
			if info, err := cons.Info(ctx); err == nil && info.NumPending == 0 && info.Delivered.Consumer == 0 {
				s.m.lag.Set(0)
				s.markSynced()
			}
		}
	}
}

// apply is the consumer's handler: it decodes one message and adds its claims to the index. Bad
// messages are counted and skipped.
func (s *Sharer) apply(msg jetstream.Msg) {
	meta, err := msg.Metadata()
	if err == nil {
		s.m.lag.Set(float64(meta.NumPending))
	}
	claims, derr := Decode(msg.Data())
	if derr != nil {
		s.m.received.WithLabelValues("bad").Inc()
		// Logged at the 1st, 2nd, 4th, 8th... so a flood of junk cannot flood the log.
		if n := s.bad.Add(1); n&(n-1) == 0 {
			s.log.Warn("bad ownership message skipped", zap.String("subject", msg.Subject()), zap.Int64("bad_so_far", n), zap.Error(derr))
		}
	} else {
		s.m.received.WithLabelValues("ok").Inc()
		conflicts := 0
		for _, c := range claims {
			if s.idx.Add(c) {
				conflicts++
			}
		}
		s.m.applied.Add(float64(len(claims)))
		s.m.conflicts.Add(float64(conflicts))
		if s.afterApply != nil {
			s.afterApply()
		}
	}
	if err == nil && meta.NumPending == 0 {
		s.markSynced()
	}
}

func (s *Sharer) markSynced() {
	s.syncedOnce.Do(func() {
		close(s.synced)
		s.log.Info("ownership stream replayed")
	})
}
