package shipper

import (
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	flowv1 "github.com/flowlens/flowlens/proto/flowlens/flow/v1"
)

// kernelEvery is how often the kernel's drop counters are read for the status: reading them costs a few
// syscalls, and a second of staleness does not matter to a fleet view.
const kernelEvery = time.Second

// status fills what each batch says of the exporter (FlowBatch.status) as the batch leaves: when the
// shipper started, every drop counted so far and the backlog behind the batch. The selector adds the
// transport and why it chose it. Its methods run on the sending goroutine only.
type status struct {
	started int64                  // Unix ns
	drops   *prometheus.CounterVec // the exporter's drops family: every user-space drop, by stage and reason
	buf     interface{ Len() (batches, records int) }

	kernelRead atomic.Pointer[func() (map[string]uint64, error)]
	kernel     map[string]uint64 // the latest kernel drops read, by reason
	kernelAt   time.Time
}

// stamp writes the status into b.
func (st *status) stamp(b *flowv1.FlowBatch) {
	if b.Status == nil {
		b.Status = &flowv1.ExporterStatus{}
	}
	s := b.Status
	s.StartedAt = st.started
	if s.Drops == nil {
		s.Drops = map[string]uint64{}
	}
	clear(s.Drops)
	st.addDrops(s.Drops)
	_, queued := st.buf.Len() // b itself is in flight in the buffer: the backlog is what is behind it
	s.QueuedRecords = uint64(max(queued-len(b.Records), 0))
}

// addDrops adds every nonzero drop counted so far to into, by "stage/reason".
func (st *status) addDrops(into map[string]uint64) {
	ch := make(chan prometheus.Metric, 16)
	go func() { st.drops.Collect(ch); close(ch) }()
	var m dto.Metric
	for c := range ch {
		m.Reset()
		if c.Write(&m) != nil || m.GetCounter().GetValue() == 0 {
			continue
		}
		var stage, reason string
		for _, l := range m.GetLabel() {
			switch l.GetName() {
			case "stage":
				stage = l.GetValue()
			case "reason":
				reason = l.GetValue()
			}
		}
		into[stage+"/"+reason] += uint64(m.GetCounter().GetValue())
	}
	if read := st.kernelRead.Load(); read != nil {
		if now := time.Now(); now.Sub(st.kernelAt) >= kernelEvery {
			// On an error (the probe closed at shutdown) the last counts read stand: they only rise.
			if k, err := (*read)(); err == nil {
				st.kernel, st.kernelAt = k, now
			}
		}
	}
	for reason, n := range st.kernel {
		if n > 0 {
			into["kernel/"+reason] += n
		}
	}
}
