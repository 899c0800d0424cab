// Package bench measures the exporter against the goals of the capture work. Run with `make bench` (root,
// after `make build`); each benchmark runs once and prints `figure |` lines: together, the table.
package bench

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
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
			in.SetDeadline(time.Now().Add(time.Second))
			if err := in.Read(&ev); err != nil && !capture.IsTimeout(err) {
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
				figure("  "+s.Name+" runs per connection", float64(s.Runs)/float64(conns), "runs", "-")
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
		const n = 100000
		start := time.Now()
		conns := connectLoop(b, ns, addr, time.Minute, n)
		// The last records leave after the close grace and a poll tick; /metrics is not scraped inside the
		// window, since a scrape costs the exporter CPU of its own.
		time.Sleep(500 * time.Millisecond)
		used := e.cpu(b) - before
		elapsed := time.Since(start)
		e.waitRecords(b, float64(2*conns))
		flows := float64(2 * conns) // a record per end
		perK := float64(used.Microseconds()) / 1000 / (flows / 1000)
		figure("exporter CPU per 1,000 flows, output="+out, perK, "ms", "<= 1 ms")
		figure("  flows/s in that run, output="+out, flows/elapsed.Seconds(), "flows/s", "-")
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
	for _, n := range []int{10000, 100000} {
		ns := loopNetns(b)
		addrs := backlogListeners(b, ns, 4, n)
		e := startExporter(b, "--netns", ns.Path, "--output", "discard", "--flush-interval", "1s",
			"--max-connections", "262144")
		idle, _ := e.rss(b)
		holdOpen(b, ns, addrs, n)
		// Two snapshot rounds over every connection, both ends.
		e.waitRecords(b, float64(4*n))
		cur, peak := e.rss(b)
		figure("exporter RSS idle", mib(idle), "MiB", "-")
		figure("exporter RSS with "+itoa(n)+" open connections", mib(cur), "MiB", goalRSS(n))
		figure("  peak RSS (VmHWM) with "+itoa(n)+" open connections", mib(peak), "MiB", goalRSS(n))
		if n == 100000 {
			b.ReportMetric(mib(cur), "MiB-rss@100k")
		}
		e.stop()
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

// backlogListeners opens k listeners in ns whose accept queues hold n connections between them. Nothing
// accepts: a queued connection is established, and tracked, without taking a file descriptor, which
// matters here because RLIMIT_NOFILE is capped well below 200k sockets.
func backlogListeners(b *testing.B, ns *nettest.Netns, k, n int) []string {
	ns.Exec(b, "sysctl", "-qw", "net.core.somaxconn="+strconv.Itoa(n))
	ns.Exec(b, "sysctl", "-qw", "net.ipv4.tcp_max_syn_backlog="+strconv.Itoa(n))
	var addrs []string
	ns.Do(b, func() {
		for range k {
			fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { unix.Close(fd) })
			if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
				b.Fatal(err)
			}
			if err := unix.Listen(fd, n); err != nil {
				b.Fatal(err)
			}
			sa, _ := unix.Getsockname(fd)
			addrs = append(addrs, "127.0.0.1:"+strconv.Itoa(sa.(*unix.SockaddrInet4).Port))
		}
	})
	return addrs
}

// holderShare is how many client connections one holder process keeps open, under its fd limit.
const holderShare = 15000

// holdOpen opens n connections to addrs from child processes that keep them open until the test ends.
func holdOpen(b *testing.B, ns *nettest.Netns, addrs []string, n int) {
	exe, err := os.Executable()
	if err != nil {
		b.Fatal(err)
	}
	var ready []io.Reader
	for left := n; left > 0; left -= holderShare {
		cmd := exec.Command(exe)
		cmd.Env = append(os.Environ(), "FLOWLENS_BENCH_HOLD="+strconv.Itoa(min(left, holderShare)),
			"FLOWLENS_BENCH_NETNS="+ns.Path, "FLOWLENS_BENCH_ADDRS="+strings.Join(addrs, ","))
		stdin, _ := cmd.StdinPipe()
		out, _ := cmd.StdoutPipe()
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { stdin.Close(); cmd.Wait() })
		ready = append(ready, out)
	}
	for _, r := range ready {
		line, err := bufio.NewReader(r).ReadString('\n')
		if err != nil || strings.TrimSpace(line) != "ready" {
			b.Fatalf("holder: %q %v", line, err)
		}
	}
}

// TestMain doubles as a holder process: with FLOWLENS_BENCH_HOLD=n it opens n connections from inside
// FLOWLENS_BENCH_NETNS, says "ready", and keeps them until its stdin closes.
func TestMain(m *testing.M) {
	if v := os.Getenv("FLOWLENS_BENCH_HOLD"); v != "" {
		n, _ := strconv.Atoi(v)
		addrs := strings.Split(os.Getenv("FLOWLENS_BENCH_ADDRS"), ",")
		var conns []net.Conn
		err := nettest.InNetns(os.Getenv("FLOWLENS_BENCH_NETNS"), func() {
			for i := range n {
				c, err := net.Dial("tcp", addrs[i%len(addrs)])
				if err != nil {
					fmt.Fprintln(os.Stderr, "holder:", err)
					os.Exit(1)
				}
				conns = append(conns, c)
			}
		})
		if err != nil {
			fmt.Fprintln(os.Stderr, "holder:", err)
			os.Exit(1)
		}
		fmt.Println("ready")
		io.Copy(io.Discard, os.Stdin)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// BenchmarkWorkloadSlowdown: the connect loop's rate without and with the exporter attached. This VM's
// throughput drifts by more than 10% from one batch of runs to the next, so runs are paired (without, then
// with, 3 s each) and the figure is the median of the pairs' slowdowns, with their spread. Once with
// records discarded (the capture alone), once written as JSON to /dev/null.
func BenchmarkWorkloadSlowdown(b *testing.B) {
	nettest.RequirePrivileged(b)
	ns := loopNetns(b)
	addr := echoServer(b, ns)
	const (
		d     = 3 * time.Second
		pairs = 8
	)
	for _, out := range []string{"discard", "stdout"} {
		var slow, off []float64
		for range pairs {
			without := float64(connectLoop(b, ns, addr, d, 0))
			e := startExporter(b, "--netns", ns.Path, "--output", out)
			time.Sleep(300 * time.Millisecond)
			with := float64(connectLoop(b, ns, addr, d, 0))
			e.stop()
			off = append(off, without/d.Seconds())
			slow = append(slow, 100*(without-with)/without)
		}
		sorted := append([]float64(nil), slow...)
		sort.Float64s(sorted)
		figure("connect loop without exporter (median of "+itoa(pairs)+")", median(off), "conn/s", "-")
		figure("workload slowdown, output="+out+" (median of "+itoa(pairs)+" pairs)", median(slow), "%", "<= 1% (reference agent: 0.9%)")
		figure("  spread of the pairs, output="+out+": lowest", sorted[0], "%", "-")
		figure("  spread of the pairs, output="+out+": highest", sorted[len(sorted)-1], "%", "-")
		if out == "stdout" {
			b.ReportMetric(median(slow), "%-slowdown")
		}
	}
}

func median(v []float64) float64 {
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	return s[len(s)/2]
}
