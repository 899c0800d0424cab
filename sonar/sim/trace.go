package sim

import (
	"cmp"
	"container/heap"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"time"

	"github.com/flowlens/flowlens/internal/flow"
	"github.com/flowlens/flowlens/sonar/index"
)

// Trace is one simulated run: what truly happened (pods, connections) and what reached the collector
// (record batches, Kubernetes events), each stamped with virtual time in Unix nanoseconds.
type Trace struct {
	Start, End int64   // the window in which pods churn and connect
	Offsets    []int64 // each node's clock offset: exporters stamp records with true time + offset
	Pods       []Pod
	Services   []Service    // cluster IPs: no exporter, fed to the index as SERVICE evidence
	CIDRs      []index.CIDR // external addresses
	Conns      []Conn
	Batches    []Batch    // every batch an exporter sent, by arrival; lost ones flagged
	Feed       []FeedItem // every event that reached the collector, by arrival
	Stats      TraceStats
}

// Pod is one pod's life. A pod holds its IP from Start until End, without a break.
type Pod struct {
	W           flow.Workload // as its exporter stamps its records and the event feed names it
	Workload    int           // its workload, numbered by the generator
	Job         bool
	IP          netip.Addr
	Node        int
	Start       int64 // IP assigned
	Ready       int64 // in the endpoints from here; 0 for jobs, which nobody calls
	Terminating int64 // deletion requested: off the endpoints, still running; 0 for jobs
	End         int64 // IP released: deleted (deployment pod) or completed (job); Trace.End if still running
	Removed     int64 // the API object is gone; 0 if it outlives the trace
	Running     bool  // still running at Trace.End
}

// Service is a cluster IP and the workload behind it.
type Service struct {
	IP    netip.Addr
	Owner flow.Workload
}

// Conn is one TCP connection. The client always has an exporter; the server only when Server >= 0.
type Conn struct {
	Client, Server int32      // pod indexes; Server is -1 when no pod accepted (external, refused, timed out)
	Dialled        netip.Addr // the client's remote address: a pod IP, a cluster IP or an external address
	Truth          flow.Workload
	ClientPort     uint16
	ServerPort     uint16
	Start, End     int64 // true times of connect() and of the close
	Latency        int64 // one way: the server sees the connection start Latency after the client
	Close          flow.Close
}

// Rec is one record an exporter sent: one side of a connection, interim (ACTIVE) or final.
type Rec struct {
	Conn   int32
	Server bool
	Close  flow.Close
	End    int64 // true time the record was taken (the close, or the flush tick of an interim record)
}

// Batch is one flush of one pod's exporter.
type Batch struct {
	Pod           int32
	Sent, Arrival int64
	Lost          bool
	Recs          []Rec
}

// FeedKind is what one feed item says.
type FeedKind uint8

const (
	FeedUpdate        FeedKind = iota // the pod as of Of: running with its IP (deletion requested if Of >= Terminating)
	FeedCompleted                     // the pod completed; the API still shows its IP
	FeedDeleted                       // the pod object was deleted; its final state is as of Of
	FeedUnknownDelete                 // a relist found the pod gone: deleted at an unknown time
	FeedWatchError                    // the watch failed (Pod is -1)
	FeedResync                        // the watcher's periodic resync (Pod is -1)
)

// FeedItem is one item as the collector's watcher receives it, at At. Of is the true time of the
// state it shows.
type FeedItem struct {
	At, Of int64
	Pod    int32
	Kind   FeedKind
}

// TraceStats describes a trace.
type TraceStats struct {
	Pods, JobPods      int
	Reuses             int           // IP assignments to an address that had an owner before
	ReuseGapMin        time.Duration // shortest time between one owner's release and the next owner
	ReuseGapMedian     time.Duration
	Conns              int
	Records, Arrived   int // records sent, and in batches that arrived
	Batches, Lost      int
	Events, EventsLost int // watch events, and those lost to a watch failure (each followed by a relist)
	Resyncs            int
}

