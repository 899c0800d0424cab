package capture

import (
	"fmt"
	"time"

	"github.com/flowlens/flowlens/bpf"
)

// DropReasons names the kernel-side drop counters, indexed as the drops map is.
var DropReasons = map[uint32]string{
	uint32(bpf.FlowDropReasonDROP_RINGBUF_FULL): "ringbuf_full",
	uint32(bpf.FlowDropReasonDROP_FLOWS_FULL):   "flows_map_full",
}

// Drops returns the kernel's drop counters, summed over CPUs, by reason.
func (p *Probe) Drops() (map[string]uint64, error) {
	out := make(map[string]uint64, len(DropReasons))
	for idx, name := range DropReasons {
		var perCPU []uint64
		if err := p.objs.Drops.Lookup(idx, &perCPU); err != nil {
			return nil, fmt.Errorf("read drops map: %w", err)
		}
		var sum uint64
		for _, v := range perCPU {
			sum += v
		}
		out[name] = sum
	}
	return out, nil
}

// ProgramStats is what the kernel measured of one program while BPF statistics were enabled.
type ProgramStats struct {
	Name    string
	Runs    uint64
	RunTime time.Duration
}

// NsPerRun is the mean kernel time of one run.
func (s ProgramStats) NsPerRun() float64 {
	if s.Runs == 0 {
		return 0
	}
	return float64(s.RunTime.Nanoseconds()) / float64(s.Runs)
}

// Stats returns the run counts and times of the attached programs. They count only while
// ebpf.EnableStats is in force (kernel.bpf_stats_enabled).
func (p *Probe) Stats() ([]ProgramStats, error) {
	var out []ProgramStats
	for _, h := range hooks(&p.objs) {
		st, err := h.prog.Stats()
		if err != nil {
			return nil, fmt.Errorf("program stats %s: %w", h.name, err)
		}
		out = append(out, ProgramStats{Name: h.name, Runs: st.RunCount, RunTime: st.Runtime})
	}
	return out, nil
}

// FlowsInMap counts the live connections the kernel is tracking (a full walk: for tests and diagnostics).
func (p *Probe) FlowsInMap() (int, error) {
	var (
		k  uint64
		v  bpf.FlowSockInfo
		n  int
		it = p.objs.Flows.Iterate()
	)
	for it.Next(&k, &v) {
		n++
	}
	return n, it.Err()
}
