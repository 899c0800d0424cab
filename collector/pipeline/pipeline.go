// Package pipeline turns ingested batches into attributed, stored and published flows.
//
//	ingest ──Put──▶ heartbeats into the index ─▶ attribute ─▶ write queue ─▶ writer: publish, commit ─▶ ack
//	                                                │ (no owner yet)                     ▲
//	                                                └──▶ parked (durable, in the store) ─┘ retried until the deadline
//
// Put returns only once its batch is durable: the writer commits it to the store in one transaction
// (group commit: the batches waiting are written together), after publishing its decided flows to the
// configured streams. Records whose remote address has no owner yet are written to the store's pending
// table in the same transaction and parked in memory; a retry loop looks them up again and, when they are
// decided or their deadline passes, stores them as flows and deletes them from pending in one transaction.
// A restarted collector reloads what is parked from the store.
//
// Every queue is bounded: the write queue in records (beyond it Put answers ingest.ErrFull, which the
// exporter sees as RETRY or 429 and resends later), the parked records in records (beyond it a record is
// decided at once, counted). Nothing waits without a bound.
package pipeline

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/flowlens/flowlens/collector/attribute"
	"github.com/flowlens/flowlens/collector/ingest"
	"github.com/flowlens/flowlens/collector/store"
	"github.com/flowlens/flowlens/internal/flow"
	"github.com/flowlens/flowlens/sonar/index"
)

// Index is the ownership index the pipeline feeds and asks: in process, *index.Index.
type Index interface {
	attribute.Lookuper
	Add(index.Claim) bool
}

// Store makes writes durable: *store.Store.
type Store interface {
	Write(ctx context.Context, w store.Write) error
}

// Publisher sends decided flows to a stream (NATS JetStream, Kafka). Publish returns once the stream
// holds them.
type Publisher interface {
	Publish(ctx context.Context, flows []flow.Enriched) error
}

// Sharer passes heartbeats to the other replicas (the JetStream ownership stream). Share must not block.
type Sharer interface {
	Share(claims []index.Claim)
}

// Config sizes the pipeline. Zero values take the defaults.
type Config struct {
	// Deadline is how long a record whose remote address has no owner waits for one: two exporter flush
	// intervals, so a heartbeat sent by the remote's exporter in its next flush has arrived. Default 2m
	// (exporters flush every 60s by default).
	Deadline time.Duration
	// Retry is how often parked records are looked up again. Default 250ms.
	Retry time.Duration
	// QueueRecords bounds the records accepted and not yet committed; Put answers ErrFull past it.
	// Default 131072: at ~4 µs per stored record, half a second of writing.
	QueueRecords int
	// ParkedRecords bounds the records waiting for an owner. Default 1M (~400 MiB at worst, records
	// with long workload names; ~250 B typical).
	ParkedRecords int
	// WriteRecords caps the records one commit takes. Default 32768.
	WriteRecords int
}

func (c Config) withDefaults() Config {
	if c.Deadline == 0 {
		c.Deadline = 2 * time.Minute
	}
	if c.Retry == 0 {
		c.Retry = 250 * time.Millisecond
	}
	if c.QueueRecords == 0 {
		c.QueueRecords = 128 << 10
	}
	if c.ParkedRecords == 0 {
		c.ParkedRecords = 1 << 20
	}
	if c.WriteRecords == 0 {
		c.WriteRecords = 32 << 10
	}
	return c
}

// ErrStopped is returned by Put once the pipeline has stopped.
var ErrStopped = errors.New("pipeline stopped")

// Pipeline is the collector's path from ingest to the store. It implements ingest.Sink.
type Pipeline struct {
	cfg   Config
	idx   Index
	store Store
	pubs  []Publisher
	share Sharer
	log   *zap.Logger
	m     *metrics
	now   func() time.Time

	reqs   chan *request // ingest writes; the record budget, not the channel, bounds them
	queued atomic.Int64  // records in reqs and in the writer, not yet committed
	peak   atomic.Int64  // the most records ever queued at once
	kick   chan struct{} // a write with heartbeats committed: parked records may be decided now
	stop   chan struct{} // closed when Run's context ends: Put refuses from then on
	done   chan struct{} // closed when Run has returned

	// Run drains reqs until every Put that may still send to it has sent or given up: a request sent
	// after the last drain would never be answered, and its Put would wait forever.
	sendMu  sync.Mutex
	stopped bool           // set with stop closed, under sendMu: no sender is added after it
	senders sync.WaitGroup // Puts between their stop check and their send

	// lastN numbers pending records. A record's index in its batch does not name it: the datagrams of
	// one UDP batch share its sequence number, each numbering its records from 0, and the store deletes a
	// resolved record by key, so a shared key would delete the other datagram's row too and lose it at
	// the next restart. Numbers run on from the highest restored one, so they stay unique per
	// (exporter, seq) for as long as 2^32 records take to park.
	lastN atomic.Uint32

	mu       sync.Mutex
	parked   []store.Pending
	deciding int // records decide took out of parked and is looking up, without the lock
}