// Record is r as its exporter reported it.
func (t *Trace) Record(r Rec) flow.Record {
	c := &t.Conns[r.Conn]
	client := &t.Pods[c.Client]
	// Counters as the kernel reports them: a handshake that never completed has no RTT sample and
	// has received nothing (a refusal is one RST).
	segsSent, segsRecv, srtt := uint32(3), uint32(3), uint32(2*c.Latency/1000+1)
	var errno string
	if c.Close == flow.CloseConnectFailed {
		segsSent, segsRecv, srtt = 1, 0, 0
		if c.Truth != (flow.Workload{}) {
			segsRecv = 1
			if r.Close != flow.CloseActive {
				errno = "ECONNREFUSED"
			}
		} else if r.Close != flow.CloseActive {
			errno = "ETIMEDOUT"
		}
	}
	if !r.Server {
		off := t.Offsets[client.Node]
		return flow.Record{
			LocalAddr: client.IP, LocalPort: c.ClientPort, RemoteAddr: c.Dialled, RemotePort: c.ServerPort,
			Role: flow.RoleClient, StartTime: c.Start + off, EndTime: r.End + off, Close: r.Close, Error: errno,
			SegsSent: segsSent, SegsReceived: segsRecv, SrttUs: srtt, MinRttUs: srtt, LocalWorkload: client.W,
		}
	}
	server := &t.Pods[c.Server]
	off := t.Offsets[server.Node]
	return flow.Record{
		LocalAddr: server.IP, LocalPort: c.ServerPort, RemoteAddr: client.IP, RemotePort: c.ClientPort,
		Role: flow.RoleServer, StartTime: c.Start + c.Latency + off, EndTime: r.End + off, Close: r.Close,
		SegsSent: segsRecv, SegsReceived: segsSent, SrttUs: srtt, MinRttUs: srtt, LocalWorkload: server.W,
	}
}

// Truth is the true owner of r's remote address at r's start: the zero Workload when nobody held it.
func (t *Trace) Truth(r Rec) flow.Workload {
	c := &t.Conns[r.Conn]
	if r.Server {
		return t.Pods[c.Client].W
	}
	return c.Truth
}

// Generate simulates a cluster under cfg and returns its trace.
func Generate(cfg Config) (*Trace, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("sim config: %w", err)
	}
	g := &gen{cfg: cfg, rng: rand.New(rand.NewPCG(uint64(cfg.Seed), 0x666c6f776c656e73))}
	g.t = &Trace{Start: epoch, End: epoch + int64(cfg.Duration)}
	g.world()
	g.lifecycle()
	g.calls()
	g.flushes()
	g.events()
	g.stats()
	return g.t, nil
}

// epoch is the virtual clock's start: a realistic Unix time, so records look like real ones.
const epoch = int64(1_767_225_600) * int64(time.Second) // 2026-01-01T00:00:00Z

const (
	serverPort   = 8080
	staleWindow  = 10 * time.Second // how long a deleted pod stays in a stale endpoint list
	synTimeout   = 3 * time.Second  // a connect to an address nobody holds gives up after this
	clusterName  = "sim"
	minOneWay    = 50 * time.Microsecond
	maxOneWay    = 500 * time.Microsecond
	firstCallMin = 100 * time.Millisecond
	firstCallMax = time.Second
)

type workload struct {
	w        flow.Workload // Name and Namespace
	job      bool
	gateway  bool
	replicas int
	deps     []int
	svc      netip.Addr
	pods     []int32 // in order of Start
}

type gen struct {
	cfg       Config
	rng       *rand.Rand
	t         *Trace
	workloads []workload
	ips       []ipState
	waiting   []int32 // pods waiting for an IP, first come first served
	q         lifeQueue
	tenants   map[netip.Addr][]int32 // each IP's pods in order of Start
	ticks     [][]int64              // each pod's flush ticks (true time)
	batches   [][][]Rec              // each pod's records per tick; the last slot is the final flush
	gaps      []int64
}

type ipState struct {
	addr   netip.Addr
	inUse  bool
	freeAt int64
}

func (g *gen) uniform(lo, hi time.Duration) int64 {
	if hi <= lo {
		return int64(lo)
	}
	return int64(lo) + g.rng.Int64N(int64(hi-lo)+1)
}

