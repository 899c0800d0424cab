// Package agent runs flow-exporter: capture, flow table, a bounded queue and the output, with the
// metrics endpoint, and shuts them down in order.
package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"

	"github.com/flowlens/flowlens/exporter/capture"
	"github.com/flowlens/flowlens/exporter/config"
	"github.com/flowlens/flowlens/exporter/flowtable"
	"github.com/flowlens/flowlens/exporter/hostid"
	"github.com/flowlens/flowlens/exporter/metrics"
	"github.com/flowlens/flowlens/exporter/podid"
	"github.com/flowlens/flowlens/internal/flow"
	"github.com/flowlens/flowlens/internal/output"
)

const (
	// maxBatch is the most records handed to the output at once: one hand-off (a goroutine wake-up) per
	// batch rather than per record.
	maxBatch = 256
	// freeBatches written batches are kept for reuse: enough to recycle in steady state, few enough that
	// a burst's batches go back to the heap.
	freeBatches = 4
	// drainTimeout bounds how long shutdown waits for the output to take what is queued (a stalled stdout
	// must not hang the exporter); what it abandons is counted.
	drainTimeout = 5 * time.Second
	// podSyncTimeout bounds how long Start waits for the node's pod list (DaemonSet mode) before it
	// captures: records of pods it lacks are named with what is known, and counted.
	podSyncTimeout = 15 * time.Second
)

// Registry is where the agent registers its metrics and what its /metrics endpoint serves.
type Registry interface {
	prometheus.Registerer
	prometheus.Gatherer
}

// namer names a record's local workload when one exporter speaks for many: *hostid.Namer (host scope)
// and *podid.Namer (host scope on a Kubernetes node).
type namer interface {
	Workload(*flow.Record) flow.Workload
}

// Agent is a running exporter. Start it with Start; it runs until its context ends, then Wait returns.
type Agent struct {
	cfg     config.Config
	log     *zap.Logger
	probe   *capture.Probe
	metrics *metrics.Metrics
	sink    output.Sink
	http    *http.Server
	// namer names each record's local workload in host scope when no workload name is configured: there
	// one exporter speaks for every process of the machine. pods is set when it names pods.
	namer namer
	pods  *podid.Namer

	// The queue to the output is bounded in records, not batches: queued counts the records in it, the
	// reader adds before handing a batch over and the writer subtracts after writing one.
	queue  chan []flow.Record
	queued atomic.Int64
	free   chan []flow.Record // written batches, back for reuse

	stopping atomic.Bool // set once the final snapshot is in the ring buffer: the reader drains, then ends
	done     chan struct{}
	err      error // set before done is closed
}

// Start checks the machine, loads and attaches the programs and starts the goroutines. The agent stops
// when ctx ends; Wait returns after the last record reached sink, or was counted as dropped.
func Start(ctx context.Context, cfg config.Config, log *zap.Logger, m *metrics.Metrics, reg Registry, sink output.Sink) (*Agent, error) {
	if err := capture.Preflight(""); err != nil {
		return nil, err
	}
	var names namer
	var pods *podid.Namer
	if cfg.Scope == "host" && cfg.Workload.Name == "" {
		own, err := capture.NetnsInode("")
		if err != nil {
			return nil, err
		}
		names = hostid.New(cfg.Workload, own)
		if cfg.Kubernetes {
			if pods, err = startPods(ctx, cfg, own, names, reg, log); err != nil {
				return nil, err
			}
			names = pods
		}
	}
	var netns uint32
	if cfg.Scope == "netns" {
		ino, err := capture.NetnsInode(cfg.Netns)
		if err != nil {
			return nil, err
		}
		netns = ino
	}
	probe, err := capture.Open(capture.Options{
		Netns:           netns,
		MaxConnections:  cfg.MaxConnections,
		RingBufferBytes: cfg.RingBufferBytes,
	}, log)
	if err != nil {
		if pods != nil {
			pods.Stop()
		}
		return nil, err
	}
	m.SetKernel(probe.Counters)
	// The shipper reports the kernel's drops in each batch's status, for the collector's fleet view.
	if ks, ok := sink.(interface {
		SetKernelDrops(func() (map[string]uint64, error))
	}); ok {
		ks.SetKernelDrops(func() (map[string]uint64, error) {
			c, err := probe.Counters()
			return c.Drops, err
		})
	}
	a := &Agent{
		cfg:     cfg,
		log:     log,
		probe:   probe,
		metrics: m,
		sink:    sink,
		// Room for the worst case of one-record batches: the record budget, not the channel, binds.
		queue: make(chan []flow.Record, cfg.QueueRecords),
		free:  make(chan []flow.Record, freeBatches),
		done:  make(chan struct{}),
		namer: names,
		pods:  pods,
	}
	if cfg.MetricsAddr != "" {
		if err := a.serveMetrics(reg); err != nil {
			probe.Close()
			if pods != nil {
				pods.Stop()
			}
			return nil, err
		}
	}
	go a.run(ctx)
	log.Info("flow-exporter running", zap.String("scope", cfg.Scope), zap.Uint32("netns", netns),
		zap.Duration("flush_interval", cfg.FlushInterval), zap.String("output", cfg.Output))
	return a, nil
}

