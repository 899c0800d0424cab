package app

import (
	"context"
	"net/netip"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/flowlens/flowlens/collector/attribute"
	"github.com/flowlens/flowlens/sonar/client"
	"github.com/flowlens/flowlens/sonar/index"
)

// remoteIndex is the pipeline's index when a sonar service holds the fleet's ownership: this
// collector's own heartbeats answer first (they are in its local index at once), and an address they
// do not cover is asked of sonar. A failed call answers Unknown: the flow waits, never guessed.
type remoteIndex struct {
	*index.Index
	sonar *client.Lookuper
}

func (r remoteIndex) Lookup(ip netip.Addr, t int64) index.Answer {
	local := r.Index.Lookup(ip, t)
	if settled(local) {
		return local
	}
	// The local index answers otherwise only from its CIDR table, which the index consults last: sonar
	// may hold a heartbeat or a pod for the address, and those outrank a table entry, so the table is
	// the answer only when sonar has none.
	if a := r.sonar.Lookup(ip, t); a.Status != index.Unknown {
		return a
	}
	return local
}

// settled says a local answer needs no word from sonar: this collector's own heartbeats, or a
// conflict among them.
func settled(a index.Answer) bool {
	return a.Status == index.Conflict || a.Status == index.Owned && a.Range.Evidence == index.EvidenceHeartbeat
}

// LookupBatch is Lookup for many keys, asking sonar once for all those the local index cannot answer.
func (r remoteIndex) LookupBatch(keys []attribute.Key) []index.Answer {
	out := make([]index.Answer, len(keys))
	var ask []client.Query
	var at []int // positions in out of ask's queries
	for i, k := range keys {
		if out[i] = r.Index.Lookup(k.IP, k.At); settled(out[i]) {
			continue
		}
		ask = append(ask, client.Query{IP: k.IP, At: k.At})
		at = append(at, i)
	}
	for j, a := range r.sonar.LookupBatch(ask) {
		if a.Status != index.Unknown {
			out[at[j]] = a
		}
	}
	return out
}

// reporter sends this collector's heartbeats to sonar in the background: Share never blocks, claims
// wait in a bounded queue and go out in one Report per flush; what the queue cannot take is counted.
type reporter struct {
	c       *client.Client
	log     *zap.Logger
	queue   chan []index.Claim
	dropped prometheus.Counter
	failed  prometheus.Counter
}

func newReporter(c *client.Client, log *zap.Logger, reg prometheus.Registerer) *reporter {
	r := &reporter{c: c, log: log, queue: make(chan []index.Claim, 1024),
		dropped: prometheus.NewCounter(prometheus.CounterOpts{Name: "flowlens_collector_sonar_claims_dropped_total",
			Help: "Heartbeats not reported to sonar: its queue was full."}),
		failed: prometheus.NewCounter(prometheus.CounterOpts{Name: "flowlens_collector_sonar_report_errors_total",
			Help: "Reports to sonar that failed (their heartbeats are not resent: the next records claim again)."}),
	}
	reg.MustRegister(r.dropped, r.failed)
	return r
}

func (r *reporter) Share(claims []index.Claim) {
	select {
	case r.queue <- claims:
	default:
		r.dropped.Add(float64(len(claims)))
	}
}

// run reports every 100 ms until ctx ends, and then once more what is queued: the pipeline has stopped
// by then, and the last heartbeats are the ones sonar has not heard from anyone else.
func (r *reporter) run(ctx context.Context) {
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	var batch []index.Claim
	for {
		select {
		case <-ctx.Done():
			for drained := false; !drained; {
				select {
				case c := <-r.queue:
					batch = append(batch, c...)
				default:
					drained = true
				}
			}
			// ctx has ended: the last report gets its own short bound, so a sonar that is down does
			// not hold the collector's shutdown for long.
			fctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			r.report(fctx, batch)
			cancel()
			return
		case c := <-r.queue:
			batch = append(batch, c...)
			if len(batch) < 10_000 {
				continue
			}
		case <-t.C:
		}
		r.report(ctx, batch)
		batch = nil
	}
}

// report sends batch to sonar in Reports of at most its limit, each waiting at most 5 s within ctx.
func (r *reporter) report(ctx context.Context, batch []index.Claim) {
	for len(batch) > 0 {
		n := min(len(batch), 10_000) // sonar's limit per Report
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		if _, err := r.c.Report(rctx, batch[:n]); err != nil {
			r.failed.Inc()
			r.log.Warn("report heartbeats to sonar", zap.Error(err))
		}
		cancel()
		batch = batch[n:]
	}
}