func (g *gen) chance(p float64) bool { return p > 0 && g.rng.Float64() < p }

// world lays out the workloads, services, external CIDRs, nodes and the IP pool.
func (g *gen) world() {
	cfg := g.cfg
	for range cfg.Nodes {
		g.t.Offsets = append(g.t.Offsets, g.uniform(-cfg.ClockSkew, cfg.ClockSkew))
	}
	for i := range cfg.Deployments {
		g.workloads = append(g.workloads, workload{
			w:        flow.Workload{Name: fmt.Sprintf("backend-%02d", i), Namespace: "shop", Cluster: clusterName},
			replicas: cfg.Replicas,
			svc:      netip.AddrFrom4([4]byte{10, 96, byte(i >> 8), byte(10 + i)}),
		})
	}
	// Backends call one to three later backends (a DAG, as real call graphs mostly are).
	for i := range g.workloads {
		if rest := cfg.Deployments - i - 1; rest > 0 {
			for _, d := range g.rng.Perm(rest)[:1+g.rng.IntN(min(3, rest))] {
				g.workloads[i].deps = append(g.workloads[i].deps, i+1+d)
			}
			slices.Sort(g.workloads[i].deps)
		}
		g.t.Services = append(g.t.Services, Service{IP: g.workloads[i].svc, Owner: g.workloads[i].w})
	}
	if cfg.GatewayReplicas > 0 {
		gw := workload{w: flow.Workload{Name: "gateway", Namespace: "edge", Cluster: clusterName},
			gateway: true, replicas: cfg.GatewayReplicas}
		for i := range cfg.Deployments {
			gw.deps = append(gw.deps, i)
		}
		g.workloads = append(g.workloads, gw)
	}
	for i := range cfg.JobWorkloads {
		j := workload{w: flow.Workload{Name: fmt.Sprintf("report-%d", i), Namespace: "batch", Cluster: clusterName}, job: true}
		for _, d := range g.rng.Perm(cfg.Deployments)[:min(cfg.Deployments, 1+g.rng.IntN(2))] {
			j.deps = append(j.deps, d)
		}
		slices.Sort(j.deps)
		g.workloads = append(g.workloads, j)
	}
	g.t.CIDRs = []index.CIDR{
		{Prefix: netip.MustParsePrefix("52.94.0.0/16"), Owner: flow.Workload{Name: "aws-s3", Namespace: "external"}},
		{Prefix: netip.MustParsePrefix("140.82.112.0/20"), Owner: flow.Workload{Name: "github", Namespace: "external"}},
	}
	for i := range cfg.PoolSize {
		n := i + 2 // skip .0 and .1 of the first /24
		g.ips = append(g.ips, ipState{addr: netip.AddrFrom4([4]byte{10, 244, byte(n >> 8), byte(n)})})
	}
	g.tenants = make(map[netip.Addr][]int32)
}

// Lifecycle events, in time order.
type lifeKind uint8

const (
	lifeCreate    lifeKind = iota // a workload asks for a new pod
	lifeTerminate                 // a deployment pod is deleted: a replacement is asked for
	lifeRelease                   // a pod releases its IP
	lifeFree                      // a released IP may be assigned again
	lifeJob                       // a job workload starts its next pod
)

type lifeEvent struct {
	at   int64
	seq  int
	kind lifeKind
	arg  int32
}

type lifeQueue struct {
	h   []lifeEvent
	seq int
}

func (q *lifeQueue) Len() int { return len(q.h) }
func (q *lifeQueue) Less(i, j int) bool {
	return cmp.Or(cmp.Compare(q.h[i].at, q.h[j].at), cmp.Compare(q.h[i].seq, q.h[j].seq)) < 0
}
func (q *lifeQueue) Swap(i, j int) { q.h[i], q.h[j] = q.h[j], q.h[i] }
func (q *lifeQueue) Push(x any)    { q.h = append(q.h, x.(lifeEvent)) }
func (q *lifeQueue) Pop() any {
	x := q.h[len(q.h)-1]
	q.h = q.h[:len(q.h)-1]
	return x
}

