package capture_test

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/flowlens/flowlens/exporter/capture"
	"github.com/flowlens/flowlens/exporter/flowtable"
	"github.com/flowlens/flowlens/internal/flow"
	"github.com/flowlens/flowlens/internal/nettest"
)

// TestMain doubles as the client process of the tests: with FLOWLENS_TEST_CLIENT set, the test binary
// dials instead of testing, so its connections carry a pid and comm of their own.
func TestMain(m *testing.M) {
	if os.Getenv("FLOWLENS_TEST_CLIENT") != "" {
		if err := clientMain(); err != nil {
			fmt.Fprintln(os.Stderr, "client:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// upSize and downSize are the payloads of connection i: distinct, and several segments long.
func upSize(i int) int   { return 1000 + 997*i }
func downSize(i int) int { return 3*upSize(i) + 7 }

// clientMain makes FLOWLENS_TEST_N connections to FLOWLENS_TEST_ADDR from inside FLOWLENS_TEST_NETNS:
// send upSize(i) bytes, half-close, read everything back, close.
func clientMain() error {
	n, _ := strconv.Atoi(os.Getenv("FLOWLENS_TEST_N"))
	addr := os.Getenv("FLOWLENS_TEST_ADDR")
	var err error
	nerr := nettest.InNetns(os.Getenv("FLOWLENS_TEST_NETNS"), func() {
		for i := 0; i < n && err == nil; i++ {
			err = exchange(addr, upSize(i), downSize(i))
		}
	})
	return errors.Join(nerr, err)
}

func exchange(addr string, up, down int) error {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	if _, err := c.Write(make([]byte, up)); err != nil {
		return err
	}
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		return err
	}
	got, err := io.Copy(io.Discard, c)
	if err != nil {
		return err
	}
	if got != int64(down) {
		return fmt.Errorf("read %d bytes, want %d", got, down)
	}
	return nil
}

// runClient runs n exchanges against addr in a child process named comm, inside ns, and returns its pid.
func runClient(t *testing.T, ns *nettest.Netns, comm, addr string, n int) int {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	// The kernel names a process after the file it executed, so a link gives the client its own comm.
	link := filepath.Join(t.TempDir(), comm)
	if err := os.Symlink(exe, link); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(link)
	cmd.Env = append(os.Environ(), "FLOWLENS_TEST_CLIENT=1", "FLOWLENS_TEST_NETNS="+ns.Path,
		"FLOWLENS_TEST_ADDR="+addr, "FLOWLENS_TEST_N="+strconv.Itoa(n))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("client: %v\n%s", err, out)
	}
	return cmd.Process.Pid
}

// serveEcho accepts connections on ln until it closes: it reads to EOF, answers 3*up+7 bytes, closes.
// It reports each connection's client port and upload size.
func serveEcho(ln net.Listener) <-chan [2]int {
	got := make(chan [2]int, 1024)
	nettest.Serve(ln, func(c net.Conn) {
		defer c.Close()
		up, _ := io.Copy(io.Discard, c)
		c.Write(make([]byte, 3*up+7))
		got <- [2]int{c.RemoteAddr().(*net.TCPAddr).Port, int(up)}
	})
	return got
}

// probe opens the programs scoped to netns (0: host) and closes them when the test ends.
func probe(t *testing.T, netns uint32) *capture.Probe {
	t.Helper()
	nettest.RequirePrivileged(t)
	p, err := capture.Open(capture.Options{Netns: netns, MaxConnections: 4096, RingBufferBytes: 1 << 20}, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// collector reads a probe through a flow table, as the exporter does, so late RSTs are applied.
type collector struct {
	t       *testing.T
	p       *capture.Probe
	table   *flowtable.Table
	records []flow.Record
}

func newCollector(t *testing.T, p *capture.Probe) *collector {
	c := &collector{t: t, p: p}
	c.table = flowtable.New(100*time.Millisecond, func(r *flow.Record) { c.records = append(c.records, *r) })
	return c
}

// until reads until match has accepted want records (or timeout), then drains for the grace period, so
// a record that should not be there has time to show up. It returns the matched records.
func (c *collector) until(want int, timeout time.Duration, match func(*flow.Record) bool) []flow.Record {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	var out []flow.Record
	seen := 0
	var quietUntil time.Time
	for {
		now := time.Now()
		if len(out) >= want && quietUntil.IsZero() {
			quietUntil = now.Add(300 * time.Millisecond)
		}
		if (!quietUntil.IsZero() && now.After(quietUntil)) || now.After(deadline) {
			break
		}
		var ev capture.Event
		c.p.SetDeadline(now.Add(20 * time.Millisecond))
		err := c.p.Read(&ev)
		switch {
		case err == nil:
			c.table.Add(&ev, now)
		case capture.IsTimeout(err):
		default:
			c.t.Fatalf("read: %v", err)
		}
		c.table.Expire(time.Now())
		for ; seen < len(c.records); seen++ {
			if match(&c.records[seen]) {
				out = append(out, c.records[seen])
			}
		}
	}
	if len(out) != want {
		c.t.Fatalf("got %d matching records, want %d:\n%s", len(out), want, dump(out))
	}
	return out
}

func dump(rs []flow.Record) string {
	var b strings.Builder
	for _, r := range rs {
		fmt.Fprintf(&b, "  %s %s:%d -> %s:%d close=%s err=%s sent=%d recv=%d segs=%d/%d retrans=%d pid=%d comm=%s netns=%d\n",
			r.Role, r.LocalAddr, r.LocalPort, r.RemoteAddr, r.RemotePort, r.Close, r.Error, r.BytesSent,
			r.BytesReceived, r.SegsSent, r.SegsReceived, r.Retransmits, r.Pid, r.Comm, r.Netns)
	}
	return b.String()
}

// port matches records whose local or remote port is p.
func port(p int) func(*flow.Record) bool {
	return func(r *flow.Record) bool { return int(r.LocalPort) == p || int(r.RemotePort) == p }
}

func listen(t *testing.T, ns *nettest.Netns, network, addr string) net.Listener {
	t.Helper()
	var ln net.Listener
	var err error
	ns.Do(t, func() { ln, err = net.Listen(network, addr) })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

func dial(t *testing.T, ns *nettest.Netns, network, addr string) net.Conn {
	t.Helper()
	var c net.Conn
	var err error
	ns.Do(t, func() { c, err = net.Dial(network, addr) })
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func portOf(a net.Addr) int { return a.(*net.TCPAddr).Port }
