// Package bench measures the exporter against the goals of the capture work. Run with `make bench` (root,
// after `make build`); each benchmark runs once and prints `figure |` lines: together, the table.
package bench

import (
	"net"
	"sort"
	"strconv"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/flowlens/flowlens/exporter/capture"
	"github.com/flowlens/flowlens/internal/nettest"
)

// BenchmarkKernelNsPerHit: the kernel's own run-time statistics of each program, for a probe whose scope
// is the loop's namespace (in scope) and one scoped to an idle namespace (every hit out of scope).
func BenchmarkKernelNsPerHit(b *testing.B) {
	nettest.RequirePrivileged(b)
	stats, err := ebpf.EnableStats(unix.BPF_STATS_RUN_TIME)
	if err != nil {
		b.Fatal(err)
	}
	defer stats.Close()
	ns, idle := loopNetns(b), nettest.NewNetns(b)
	addr := echoServer(b, ns)
	open := func(netns uint32) *capture.Probe {
		p, err := capture.Open(capture.Options{Netns: netns, MaxConnections: 65536, RingBufferBytes: 8 << 20}, zap.NewNop())
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { p.Close() })
		return p
	}
	in, out := open(ns.Inode), open(idle.Inode)
	floor := emptyProgram(b)
	// Drain the in-scope probe's records so its ring buffer never fills (a full ring is a cheaper path).
	go func() {
		var ev capture.Event
		for {
			if err := in.Read(&ev, time.Now().Add(time.Second)); err != nil && !capture.IsTimeout(err) {
				return
			}
		}
	}()

	conns := connectLoop(b, ns, addr, 5*time.Second, 0)
	report := func(scope string, p *capture.Probe) float64 {
		st, err := p.Stats()
		if err != nil {
			b.Fatal(err)
		}
		var total time.Duration
		for _, s := range st {
			total += s.RunTime
			if s.Runs > 0 {
				figure(scope+" "+s.Name+" ns/run", s.NsPerRun(), "ns", goalFor(scope, s.Name))
			}
		}
		perConn := float64(total.Nanoseconds()) / float64(conns)
		figure(scope+" BPF time per connection (both ends)", perConn, "ns", "reference: 5.5 µs")
		return perConn
	}
	b.ReportMetric(report("in-scope", in), "ns-bpf/conn")
	report("out-of-scope", out)
	if st, err := floor.Stats(); err == nil && st.RunCount > 0 {
		figure("floor: an empty program on the same tracepoint", float64(st.Runtime.Nanoseconds())/float64(st.RunCount), "ns",
			"what BPF statistics add to every run here")
	}
	figure("connections in the loop", float64(conns)/5, "conn/s", "reference: ~13,900")
}

// emptyProgram attaches a program that only returns to inet_sock_set_state. Its measured run time is what
// the statistics themselves cost per run on this machine: the floor under every figure above it.
func emptyProgram(b *testing.B) *ebpf.Program {
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type:         ebpf.Tracing,
		AttachType:   ebpf.AttachTraceRawTp,
		AttachTo:     "inet_sock_set_state",
		License:      "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 0), asm.Return()},
	})
	if err != nil {
		b.Fatal(err)
	}
	l, err := link.AttachTracing(link.TracingOptions{Program: prog})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { l.Close(); prog.Close() })
	return prog
}

func goalFor(scope, prog string) string {
	if prog != "inet_sock_set_state" {
		return "-"
	}
	if scope == "in-scope" {
		return "<= 100 ns (reference agent: 272 ns)"
	}
	return "<= 30 ns"
}

// BenchmarkExporterCPU: the exporter's user+system CPU per 1,000 flows, with records encoded as JSON
// (stdout, sent to /dev/null) and with the capture path alone (discard).
func BenchmarkExporterCPU(b *testing.B) {
	nettest.RequirePrivileged(b)
	for _, out := range []string{"discard", "stdout"} {
		ns := loopNetns(b)
		addr := echoServer(b, ns)
		e := startExporter(b, "--netns", ns.Path, "--output", out)
		time.Sleep(300 * time.Millisecond) // let start-up work finish before the measured window
		before := e.cpu(b)
		const n = 50000
		start := time.Now()
		conns := connectLoop(b, ns, addr, time.Minute, n)
		e.waitRecords(b, float64(2*conns))
		used := e.cpu(b) - before
		flows := float64(2 * conns) // a record per end
		perK := float64(used.Microseconds()) / 1000 / (flows / 1000)
		figure("exporter CPU per 1,000 flows, output="+out, perK, "ms", "<= 1 ms")
		figure("  flows/s in that run, output="+out, flows/time.Since(start).Seconds(), "flows/s", "-")
		if out == "discard" {
			b.ReportMetric(perK, "ms-cpu/1k-flows")
		}
		e.stop()
	}
}