func (g *gen) schedule(at int64, kind lifeKind, arg int32) {
	g.q.seq++
	heap.Push(&g.q, lifeEvent{at: at, seq: g.q.seq, kind: kind, arg: arg})
}

// lifecycle runs the pods' lives: creation, IP assignment from the pool, deletion and replacement,
// job completion, and IP release and reuse.
func (g *gen) lifecycle() {
	cfg, t := g.cfg, g.t
	for wi, w := range g.workloads {
		if w.job {
			g.schedule(t.Start+g.uniform(0, cfg.JobEvery), lifeJob, int32(wi))
			continue
		}
		for range w.replicas {
			g.schedule(t.Start+g.uniform(0, 2*time.Second), lifeCreate, int32(wi))
		}
	}
	for g.q.Len() > 0 {
		e := heap.Pop(&g.q).(lifeEvent)
		if e.at >= t.End {
			break
		}
		switch e.kind {
		case lifeJob:
			g.schedule(e.at+int64(float64(cfg.JobEvery)*(0.5+g.rng.Float64())), lifeJob, e.arg)
			fallthrough
		case lifeCreate:
			g.newPod(int(e.arg))
		case lifeTerminate:
			g.newPod(t.Pods[e.arg].Workload)
		case lifeRelease:
			p := &t.Pods[e.arg]
			ip := g.ip(p.IP)
			ip.inUse = false
			ip.freeAt = e.at + g.uniform(cfg.ReuseDelayMin, cfg.ReuseDelayMax)
			g.schedule(ip.freeAt, lifeFree, 0)
		case lifeFree:
		}
		g.assign(e.at)
	}
	// Pods still running at the end keep their IP past it; their exporters flush at the end.
	for i := range t.Pods {
		p := &t.Pods[i]
		if p.End >= t.End {
			p.End, p.Running = t.End, true
		}
		if p.Removed >= t.End {
			p.Removed = 0
		}
		if p.Terminating >= t.End {
			p.Terminating = 0
		}
	}
}

func (g *gen) ip(a netip.Addr) *ipState {
	b := a.As4()
	return &g.ips[int(b[2])<<8|int(b[3])-2]
}

func (g *gen) newPod(wi int) {
	w := &g.workloads[wi]
	n := len(g.t.Pods)
	g.t.Pods = append(g.t.Pods, Pod{
		W: flow.Workload{
			Name: w.w.Name, Namespace: w.w.Namespace, Cluster: clusterName,
			Pod:    fmt.Sprintf("%s-%05x", w.w.Name, g.rng.IntN(1<<20)),
			PodUID: fmt.Sprintf("%08x-%04x-4%03x-8%03x-%012x", g.rng.Uint32(), g.rng.IntN(1<<16), g.rng.IntN(1<<12), g.rng.IntN(1<<12), g.rng.Int64N(1<<48)),
		},
		Workload: wi, Job: w.job, Node: g.rng.IntN(g.cfg.Nodes),
	})
	g.t.Pods[n].W.Node = fmt.Sprintf("node-%d", g.t.Pods[n].Node)
	g.waiting = append(g.waiting, int32(n))
}

// assign gives waiting pods the IPs that are free again, a random one each (so reuse is not in a
// predictable order), and decides their lives.
func (g *gen) assign(now int64) {
	cfg := g.cfg
	for len(g.waiting) > 0 {
		var free []int
		for i, ip := range g.ips {
			if !ip.inUse && ip.freeAt <= now {
				free = append(free, i)
			}
		}
		if len(free) == 0 {
			return
		}
		ip := &g.ips[free[g.rng.IntN(len(free))]]
		pi := g.waiting[0]
		g.waiting = g.waiting[1:]
		p := &g.t.Pods[pi]
		ip.inUse = true
		p.IP, p.Start = ip.addr, now
		if prev := g.tenants[ip.addr]; len(prev) > 0 {
			g.gaps = append(g.gaps, now-g.t.Pods[prev[len(prev)-1]].End)
		}
		g.tenants[ip.addr] = append(g.tenants[ip.addr], pi)
		w := &g.workloads[p.Workload]
		w.pods = append(w.pods, pi)
		if p.Job {
			p.End = now + g.uniform(cfg.JobRunMin, cfg.JobRunMax)
			p.Removed = p.End + int64(cfg.JobTTL)
		} else {
			life := int64(cfg.MinLifetime) + int64(g.rng.ExpFloat64()*float64(max(cfg.PodLifetime-cfg.MinLifetime, time.Millisecond)))
			p.Ready = now + g.uniform(0, cfg.ReadyDelay)
			p.Terminating = now + max(life, p.Ready-now+1)
			p.End = p.Terminating + g.uniform(0, cfg.Grace)
			p.Removed = p.End
			g.schedule(p.Terminating, lifeTerminate, pi)
		}
		g.schedule(p.End, lifeRelease, pi)
	}
}

