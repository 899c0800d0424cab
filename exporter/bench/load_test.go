package bench

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flowlens/flowlens/internal/nettest"
)

// The connect loop the design's figures were measured with: 32 workers, each connecting, sending 64 bytes,
// reading the 64-byte echo and closing, flat out.
const (
	workers = 32
	payload = 64
)

// loopNetns makes a namespace tuned for a connect loop: wide port range, and reuse of TIME_WAIT ports.
func loopNetns(b *testing.B) *nettest.Netns {
	ns := nettest.NewNetns(b)
	ns.Exec(b, "sysctl", "-qw", "net.ipv4.ip_local_port_range=1024 65000")
	ns.Exec(b, "sysctl", "-qw", "net.ipv4.tcp_tw_reuse=1")
	return ns
}

// echoServer answers every connection with its 64 bytes, then closes first, so the clients' ports do not
// linger in TIME_WAIT.
func echoServer(b *testing.B, ns *nettest.Netns) string {
	var ln net.Listener
	var err error
	ns.Do(b, func() { ln, err = net.Listen("tcp", "127.0.0.1:0") })
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ln.Close() })
	nettest.Serve(ln, func(c net.Conn) {
		buf := make([]byte, payload)
		if _, err := io.ReadFull(c, buf); err == nil {
			c.Write(buf)
		}
		c.Close()
	})
	return ln.Addr().String()
}

// connectLoop runs the loop from inside ns for d, or until n connections when n > 0, and returns the count.
func connectLoop(b *testing.B, ns *nettest.Netns, addr string, d time.Duration, n int64) int64 {
	var done atomic.Int64
	var wg sync.WaitGroup
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	for range workers {
		wg.Add(1)
		// Each worker dials from a thread inside the namespace.
		go func() {
			defer wg.Done()
			err := nettest.InNetns(ns.Path, func() {
				buf := make([]byte, payload)
				for ctx.Err() == nil && (n == 0 || done.Load() < n) {
					c, err := net.Dial("tcp", addr)
					if err != nil {
						continue
					}
					c.Write(buf)
					io.ReadFull(c, buf)
					io.Copy(io.Discard, c)
					c.Close()
					done.Add(1)
				}
			})
			if err != nil {
				b.Error(err)
			}
		}()
	}
	wg.Wait()
	return done.Load()
}

// exporter is flow-exporter running as its own process, so that its CPU and memory are its own.
type exporter struct {
	cmd     *exec.Cmd
	metrics string
}

func exporterBin(b *testing.B) string {
	if p := os.Getenv("FLOWLENS_EXPORTER_BIN"); p != "" {
		return p
	}
	p, _ := filepath.Abs("../../bin/flow-exporter")
	if _, err := os.Stat(p); err != nil {
		b.Fatalf("%s: run `make build` (make bench does) or set FLOWLENS_EXPORTER_BIN", p)
	}
	return p
}

func startExporter(b *testing.B, args ...string) *exporter {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	cmd := exec.Command(exporterBin(b), append([]string{"--metrics-addr", addr, "--log-level", "warn"}, args...)...)
	cmd.Stdout = nil // /dev/null itself: io.Discard would copy through a pipe and a goroutine of ours
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	e := &exporter{cmd: cmd, metrics: "http://" + addr + "/metrics"}
	b.Cleanup(e.stop)
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if _, err := e.metric("flowlens_exporter_snapshots_total"); err == nil {
			return e
		}
		if time.Now().After(deadline) {
			b.Fatal("flow-exporter did not start")
		}
	}
}

func (e *exporter) stop() {
	if e.cmd.ProcessState != nil {
		return
	}
	e.cmd.Process.Signal(os.Interrupt)
	e.cmd.Wait()
}

// metric sums every series of a family from /metrics.
func (e *exporter) metric(name string) (float64, error) {
	resp, err := http.Get(e.metrics)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var sum float64
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name) || (len(line) > len(name) && line[len(name)] != '{' && line[len(name)] != ' ') {
			continue
		}
		f := strings.Fields(line)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err != nil {
			return 0, err
		}
		sum += v
	}
	return sum, sc.Err()
}

// waitRecords waits until the exporter has emitted at least n records.
func (e *exporter) waitRecords(b *testing.B, n float64) {
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if v, _ := e.metric("flowlens_exporter_records_emitted_total"); v >= n {
			return
		}
	}
	v, _ := e.metric("flowlens_exporter_records_emitted_total")
	b.Fatalf("exporter emitted %v records, want %v", v, n)
}

// cpu is the process's user+system CPU time so far, in nanoseconds, from every thread's schedstat.
func (e *exporter) cpu(b *testing.B) time.Duration {
	tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/schedstat", e.cmd.Process.Pid))
	if err != nil {
		b.Fatal(err)
	}
	var sum int64
	for _, t := range tasks {
		raw, err := os.ReadFile(t)
		if err != nil {
			continue // the thread exited
		}
		ns, _ := strconv.ParseInt(strings.Fields(string(raw))[0], 10, 64)
		sum += ns
	}
	return time.Duration(sum)
}

// rss returns the process's resident and peak resident memory in bytes.
func (e *exporter) rss(b *testing.B) (cur, peak int64) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", e.cmd.Process.Pid))
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(string(raw), "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 && (f[0] == "VmRSS:" || f[0] == "VmHWM:") {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			if f[0] == "VmRSS:" {
				cur = kb << 10
			} else {
				peak = kb << 10
			}
		}
	}
	return cur, peak
}

// figure prints one line of the benchmark table.
func figure(name string, value float64, unit, goal string) {
	fmt.Printf("figure | %-52s | %12.2f %-8s | goal %s\n", name, value, unit, goal)
}