// startPods starts DaemonSet mode's pod namer and waits, boundedly, for the node's pod list: the
// records read right after the start would otherwise find no pods.
func startPods(ctx context.Context, cfg config.Config, hostNetns uint32, host namer, reg Registry, log *zap.Logger) (*podid.Namer, error) {
	client, err := podid.NewClient(cfg.Kubeconfig)
	if err != nil {
		return nil, err
	}
	pods, err := podid.New(client, podid.Config{Node: cfg.Workload.Node, Cluster: cfg.Workload.Cluster, HostNetns: hostNetns},
		host, reg, log.With(zap.String("component", "podid")))
	if err != nil {
		return nil, err
	}
	pods.Start(ctx)
	wctx, cancel := context.WithTimeout(ctx, podSyncTimeout)
	defer cancel()
	if !pods.WaitSynced(wctx) {
		log.Warn("the node's pods are not listed yet: until they are, records are named by cgroup pod UID or as on a host",
			zap.String("node", cfg.Workload.Node), zap.Duration("waited", podSyncTimeout))
	}
	return pods, nil
}

func (a *Agent) serveMetrics(gatherer prometheus.Gatherer) error {
	ln, err := net.Listen("tcp", a.cfg.MetricsAddr)
	if err != nil {
		return fmt.Errorf("metrics listener: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(gatherer, promhttp.HandlerOpts{}))
	mux.HandleFunc("/debug/pprof/", pprof.Index) // profiles, on the same (loopback by default) listener
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	a.http = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := a.http.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			a.log.Error("metrics server", zap.Error(err))
		}
	}()
	return nil
}

// Wait blocks until the agent has stopped. It may be called any number of times.
func (a *Agent) Wait() error {
	<-a.done
	return a.err
}

func (a *Agent) run(ctx context.Context) {
	var reader sync.WaitGroup
	reader.Add(1)
	go func() { defer reader.Done(); a.read() }()
	writerDone := make(chan struct{})
	go func() { defer close(writerDone); a.write() }()

	a.snapshotLoop(ctx)

	// Shutdown, sources first: detach so no new events arrive, report every open connection as an
	// interim record, let the reader drain the ring buffer and flush the table, then the output.
	a.probe.Detach()
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	err := a.snapshot(sctx)
	cancel()
	a.stopping.Store(true)
	reader.Wait()
	select {
	case <-writerDone:
	case <-time.After(drainTimeout):
		left := a.queued.Load()
		a.metrics.Drops.WithLabelValues("output", "shutdown_timeout").Add(float64(left))
		a.log.Error("output did not drain in time; abandoning queued records", zap.Int64("records", left))
	}
	if a.http != nil {
		hctx, hcancel := context.WithTimeout(context.Background(), 2*time.Second)
		_ = a.http.Shutdown(hctx)
		hcancel()
	}
	a.probe.Close()
	if a.pods != nil {
		a.pods.Stop()
	}
	a.log.Info("flow-exporter stopped")
	a.err = err
	close(a.done)
}

func (a *Agent) snapshotLoop(ctx context.Context) {
	t := time.NewTicker(a.cfg.FlushInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := a.snapshot(ctx); err != nil && ctx.Err() == nil {
				a.log.Error("snapshot", zap.Error(err))
			}
		}
	}
}

// snapshot runs one interim-record round and counts it.
func (a *Agent) snapshot(ctx context.Context) error {
	err := a.probe.Snapshot(ctx)
	outcome := "ok"
	if err != nil {
		outcome = "failed"
	}
	a.metrics.Snapshots.WithLabelValues(outcome).Inc()
	return err
}

// kindNames labels the event kinds, indexed by capture.Kind (decode accepts no other values).
var kindNames = [...]string{capture.KindClose: "close", capture.KindActive: "active", capture.KindResetSent: "reset_sent"}