// owner is who held ip at t: a pod index, or -1.
func (g *gen) owner(ip netip.Addr, t int64) int32 {
	ts := g.tenants[ip]
	for i := len(ts) - 1; i >= 0; i-- {
		p := &g.t.Pods[ts[i]]
		if p.Start <= t {
			if t < p.End || p.Running {
				return ts[i]
			}
			return -1
		}
	}
	return -1
}

// calls makes every pod's connections, a Poisson process per pod, and the records both sides report.
func (g *gen) calls() {
	cfg, t := g.cfg, g.t
	g.ticks = make([][]int64, len(t.Pods))
	g.batches = make([][][]Rec, len(t.Pods))
	for pi := range t.Pods {
		p := &t.Pods[pi]
		if p.Start == 0 { // never got an IP
			continue
		}
		// The exporter starts with the pod and flushes every interval, jittered, from a random phase.
		f := int64(cfg.FlushInterval)
		for k, at := 0, p.Start+g.uniform(0, cfg.FlushInterval); ; k++ {
			tick := at + int64(k)*f + int64((g.rng.Float64()*2-1)*cfg.FlushJitter*float64(f))
			if tick >= p.End {
				break
			}
			g.ticks[pi] = append(g.ticks[pi], max(tick, p.Start))
		}
		g.batches[pi] = make([][]Rec, len(g.ticks[pi])+1)
	}
	for pi := range t.Pods {
		p := &t.Pods[pi]
		w := &g.workloads[p.Workload]
		rate := cfg.CallRate
		if w.gateway {
			rate = cfg.GatewayCallRate
		}
		if p.Start == 0 || rate == 0 || len(w.deps) == 0 {
			continue
		}
		for at := p.Start + g.uniform(firstCallMin, firstCallMax); at < p.End; at += int64(g.rng.ExpFloat64() / rate * float64(time.Second)) {
			g.call(int32(pi), at)
		}
	}
}

func (g *gen) call(client int32, at int64) {
	cfg, t := g.cfg, g.t
	p := &t.Pods[client]
	w := &g.workloads[p.Workload]
	c := Conn{Client: client, Server: -1, ClientPort: uint16(32768 + g.rng.IntN(28232)), ServerPort: serverPort,
		Start: at, Latency: g.uniform(minOneWay, maxOneWay), Close: flow.CloseNormal}
	dur := int64(g.rng.ExpFloat64()*float64(cfg.ShortMean)) + 2*c.Latency + 1
	if g.chance(cfg.LongFraction) {
		dur = g.uniform(cfg.LongMin, cfg.LongMax)
	}
	callee := w.deps[g.rng.IntN(len(w.deps))]
	switch {
	case !w.gateway && !w.job && g.chance(cfg.ExternalFraction):
		cidr := t.CIDRs[g.rng.IntN(len(t.CIDRs))]
		a := cidr.Prefix.Addr().As4()
		host := g.rng.Uint32() & (1<<(32-cidr.Prefix.Bits()) - 1)
		c.Dialled = netip.AddrFrom4([4]byte{a[0], a[1], a[2] | byte(host>>8), a[3] | byte(host)})
		c.Truth, c.ServerPort = cidr.Owner, 443
	case g.chance(cfg.StaleFraction) && g.stale(&c, callee):
	default:
		server := g.endpoint(callee, at)
		if server < 0 {
			return // no endpoint: the caller would not connect
		}
		c.Server = server
		c.Dialled, c.Truth = t.Pods[server].IP, t.Pods[server].W
		if g.chance(cfg.ServiceFraction) {
			c.Dialled, c.Truth = g.workloads[callee].svc, g.workloads[callee].w
		}
	}
	if c.End == 0 {
		c.End = at + dur
	}
	c.End = min(c.End, p.End)
	if c.Server >= 0 {
		c.End = min(c.End, t.Pods[c.Server].End)
	}
	if c.End <= at+2*c.Latency {
		return // one side was gone before the handshake finished: nothing to report
	}
	id := int32(len(t.Conns))
	t.Conns = append(t.Conns, c)
	g.report(id, client, c.Start, c.End, false)
	if c.Server >= 0 {
		g.report(id, c.Server, c.Start+c.Latency, c.End, true)
	}
}

