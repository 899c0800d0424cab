package shipper_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap/zaptest"

	collconfig "github.com/flowlens/flowlens/collector/config"
	"github.com/flowlens/flowlens/collector/server"
	"github.com/flowlens/flowlens/internal/flow"
)

// TestShipOverUDP: the exporter's and the collector's real configurations, UDP only, signed with a key
// from a file: every record arrives and nothing is counted lost.
func TestShipOverUDP(t *testing.T) {
	key := filepath.Join(t.TempDir(), "udp.key")
	os.WriteFile(key, []byte("0123456789abcdef0123456789abcdef\n"), 0o600)
	ccfg, err := collconfig.Load([]string{"--grpc-addr", "", "--udp-addr", "127.0.0.1:0", "--udp-key-file", key, "--metrics-addr", ""})
	if err != nil {
		t.Fatal(err)
	}
	got := &received{}
	creg := prometheus.NewRegistry()
	srv, err := server.Start(ccfg, zaptest.NewLogger(t), creg, creg, got, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Stop(context.Background())

	ship, _, _ := newShipper(t, "--output", "collector", "--collector-udp-addr", srv.UDP().Addr().String(),
		"--collector-udp-key-file", key, "--exporter-id", "udp-test")
	const n = 1000
	for i := range n {
		r := flow.Record{LocalAddr: loopback, RemoteAddr: loopback, LocalPort: uint16(i), StartTime: int64(i + 1),
			EndTime: int64(i + 2), BytesSent: uint64(i), Close: flow.CloseNormal, Comm: "app"}
		ship.Write(&r)
	}
	ship.Close(5 * time.Second)
	deadline := time.Now().Add(5 * time.Second)
	for {
		got.mu.Lock()
		arrived := len(got.recs)
		got.mu.Unlock()
		if arrived == n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d records arrived over UDP", arrived, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
	got.mu.Lock()
	defer got.mu.Unlock()
	id := got.exporter
	if lost := srv.UDP().Lost(id); lost != 0 || srv.UDP().Received(id) == 0 {
		t.Fatalf("exporter %q: lost %d, received %d datagrams", id, lost, srv.UDP().Received(id))
	}
}
