package sim

import (
	"fmt"
	"io"
	"slices"
	"text/tabwriter"
	"time"

	"github.com/flowlens/flowlens/internal/flow"
)

// Counts splits flows, or dependency edges, by outcome. A flow to an address nobody held is correct
// when left unattributed and misattributed when given an owner.
type Counts struct{ Correct, Misattributed, Unattributed int }

// Total is the number counted.
func (c Counts) Total() int { return c.Correct + c.Misattributed + c.Unattributed }

// Result is one strategy's score on a trace.
type Result struct {
	Strategy string
	Flows    Counts
	// Edges compares the distinct (caller workload, callee workload) pairs the arrived records truly
	// show with the pairs the strategy attributed: an attributed pair that is not a true one is
	// misattributed, a true pair never attributed is unattributed.
	Edges Counts
	// ByEvidence counts flows by how they were decided, and MisattributedBy the misattributed ones,
	// indexed by flow.Attribution.
	ByEvidence, MisattributedBy [flow.AttributionUnattributed + 1]int
	// Latency is from a record's arrival to its decision: quantiles 0.5, 0.9, 0.99 and 1.
	Latency [4]time.Duration
	// Misattributions lists the first few misattributed flows, for diagnosis.
	Misattributions []Misattribution
}

// Misattribution is one misattributed flow.
type Misattribution struct {
	Record            flow.Record
	Truth, Got        flow.Workload
	Evidence          flow.Attribution
	Arrival, Decision int64
}

// Report is the benchmark's outcome: the config, what the trace held, and each strategy's score.
type Report struct {
	Config  Config
	Trace   TraceStats
	Results []Result
}

// Run generates the trace cfg describes and scores the three strategies on it.
func Run(cfg Config) (*Report, error) {
	t, err := Generate(cfg)
	if err != nil {
		return nil, err
	}
	return Score(t, cfg), nil
}

const maxExamples = 5

// Score replays t through the three strategies, with cfg's collector side (merge gap, deadline, event
// margin), and scores each against the ground truth.
func Score(t *Trace, cfg Config) *Report {
	o := newOwners()
	recs, truth, arrivals, out := replay(t, cfg, o)
	rep := &Report{Config: cfg, Trace: t.Stats}
	type edge struct{ caller, callee string }
	key := func(w flow.Workload) string { return w.Namespace + "/" + w.Name }
	edgeOf := func(r *flow.Record, remote flow.Workload) edge {
		if r.Role == flow.RoleServer {
			return edge{key(remote), key(r.LocalWorkload)}
		}
		return edge{key(r.LocalWorkload), key(remote)}
	}
	trueEdges := map[edge]bool{}
	for i := range recs {
		if truth[i] != 0 {
			trueEdges[edgeOf(&recs[i], o.all[truth[i]])] = true
		}
	}
	for si, name := range Strategies {
		res := Result{Strategy: name}
		got := map[edge]bool{}
		lat := make([]int64, len(recs))
		for i, d := range out[si] {
			lat[i] = d.at - arrivals[i]
			res.ByEvidence[min(d.evidence, flow.AttributionUnattributed)]++
			attributed := d.owner != 0
			switch {
			case d.owner == truth[i]:
				res.Flows.Correct++
			case attributed:
				res.Flows.Misattributed++
				res.MisattributedBy[min(d.evidence, flow.AttributionUnattributed)]++
				if len(res.Misattributions) < maxExamples {
					res.Misattributions = append(res.Misattributions, Misattribution{
						Record: recs[i], Truth: o.all[truth[i]], Got: o.all[d.owner], Evidence: d.evidence, Arrival: arrivals[i], Decision: d.at,
					})
				}
			default:
				res.Flows.Unattributed++
			}
			if attributed {
				got[edgeOf(&recs[i], o.all[d.owner])] = true
			}
		}
		for e := range got {
			if trueEdges[e] {
				res.Edges.Correct++
			} else {
				res.Edges.Misattributed++
			}
		}
		res.Edges.Unattributed = len(trueEdges) - res.Edges.Correct
		slices.Sort(lat)
		for q, f := range []float64{0.5, 0.9, 0.99, 1} {
			if len(lat) > 0 {
				res.Latency[q] = time.Duration(lat[min(len(lat)-1, int(f*float64(len(lat))))])
			}
		}
		rep.Results = append(rep.Results, res)
	}
	return rep
}