// stale makes c a connection to the IP of a callee pod deleted within the stale window: whoever holds
// the IP now refuses it, or nobody does and it times out. No server side reports it.
func (g *gen) stale(c *Conn, callee int) bool {
	pods := g.workloads[callee].pods
	for i := len(pods) - 1; i >= 0; i-- {
		p := &g.t.Pods[pods[i]]
		if p.Running || p.End > c.Start || p.End <= c.Start-int64(staleWindow) {
			continue
		}
		c.Dialled, c.Close = p.IP, flow.CloseConnectFailed
		if o := g.owner(p.IP, c.Start); o >= 0 {
			c.Truth = g.t.Pods[o].W
			c.End = c.Start + 2*c.Latency + 1
		} else {
			c.End = c.Start + int64(synTimeout)
		}
		return true
	}
	return false
}

// endpoint picks a ready pod of workload wi at t, or -1.
func (g *gen) endpoint(wi int, t int64) int32 {
	var ready []int32
	for _, pi := range g.workloads[wi].pods {
		p := &g.t.Pods[pi]
		if p.Ready <= t && (t < p.Terminating || p.Terminating == 0 && t < p.End) {
			ready = append(ready, pi)
		}
	}
	if len(ready) == 0 {
		return -1
	}
	return ready[g.rng.IntN(len(ready))]
}

// report files one side's records with its pod's exporter: an interim record at every tick while the
// connection is open, and the final one at the first tick after it closed (or the last flush).
func (g *gen) report(conn, pod int32, start, end int64, server bool) {
	ticks := g.ticks[pod]
	k, _ := slices.BinarySearch(ticks, start+1)
	for ; k < len(ticks) && ticks[k] < end; k++ {
		g.batches[pod][k] = append(g.batches[pod][k], Rec{Conn: conn, Server: server, Close: flow.CloseActive, End: ticks[k]})
	}
	cl := g.t.Conns[conn].Close
	if g.t.Pods[pod].Running && end >= g.t.End {
		cl = flow.CloseActive // still open when the trace ends: the shutdown flush reports it open
	}
	g.batches[pod][k] = append(g.batches[pod][k], Rec{Conn: conn, Server: server, Close: cl, End: end})
}

// flushes turns the filed records into batches, each lost, reordered or delivered.
func (g *gen) flushes() {
	cfg, t := g.cfg, g.t
	for pi := range t.Pods {
		p := &t.Pods[pi]
		finalLost := !p.Running && g.chance(cfg.FinalFlushLoss)
		for k, recs := range g.batches[pi] {
			if len(recs) == 0 {
				continue
			}
			sent := p.End
			if k < len(g.ticks[pi]) {
				sent = g.ticks[pi][k]
			}
			b := Batch{Pod: int32(pi), Sent: sent, Arrival: sent + g.uniform(cfg.TransportMin, cfg.TransportMax), Recs: recs}
			if g.chance(cfg.BatchReorder) {
				b.Arrival += g.uniform(0, cfg.FlushInterval)
			}
			b.Lost = g.chance(cfg.BatchLoss) || k == len(g.ticks[pi]) && finalLost
			t.Batches = append(t.Batches, b)
		}
	}
	g.batches, g.ticks = nil, nil
	slices.SortStableFunc(t.Batches, func(a, b Batch) int {
		return cmp.Or(cmp.Compare(a.Arrival, b.Arrival), cmp.Compare(a.Pod, b.Pod))
	})
}

