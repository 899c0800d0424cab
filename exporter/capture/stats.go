package capture

import (
	"fmt"
	"time"

	"github.com/flowlens/flowlens/bpf"
)

// Counters are the kernel side's counts, summed over CPUs.
type Counters struct {
	// Drops are records lost in the kernel, by reason: ringbuf_full (a final record), reset_notice_lost (a
	// late RST notice: its record stays NORMAL), recursion (a hook run the kernel skipped because another
	// program was running on that CPU: a missed open or close).
	Drops map[string]uint64
	// Untracked counts connections that found the flows map full: reported at close as preexisting.
	Untracked uint64
	// Retransmits counts retransmissions in scope.
	Retransmits uint64
}

// Counters reads the kernel's counters.
func (p *Probe) Counters() (Counters, error) {
	var c [bpf.FlowCounterCOUNTER_MAX]uint64
	for i := range c {
		var perCPU []uint64
		if err := p.objs.Counters.Lookup(uint32(i), &perCPU); err != nil {
			return Counters{}, fmt.Errorf("read counters map: %w", err)
		}
		for _, v := range perCPU {
			c[i] += v
		}
	}
	var recursion uint64
	for _, h := range hooks(&p.objs) {
		st, err := h.prog.Stats()
		if err != nil {
			return Counters{}, fmt.Errorf("program stats %s: %w", h.name, err)
		}
		recursion += st.RecursionMisses
	}
	return Counters{
		Drops: map[string]uint64{
			"ringbuf_full":      c[bpf.FlowCounterCOUNTER_RINGBUF_FULL],
			"reset_notice_lost": c[bpf.FlowCounterCOUNTER_RESET_LOST],
			"recursion":         recursion,
		},
		Untracked:   c[bpf.FlowCounterCOUNTER_UNTRACKED],
		Retransmits: c[bpf.FlowCounterCOUNTER_RETRANSMITS],
	}, nil
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