// Write prints the report as the benchmark's table.
func (r *Report) Write(w io.Writer) error {
	c, s := r.Config, r.Trace
	ew := &errWriter{w: w}
	ew.printf("attribution benchmark: seed %d, %v of virtual time, %d nodes, pool of %d pod IPs (reuse after %v-%v)\n",
		c.Seed, c.Duration, c.Nodes, c.PoolSize, c.ReuseDelayMin, c.ReuseDelayMax)
	ew.printf("exporters flush every %v (±%.0f%%), batches lost %.1f%% / reordered %.1f%%, final flush lost %.1f%%; watch events delayed %v-%v (%.0f%% up to %v), lost %.1f%%; resync every %v (lag %v)\n",
		c.FlushInterval, c.FlushJitter*100, c.BatchLoss*100, c.BatchReorder*100, c.FinalFlushLoss*100,
		c.EventDelayMin, c.EventDelayTypical, c.EventTail*100, c.EventDelayMax, c.EventLoss*100, c.ResyncInterval, c.ResyncLag)
	ew.printf("collector: merge gap %v, deadline %v after arrival, event margin %v\n",
		c.MergeGap, c.deadline(), c.EventMargin)
	ew.printf("trace: %d pods (%d jobs), %d IP reuses (gap min %v, median %v), %d connections, %d records sent, %d arrived (%d of %d batches lost), %d watch events (%d lost to watch failures), %d resyncs\n\n",
		s.Pods, s.JobPods, s.Reuses, s.ReuseGapMin.Round(time.Millisecond), s.ReuseGapMedian.Round(time.Millisecond),
		s.Conns, s.Records, s.Arrived, s.Lost, s.Batches, s.Events, s.EventsLost, s.Resyncs)
	tw := tabwriter.NewWriter(ew, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "strategy\tflows\tcorrect\tmisattributed\tunattributed\ttrue edges\tfound\tmissed\tfalse edges\t")
	for _, res := range r.Results {
		f, e := res.Flows, res.Edges
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%d\t%d\t%d\t%s\t\n", res.Strategy, f.Total(),
			pct(f.Correct, f.Total()), pct(f.Misattributed, f.Total()), pct(f.Unattributed, f.Total()),
			e.Correct+e.Unattributed, e.Correct, e.Unattributed, pct(e.Misattributed, e.Correct+e.Misattributed))
	}
	tw.Flush()
	ew.printf("\n")
	byEvidence := func(what string, counts []int) {
		ew.printf("%s:", what)
		for a, n := range counts {
			if n > 0 {
				ew.printf(" %s %d", flow.Attribution(a), n)
			}
		}
		ew.printf("\n")
	}
	for _, res := range r.Results {
		byEvidence(res.Strategy+" decided by", res.ByEvidence[:])
		if res.Flows.Misattributed > 0 {
			byEvidence(res.Strategy+" misattributed by", res.MisattributedBy[:])
		}
	}
	h := r.Results[0]
	ew.printf("%s latency, arrival to decision: p50 %v, p90 %v, p99 %v, max %v\n",
		h.Strategy, h.Latency[0].Round(time.Millisecond), h.Latency[1].Round(time.Millisecond), h.Latency[2].Round(time.Millisecond), h.Latency[3].Round(time.Millisecond))
	for _, m := range h.Misattributions {
		ew.printf("%s misattributed: %s %v:%d -> %v:%d start %d arrived %d decided %d: truth %q got %q by %s\n",
			h.Strategy, m.Record.Role, m.Record.LocalAddr, m.Record.LocalPort, m.Record.RemoteAddr, m.Record.RemotePort,
			m.Record.StartTime, m.Arrival, m.Decision, m.Truth.Pod+m.Truth.Name, m.Got.Pod, m.Evidence)
	}
	return ew.err
}

func pct(n, total int) string {
	if total == 0 {
		return "0"
	}
	return fmt.Sprintf("%d (%.2f%%)", n, 100*float64(n)/float64(total))
}

// errWriter keeps the first write error so the report can be printed without checking every line.
type errWriter struct {
	w   io.Writer
	err error
}

func (e *errWriter) Write(p []byte) (int, error) {
	if e.err != nil {
		return 0, e.err
	}
	n, err := e.w.Write(p)
	e.err = err
	return n, err
}

func (e *errWriter) printf(format string, args ...any) { fmt.Fprintf(e, format, args...) }