// events makes the Kubernetes feed as an informer delivers it: per pod, watch events (assigned,
// ready, terminating: updates; completed; deleted), each delayed, in order per pod (a late event holds
// back that pod's later ones). A lost event is a watch failure: the watcher sees the error, and a relist
// shows the pod's state at that moment, or that it is gone. Resync ticks come every ResyncInterval.
func (g *gen) events() {
	cfg, t := g.cfg, g.t
	type ev struct {
		at   int64
		kind FeedKind
	}
	for pi := range t.Pods {
		p := &t.Pods[pi]
		if p.Start == 0 {
			continue
		}
		evs := []ev{{p.Start, FeedUpdate}}
		if p.Ready > p.Start {
			evs = append(evs, ev{p.Ready, FeedUpdate})
		}
		if p.Terminating > 0 {
			evs = append(evs, ev{p.Terminating, FeedUpdate})
		}
		if p.Job && !p.Running {
			evs = append(evs, ev{p.End, FeedCompleted})
		}
		if p.Removed > 0 {
			evs = append(evs, ev{p.Removed, FeedDeleted})
		}
		var last int64
		for _, e := range evs {
			t.Stats.Events++
			last = max(last, e.at+g.eventDelay())
			if !g.chance(cfg.EventLoss) {
				t.Feed = append(t.Feed, FeedItem{At: last, Of: e.at, Pod: int32(pi), Kind: e.kind})
				continue
			}
			t.Stats.EventsLost++
			t.Feed = append(t.Feed, FeedItem{At: last, Pod: -1, Kind: FeedWatchError})
			last += g.uniform(0, cfg.RelistLatency)
			relist := FeedItem{At: last, Of: last, Pod: int32(pi), Kind: FeedUpdate}
			switch {
			case p.Removed > 0 && last >= p.Removed:
				relist.Kind = FeedUnknownDelete
			case p.Job && !p.Running && last >= p.End:
				relist.Kind = FeedCompleted
			case last >= t.End:
				continue
			}
			t.Feed = append(t.Feed, relist)
		}
	}
	for at := t.Start + int64(cfg.ResyncInterval); at < t.End; at += int64(cfg.ResyncInterval) {
		t.Feed = append(t.Feed, FeedItem{At: at, Of: at, Pod: -1, Kind: FeedResync})
		t.Stats.Resyncs++
	}
	// Items of different pods that arrive at the same moment come in a random order; one pod's keep
	// theirs (the sort is stable).
	order := g.rng.Perm(len(t.Pods) + 1)
	slices.SortStableFunc(t.Feed, func(a, b FeedItem) int {
		return cmp.Or(cmp.Compare(a.At, b.At), cmp.Compare(order[a.Pod+1], order[b.Pod+1]))
	})
}

func (g *gen) eventDelay() int64 {
	cfg := g.cfg
	if g.chance(cfg.EventTail) {
		return g.uniform(cfg.EventDelayTypical, cfg.EventDelayMax)
	}
	return g.uniform(cfg.EventDelayMin, cfg.EventDelayTypical)
}

func (g *gen) stats() {
	t := g.t
	s := &t.Stats
	for _, p := range t.Pods {
		if p.Start == 0 {
			continue
		}
		s.Pods++
		if p.Job {
			s.JobPods++
		}
	}
	s.Reuses = len(g.gaps)
	if len(g.gaps) > 0 {
		slices.Sort(g.gaps)
		s.ReuseGapMin, s.ReuseGapMedian = time.Duration(g.gaps[0]), time.Duration(g.gaps[len(g.gaps)/2])
	}
	s.Conns = len(t.Conns)
	s.Batches = len(t.Batches)
	for _, b := range t.Batches {
		s.Records += len(b.Recs)
		if b.Lost {
			s.Lost++
		} else {
			s.Arrived += len(b.Recs)
		}
	}
}
