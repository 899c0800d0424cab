package store

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/flowlens/flowlens/internal/flow"
)

// benchBatch builds n final records of distinct connections between 50 client and 50 server
// workloads; every activeEvery-th record is an interim one (0: none).
func benchBatch(n int, base int64, activeEvery int) []flow.Enriched {
	out := make([]flow.Enriched, n)
	for i := range out {
		c := flow.CloseNormal
		if activeEvery > 0 && i%activeEvery == 0 {
			c = flow.CloseActive
		}
		out[i] = flow.Enriched{
			Record: flow.Record{
				LocalAddr: netip.AddrFrom4([4]byte{10, 1, byte(i >> 8), byte(i)}), LocalPort: uint16(32768 + i%28000),
				RemoteAddr: netip.AddrFrom4([4]byte{10, 2, 0, byte(i % 50)}), RemotePort: 8080,
				Role: flow.RoleClient, StartTime: base + int64(i), EndTime: base + int64(i) + 5e6,
				BytesSent: uint64(i * 7), BytesReceived: uint64(i * 13), SegsSent: 10, SegsReceived: 12,
				SrttUs: uint32(100 + i%900), RttVarUs: 20, MinRttUs: 50, Close: c, Pid: 1234, Comm: "app", Netns: 4026531840,
				CgroupID: 9999, LocalWorkload: flow.Workload{Name: fmt.Sprintf("client-%d", i%50), Namespace: "ns", Pod: "p", PodUID: "uid", Node: "node", Cluster: "c1"},
			},
			ExporterID:     fmt.Sprintf("exp-%d", i%50),
			RemoteWorkload: flow.Workload{Name: fmt.Sprintf("server-%d", i%50), Namespace: "ns2", Pod: "q", Node: "node2", Cluster: "c1"},
			Attribution:    flow.AttributionHeartbeat,
		}
	}
	return out
}

// BenchmarkWrite stores 4,096-record batches into a file DB (and 16,384, to show what larger
// transactions would buy, and 512, one exporter batch, to show what each write costs). "final": every record a short
// connection's only (final) record, the common case. "interim10pct": in steady state, 10 % are the
// first interim record of a new connection (looked up in the table in case a final was stored
// already), 10 % the final records of the previous batch's interim ones (their rows deleted), the
// rest final-only.
func BenchmarkWrite(b *testing.B) {
	for _, tc := range []struct {
		name    string
		interim bool
		n       int
	}{{"final", false, 4096}, {"interim10pct", true, 4096}, {"final_16k", false, 16384}, {"final_512", false, 512}} {
		b.Run(tc.name, func(b *testing.B) {
			s, err := Open(Config{Path: filepath.Join(b.TempDir(), "flows.duckdb")}, zap.NewNop(), prometheus.NewRegistry())
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			n := tc.n
			ctx := context.Background()
			tmpl := benchBatch(n, 0, 0)
			fs := make([]flow.Enriched, n)
			b.ResetTimer()
			start := time.Now()
			cpu0 := cpuTime()
			for i := 0; i < b.N; i++ {
				base := int64(i+1) * 1e9
				for j := range fs {
					fs[j] = tmpl[j]
					fs[j].StartTime = base + int64(j)
					fs[j].EndTime = fs[j].StartTime + 5e6
					if !tc.interim {
						continue
					}
					switch {
					case j%10 == 0:
						fs[j].Close = flow.CloseActive
					case j%10 == 1 && i > 0:
						fs[j] = tmpl[j-1]
						fs[j].StartTime = base - 1e9 + int64(j-1)
						fs[j].EndTime = fs[j].StartTime + 2e9
					}
				}
				if err := s.Write(ctx, Write{Flows: fs, Batches: []BatchKey{{"exp", uint64(i)}}}); err != nil {
					b.Fatal(err)
				}
			}
			// What the writes left to checkpoint is part of their cost. The lock: not during a rollup pass.
			s.mu.Lock()
			_, err = s.wconn.ExecContext(ctx, "CHECKPOINT")
			s.mu.Unlock()
			if err != nil {
				b.Fatal(err)
			}
			el := time.Since(start).Seconds()
			b.ReportMetric(float64(b.N*n)/el, "flows/s")
			b.ReportMetric(float64(b.N*n)/(cpuTime()-cpu0).Seconds(), "flows/cpu-s")
		})
	}
}

const benchRows = 10_000_000