type request struct {
	w    store.Write
	n    int        // records
	done chan error // buffered: the writer never blocks on it
}

// New builds a pipeline. pubs and share may be nil.
func New(cfg Config, idx Index, st Store, pubs []Publisher, share Sharer, log *zap.Logger, reg prometheus.Registerer) *Pipeline {
	p := &Pipeline{cfg: cfg.withDefaults(), idx: idx, store: st, pubs: pubs, share: share,
		log: log.With(zap.String("component", "pipeline")), now: time.Now,
		stop: make(chan struct{}), done: make(chan struct{}), kick: make(chan struct{}, 1)}
	p.reqs = make(chan *request, 4096)
	p.m = newMetrics(reg, p)
	return p
}

// Restore parks records a previous run left pending in the store. Call it before Run.
func (p *Pipeline) Restore(pending []store.Pending) {
	p.mu.Lock()
	p.parked = append(p.parked, pending...)
	p.mu.Unlock()
	p.m.parkedIn.Add(float64(len(pending))) // they leave through parkedOut too: in - out is what is parked
	for _, pd := range pending {
		if pd.Key.N > p.lastN.Load() {
			p.lastN.Store(pd.Key.N)
		}
		if c, ok := attribute.Heartbeat(&pd.Flow.Record); ok {
			p.idx.Add(c) // their own heartbeats were fed before the restart, into the index that was lost
		}
	}
}

// Put attributes, stores and publishes one batch, and returns once it is durable, or ErrFull when the
// pipeline has no room (nothing of the batch was taken), or the error that kept it from being stored.
func (p *Pipeline) Put(ctx context.Context, b *ingest.Batch) error {
	select {
	case <-p.stop:
		return ErrStopped
	default:
	}
	n := len(b.Records)
	// A batch larger than the whole budget is still taken when nothing else is queued: it is bounded by
	// ingest's message size, and refusing it would refuse it forever.
	after := p.queued.Add(int64(n))
	if after > int64(p.cfg.QueueRecords) && after > int64(n) {
		p.queued.Add(-int64(n))
		p.m.rejected.Add(float64(n))
		return ingest.ErrFull
	}
	p.notePeak(after)
	req := &request{w: p.prepare(b), n: n, done: make(chan error, 1)}
	if !p.enterSend() {
		p.queued.Add(-int64(n))
		return ErrStopped
	}
	select {
	case p.reqs <- req:
		p.senders.Done()
	case <-p.stop:
		p.senders.Done()
		p.queued.Add(-int64(n))
		return ErrStopped
	case <-ctx.Done():
		p.senders.Done()
		p.queued.Add(-int64(n))
		return ctx.Err()
	}
	// Once sent, the batch is answered only with its write's outcome, even if ctx ends first: returning
	// early would release the batch's dedup claim while the writer may still commit it, and the resend
	// would then be stored a second time (a final record is appended, not merged). The wait is bounded:
	// every write has its own timeout, and Run answers every request sent before it returns.
	return <-req.done
}

// enterSend registers a Put about to send to reqs, or reports false once Run has stopped taking them.
func (p *Pipeline) enterSend() bool {
	p.sendMu.Lock()
	defer p.sendMu.Unlock()
	if p.stopped {
		return false
	}
	p.senders.Add(1)
	return true
}