// read owns the flow table. It ends once stopping was set before a read that found the ring buffer
// empty, then closes the queue.
func (a *Agent) read() {
	defer close(a.queue)
	queueFull := a.metrics.Drops.WithLabelValues("queue", "full")
	decodeErr := a.metrics.Drops.WithLabelValues("reader", "decode")
	// Arrays indexed by the small enums: the per-record path does no map lookups.
	var emitted [flow.CloseTimeout + 1]prometheus.Counter
	for c := range emitted {
		emitted[c] = a.metrics.Records.WithLabelValues(flow.Close(c).String())
	}
	var events [len(kindNames)]prometheus.Counter
	for k, n := range kindNames {
		if n != "" {
			events[k] = a.metrics.EventsRead.WithLabelValues(n)
		}
	}

	newBatch := func() []flow.Record {
		select {
		case b := <-a.free:
			return b[:0]
		default:
			return make([]flow.Record, 0, min(maxBatch, a.cfg.QueueRecords))
		}
	}
	batch := newBatch()
	// send hands the batch to the output, or drops and counts it whole when the queue's record budget
	// cannot take it: the reader never blocks, or the kernel would drop instead.
	send := func() {
		if len(batch) == 0 {
			return
		}
		if a.queued.Add(int64(len(batch))) > int64(a.cfg.QueueRecords) {
			a.queued.Add(-int64(len(batch)))
			queueFull.Add(float64(len(batch)))
			batch = batch[:0]
			return
		}
		for i := range batch {
			emitted[batch[i].Close].Inc()
		}
		a.queue <- batch // never blocks: the channel has room for QueueRecords batches
		batch = newBatch()
	}
	table := flowtable.New(a.cfg.CloseGrace, func(r *flow.Record) {
		batch = append(batch, *r)
		if a.namer != nil {
			batch[len(batch)-1].LocalWorkload = a.namer.Workload(r)
		} else {
			batch[len(batch)-1].LocalWorkload = a.cfg.Workload
		}
		if len(batch) == cap(batch) {
			send()
		}
	})
	var lastStats flowtable.Stats
	lateResets := func() {
		st := table.Stats()
		a.metrics.LateResets.WithLabelValues("true").Add(float64(st.Matched - lastStats.Matched))
		a.metrics.LateResets.WithLabelValues("false").Add(float64(st.Unmatched - lastStats.Unmatched))
		lastStats = st
	}
	finish := func() {
		table.Flush()
		send()
		lateResets()
	}

	// The deadline is set once per poll cycle, not per record: while records keep coming, Read returns
	// them whatever the deadline, and the cycle ends at the first read that finds the buffer empty.
	tick := a.cfg.CloseGrace / 2
	a.probe.SetDeadline(time.Now().Add(tick))
	var (
		ev   capture.Event
		now  time.Time
		seen uint
	)
	for {
		// Read the flag before the read: an empty buffer proves the final snapshot drained only if the
		// snapshot was complete before the read began.
		stop := a.stopping.Load()
		err := a.probe.Read(&ev)
		// The clock is read every 64 records, not every record (it was a fifth of the reader's CPU): grace
		// deadlines are 200 ms, and 64 records arrive within a millisecond under load.
		if err != nil || seen%64 == 0 {
			now = time.Now()
		}
		seen++
		switch {
		case err == nil:
			events[ev.Kind].Inc()
			table.Add(&ev, now)
		case capture.IsTimeout(err):
			if stop {
				finish()
				return
			}
			a.probe.SetDeadline(now.Add(tick))
		case errors.Is(err, capture.ErrClosed):
			finish()
			return
		default:
			decodeErr.Inc()
			a.log.Warn("bad ring buffer record", zap.Error(err))
		}
		table.Expire(now)
		if err != nil {
			send() // the ring buffer is empty: what is batched goes now rather than wait for more
			lateResets()
		}
	}
}

func (a *Agent) write() {
	sinkErr := a.metrics.Drops.WithLabelValues("output", "error")
	for batch := range a.queue {
		for i := range batch {
			if err := a.sink.Write(&batch[i]); err != nil {
				sinkErr.Inc()
				a.log.Warn("output", zap.Error(err))
			}
		}
		a.queued.Add(-int64(len(batch)))
		if len(a.queue) == 0 {
			if err := a.sink.Flush(); err != nil {
				a.log.Warn("output flush", zap.Error(err))
			}
		}
		select {
		case a.free <- batch:
		default:
		}
	}
	if err := a.sink.Flush(); err != nil {
		a.log.Warn("output flush", zap.Error(err))
	}
}