// BenchmarkExporterRSS: the exporter's resident memory while 10k and 100k connections are open and
// reported as interim records every second.
func BenchmarkExporterRSS(b *testing.B) {
	nettest.RequirePrivileged(b)
	// 100k connections are 200k sockets in this process.
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &unix.Rlimit{Cur: 400000, Max: 400000}); err != nil {
		b.Fatal(err)
	}
	for _, n := range []int{10000, 100000} {
		ns := loopNetns(b)
		var lns []net.Listener
		ns.Do(b, func() {
			for range 4 {
				ln, err := net.Listen("tcp", "127.0.0.1:0")
				if err != nil {
					b.Fatal(err)
				}
				lns = append(lns, ln)
			}
		})
		e := startExporter(b, "--netns", ns.Path, "--output", "discard", "--flush-interval", "1s",
			"--max-connections", "262144")
		idle, _ := e.rss(b)
		conns := holdOpen(b, ns, lns, n)
		// Two snapshot rounds over every connection.
		snaps, _ := e.metric("flowlens_exporter_snapshots_total")
		e.waitRecords(b, float64(4*n))
		for s, _ := e.metric("flowlens_exporter_snapshots_total"); s < snaps+2; s, _ = e.metric("flowlens_exporter_snapshots_total") {
			time.Sleep(100 * time.Millisecond)
		}
		cur, peak := e.rss(b)
		figure("exporter RSS idle", mib(idle), "MiB", "-")
		figure("exporter RSS with "+itoa(n)+" open connections", mib(cur), "MiB", goalRSS(n))
		figure("  peak RSS (VmHWM) with "+itoa(n)+" open connections", mib(peak), "MiB", goalRSS(n))
		if n == 100000 {
			b.ReportMetric(mib(cur), "MiB-rss@100k")
		}
		e.stop()
		for _, c := range conns {
			c.Close()
		}
		for _, ln := range lns {
			ln.Close()
		}
	}
}

func goalRSS(n int) string {
	if n == 100000 {
		return "<= 40 MiB"
	}
	return "-"
}

func mib(v int64) float64 { return float64(v) / (1 << 20) }

func itoa(n int) string { return strconv.Itoa(n) }

// holdOpen opens n connections spread over the listeners and returns both ends of each.
func holdOpen(b *testing.B, ns *nettest.Netns, lns []net.Listener, n int) []net.Conn {
	accepted := make(chan net.Conn, 1024)
	for _, ln := range lns {
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				accepted <- c
			}
		}()
	}
	conns := make([]net.Conn, 0, 2*n)
	var err error
	ns.Do(b, func() {
		for i := range n {
			var c net.Conn
			c, err = net.Dial("tcp", lns[i%len(lns)].Addr().String())
			if err != nil {
				return
			}
			conns = append(conns, c, <-accepted)
		}
	})
	if err != nil {
		b.Fatalf("after %d connections: %v", len(conns)/2, err)
	}
	return conns
}

// BenchmarkWorkloadSlowdown: the connect loop's rate without and with the exporter attached (JSON records to
// /dev/null), alternating, median of three runs each.
func BenchmarkWorkloadSlowdown(b *testing.B) {
	nettest.RequirePrivileged(b)
	ns := loopNetns(b)
	addr := echoServer(b, ns)
	const d = 5 * time.Second
	var off, on []float64
	for range 3 {
		off = append(off, float64(connectLoop(b, ns, addr, d, 0))/d.Seconds())
		e := startExporter(b, "--netns", ns.Path, "--output", "stdout")
		time.Sleep(300 * time.Millisecond)
		on = append(on, float64(connectLoop(b, ns, addr, d, 0))/d.Seconds())
		e.stop()
	}
	mOff, mOn := median(off), median(on)
	slow := 100 * (mOff - mOn) / mOff
	figure("connect loop without exporter (median of 3)", mOff, "conn/s", "-")
	figure("connect loop with exporter (median of 3)", mOn, "conn/s", "-")
	figure("workload slowdown", slow, "%", "<= 1% (reference agent: 0.9%)")
	b.ReportMetric(slow, "%-slowdown")
}

func median(v []float64) float64 {
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	return s[len(s)/2]
}