// prepare feeds b's heartbeats to the index and attributes its records: decided ones become flows, the
// rest pending.
func (p *Pipeline) prepare(b *ingest.Batch) store.Write {
	claims := make([]index.Claim, 0, len(b.Records))
	for i := range b.Records {
		if c, ok := attribute.Heartbeat(&b.Records[i]); ok {
			claims = append(claims, c)
		}
	}
	p.m.heartbeats.Add(float64(len(claims)))
	claims = attribute.Coalesce(claims)
	for _, c := range claims {
		if p.idx.Add(c) {
			p.m.conflicts.Inc()
		}
	}
	if p.share != nil && len(claims) > 0 {
		p.share.Share(claims)
	}
	w := store.Write{Batches: []store.BatchKey{{ExporterID: b.ExporterID, Seq: b.Seq}}}
	deadline := p.now().Add(p.cfg.Deadline).UnixNano()
	room := p.cfg.ParkedRecords - p.parkedLen()
	// With a remote sonar, one call for the batch instead of one per record.
	pre := attribute.Prefetch(p.idx, len(b.Records), func(i int) *flow.Record { return &b.Records[i] })
	for i, r := range b.Records {
		e := flow.Enriched{Record: r, ExporterID: b.ExporterID}
		a := attribute.AnswerFor(p.idx, pre, i, &e.Record)
		switch {
		case attribute.Apply(&e, a, false):
		case len(w.Pending) < room:
			w.Pending = append(w.Pending, store.Pending{Key: store.PendingKey{ExporterID: b.ExporterID, Seq: b.Seq, N: p.lastN.Add(1)}, Flow: e, Deadline: deadline})
			continue
		default:
			// No room to wait: decide now (UNATTRIBUTED unless a pod event answers), and count it.
			attribute.Apply(&e, a, true)
			p.m.early.Inc()
		}
		w.Flows = append(w.Flows, e)
	}
	return w
}

func (p *Pipeline) parkedLen() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.parked) + p.deciding
}

// Run writes until ctx ends, then stops taking batches, commits what was queued and returns.
// Records still parked stay in the store's pending table for the next run.
func (p *Pipeline) Run(ctx context.Context) {
	defer close(p.done)
	// Unbuffered: a retry request is sent only when this loop takes it, and it writes and answers it
	// before it looks at ctx again. With a buffer the retry loop could hand over a request this loop
	// never takes, and wait for its answer while Run waits for the retry loop: a deadlock at shutdown.
	retry := make(chan *request)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); p.retryLoop(ctx, retry) }()
	for {
		select {
		case <-ctx.Done():
			p.sendMu.Lock()
			p.stopped = true
			close(p.stop)
			p.sendMu.Unlock()
			wg.Wait()
			p.drain()
			return
		case r := <-retry:
			p.write([]*request{r})
		case r := <-p.reqs:
			p.write(p.gather(r))
		}
	}
}

// gather takes r and whatever else is queued, up to WriteRecords, for one commit.
func (p *Pipeline) gather(r *request) []*request {
	batch, n := []*request{r}, r.n
	for n < p.cfg.WriteRecords {
		select {
		case r := <-p.reqs:
			batch, n = append(batch, r), n+r.n
		default:
			return batch
		}
	}
	return batch
}

// drain commits the requests queued before the stop, and those of the Puts still sending.
func (p *Pipeline) drain() {
	sent := make(chan struct{})
	go func() { p.senders.Wait(); close(sent) }()
	for {
		select {
		case r := <-p.reqs:
			p.write(p.gather(r))
		case <-sent:
			for {
				select {
				case r := <-p.reqs:
					p.write(p.gather(r))
				default:
					return
				}
			}
		}
	}
}

// write publishes and commits reqs as one transaction, parks their pending records, and answers them.
func (p *Pipeline) write(reqs []*request) {
	var w store.Write
	n := 0
	for _, r := range reqs {
		w.Flows = append(w.Flows, r.w.Flows...)
		w.Pending = append(w.Pending, r.w.Pending...)
		w.Resolved = append(w.Resolved, r.w.Resolved...)
		w.Batches = append(w.Batches, r.w.Batches...)
		n += r.n
	}
	// A shutdown must not cut a commit in half-way: the writes get their own bounded time.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := p.commit(ctx, w)
	if err == nil {
		now := p.now()
		p.mu.Lock()
		p.parked = append(p.parked, w.Pending...)
		p.mu.Unlock()
		p.m.parkedIn.Add(float64(len(w.Pending)))
		if len(w.Batches) > 0 {
			select {
			case p.kick <- struct{}{}:
			default:
			}
		}
		for i := range w.Flows {
			f := &w.Flows[i]
			p.m.attributed[min(int(f.Attribution), len(p.m.attributed)-1)].Inc()
			if f.Close != flow.CloseActive && f.EndTime > 0 {
				p.m.latency.Observe(now.Sub(time.Unix(0, f.EndTime)).Seconds())
			}
		}
	} else {
		p.log.Error("store write", zap.Int("records", len(w.Flows)+len(w.Pending)), zap.Error(err))
	}
	p.queued.Add(-int64(n))
	for _, r := range reqs {
		r.done <- err
	}
}