// benchDB returns a DuckDB file with 10M flows between 200 client and 100 server workloads over the
// last hour, cached under os.TempDir() between runs (it takes a while to build).
func benchDB(b *testing.B) string {
	path := filepath.Join(os.TempDir(), fmt.Sprintf("flowlens-store-bench-%d-v4.duckdb", benchRows))
	if _, err := os.Stat(path); err == nil {
		return path
	}
	s, err := Open(Config{Path: path + ".tmp", RollupInterval: -1}, zap.NewNop(), nil)
	if err != nil {
		b.Fatal(err)
	}
	now := time.Now().UnixNano()
	// Workload k of 200 clients (ids k) and 100 servers (ids 1000+k); namespaces and clusters follow
	// from k, so a flow's ids follow from its client and server numbers.
	w := `INSERT INTO workloads
SELECT k, k, 'client-' || k, 'ns-' || (k % 7), 'pod', 'uid', 'node', 'c1' FROM range(200) t(k)
UNION ALL SELECT 1000 + k, 1000 + k, 'server-' || k, 'ns-' || (k % 5), 'pod2', 'uid2', 'node2', 'c' || (k % 2) FROM range(100) t(k)`
	if _, err := s.wconn.ExecContext(context.Background(), w); err != nil {
		b.Fatal(err)
	}
	q := fmt.Sprintf(`INSERT INTO flows SELECT
  i AS id, hash(i), i %% 200, 1000 + i %% 100, i %% 200, 1000 + i %% 100,
  'exp-' || (i %% 200), '10.1.' || ((i // 256) %% 256) || '.' || (i %% 256), (32768 + i %% 28000)::USMALLINT,
  '10.2.0.' || (i %% 100), 8080::USMALLINT,
  CASE WHEN i %% 10 = 0 THEN 'SERVER' ELSE 'CLIENT' END,
  %[1]d - 3600000000000 + i * 360000 AS start_time, %[1]d - 3600000000000 + i * 360000 + 5000000,
  (i * 7) %% 100000, (i * 13) %% 1000000, 10, 12, (i %% 97 = 0)::INT * 3,
  (100 + (i * 31) %% 5000)::UINTEGER, 20, 50,
  CASE WHEN i %% 101 = 0 THEN 'CONNECT_FAILED' WHEN i %% 103 = 0 THEN 'RESET_RECEIVED' ELSE 'NORMAL' END,
  '', 1234, 'app', 4026531840, 9999, false,
  CASE WHEN i %% 10 = 0 THEN 'POD_EVENT' ELSE 'HEARTBEAT' END
FROM range(%[2]d) t(i)`, now, benchRows)
	start := time.Now()
	if _, err := s.wconn.ExecContext(context.Background(), q); err != nil {
		b.Fatal(err)
	}
	built := time.Since(start)
	// What the collector's rollup loop does as the minutes pass.
	start = time.Now()
	if err := s.Rollup(context.Background(), time.Unix(0, now)); err != nil {
		b.Fatal(err)
	}
	b.Logf("generated %d flows in %v, rolled them up in %v", benchRows, built, time.Since(start))
	if _, err := s.wconn.ExecContext(context.Background(), "CHECKPOINT"); err != nil {
		b.Fatal(err)
	}
	s.Close()
	if err := os.Rename(path+".tmp", path); err != nil {
		b.Fatal(err)
	}
	b.Logf("cached in %s", path)
	return path
}

// BenchmarkQuery10M runs the graph queries over 10M stored flows of the last hour (all in the
// window), read from the rollup for whole built minutes and raw for the rest; deps_raw reads all of
// them raw, for comparison.
func BenchmarkQuery10M(b *testing.B) {
	path := benchDB(b)
	s, err := Open(Config{Path: path, RollupInterval: -1}, zap.NewNop(), nil)
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	all := EdgeQuery{From: 0, To: time.Now().UnixNano()}
	for _, tc := range []struct {
		name string
		q    EdgeQuery
	}{
		{"deps", all},
		{"top_bytes", EdgeQuery{From: all.From, To: all.To, OrderBy: "bytes", Limit: 100}},
		{"failing", EdgeQuery{From: all.From, To: all.To, OrderBy: "failures"}},
		{"cross_namespace", EdgeQuery{From: all.From, To: all.To, GroupBy: "namespace"}},
		{"deps_last_15m", EdgeQuery{From: time.Now().Add(-15 * time.Minute).UnixNano(), To: all.To}},
		{"deps_raw", all},
	} {
		b.Run(tc.name, func(b *testing.B) {
			var edges []Edge
			if tc.name == "deps_raw" {
				wm := s.watermark
				s.watermark = 0
				defer func() { s.watermark = wm }()
			}
			for i := 0; i < b.N; i++ {
				if edges, err = s.Edges(ctx, tc.q); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/query")
			b.ReportMetric(float64(len(edges)), "edges")
		})
	}
	b.Run("flows_page", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			if _, err := s.Flows(ctx, FlowQuery{From: 0, To: all.To, Workload: "server-7", Limit: 100}); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.Elapsed().Microseconds())/1e3/float64(b.N), "ms/query")
	})
}

// BenchmarkReopen opens the 10M-flow store (what a restarted collector does before serving).
func BenchmarkReopen(b *testing.B) {
	path := benchDB(b)
	for i := 0; i < b.N; i++ {
		s, err := Open(Config{Path: path}, zap.NewNop(), nil)
		if err != nil {
			b.Fatal(err)
		}
		s.Close()
	}
	b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/open")
}

// cpuTime is the process's user+system CPU time: DuckDB uses threads of its own, so flows per
// CPU-second is the per-core figure.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