func (p *Pipeline) commit(ctx context.Context, w store.Write) error {
	if len(w.Flows) > 0 {
		for _, pub := range p.pubs {
			if err := pub.Publish(ctx, w.Flows); err != nil {
				p.m.publishErrors.Inc()
				return fmt.Errorf("publish: %w", err)
			}
		}
	}
	start := p.now()
	err := p.store.Write(ctx, w)
	p.m.writeSeconds.Observe(p.now().Sub(start).Seconds())
	return err
}

// retryLoop looks parked records up again every Retry, and sends the decided ones to the writer: one
// request at a time, so a record is never in two writes.
func (p *Pipeline) retryLoop(ctx context.Context, out chan<- *request) {
	t := time.NewTicker(p.cfg.Retry)
	defer t.Stop()
	var last time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-p.kick:
			// New heartbeats were committed: look again now rather than at the next tick, but not more
			// often than ten times a Retry, so a busy collector does not rescan a long list per commit.
			if wait := p.cfg.Retry/10 - time.Since(last); wait > 0 {
				select {
				case <-ctx.Done():
					return
				case <-time.After(wait):
				}
			}
		}
		last = time.Now()
		if !p.hand(ctx, out, p.decide()) {
			return
		}
	}
}

// hand passes decided records to the writer in writes of at most WriteRecords, like ingest batches
// are gathered: a deadline can decide every parked record at once (after a restart, up to
// ParkedRecords), and one write of them all would copy them all and publish and commit them within a
// single write's timeout, failing and being retried whole for as long as it cannot. A failed write
// puts what is left back (it is still pending in the store): the next round tries again. It returns
// false when ctx ended.
func (p *Pipeline) hand(ctx context.Context, out chan<- *request, decided []store.Pending) bool {
	for len(decided) > 0 {
		n := min(len(decided), p.cfg.WriteRecords)
		r := &request{done: make(chan error, 1)}
		for _, pd := range decided[:n] {
			r.w.Flows = append(r.w.Flows, pd.Flow)
			r.w.Resolved = append(r.w.Resolved, pd.Key)
		}
		select {
		case out <- r:
		case <-ctx.Done():
			p.unpark(decided)
			return false
		}
		if err := <-r.done; err != nil {
			p.unpark(decided)
			return true
		}
		p.m.parkedOut.Add(float64(n))
		decided = decided[n:]
	}
	return true
}

// decide takes out of the parked list the records that now have an owner or reached their deadline.
// The lookups run without the lock: with a remote sonar each is a network call, and Put (which asks
// how many are parked) must not wait for a whole pass of them.
func (p *Pipeline) decide() []store.Pending {
	now := p.now().UnixNano()
	p.mu.Lock()
	list := p.parked
	p.parked, p.deciding = nil, len(list)
	p.mu.Unlock()
	var decided []store.Pending
	pre := attribute.Prefetch(p.idx, len(list), func(i int) *flow.Record { return &list[i].Flow.Record })
	keep := list[:0]
	for i, pd := range list {
		if attribute.Apply(&pd.Flow, attribute.AnswerFor(p.idx, pre, i, &pd.Flow.Record), now >= pd.Deadline) {
			decided = append(decided, pd)
		} else {
			keep = append(keep, pd)
		}
	}
	clear(list[len(keep):])
	p.mu.Lock()
	p.parked = append(keep, p.parked...) // those parked meanwhile go after
	p.deciding = 0
	p.mu.Unlock()
	return decided
}

func (p *Pipeline) unpark(pds []store.Pending) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, pd := range pds {
		pd.Flow.RemoteWorkload, pd.Flow.Attribution = flow.Workload{}, flow.AttributionNone
		p.parked = append(p.parked, pd)
	}
}

// Done is closed when Run has returned.
func (p *Pipeline) Done() <-chan struct{} { return p.done }

func (p *Pipeline) notePeak(n int64) {
	for {
		old := p.peak.Load()
		if n <= old || p.peak.CompareAndSwap(old, n) {
			return
		}
	}
}

// Stats are the pipeline's queue depths.
type Stats struct {
	Queued, Parked int
	PeakQueued     int // the most records ever queued at once
}

// Stats returns the records queued for writing and parked.
func (p *Pipeline) Stats() Stats {
	return Stats{Queued: int(p.queued.Load()), Parked: p.parkedLen(), PeakQueued: int(p.peak.Load())}
}
