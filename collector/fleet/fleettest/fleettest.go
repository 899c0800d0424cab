// Package fleettest makes enriched flow records for the fleet outputs' tests and benchmarks.
package fleettest

import (
	"fmt"
	"math/rand/v2"
	"net/netip"

	"github.com/flowlens/flowlens/internal/flow"
)

// Workloads are the local workloads Records cycles through: two clusters, several namespaces, and the
// awkward cases a subject must survive (no cluster, no namespace, dots, wildcards and spaces).
var Workloads = []flow.Workload{
	{Name: "api", Namespace: "shop", Pod: "api-7d9f-1", PodUID: "u1", Node: "node-a", Cluster: "prod-eu"},
	{Name: "db", Namespace: "shop", Pod: "db-0", PodUID: "u2", Node: "node-b", Cluster: "prod-eu"},
	{Name: "pay", Namespace: "payments", Pod: "pay-1", Node: "node-c", Cluster: "prod-us"},
	{Name: "cron", Node: "node-d"},
	{Name: "odd", Namespace: "a.b *c>", Cluster: "x y"},
}

// Records returns n records that differ in every field the schema carries, from seed.
func Records(n int, seed uint64) []flow.Enriched {
	rng := rand.New(rand.NewPCG(seed, 7))
	base := int64(1_780_000_000_000_000_000) + int64(seed)*1e9
	out := make([]flow.Enriched, n)
	for i := range out {
		w := Workloads[i%len(Workloads)]
		end := base + int64(i)*1_000_003 + rng.Int64N(1e6)
		r := flow.Record{
			LocalAddr:     netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}),
			LocalPort:     uint16(30000 + rng.IntN(30000)),
			RemoteAddr:    netip.AddrFrom4([4]byte{10, 1, byte(rng.IntN(256)), byte(rng.IntN(256))}),
			RemotePort:    443,
			Role:          flow.Role(1 + i%2),
			StartTime:     end - rng.Int64N(5e9),
			EndTime:       end,
			BytesSent:     rng.Uint64N(1 << 30),
			BytesReceived: rng.Uint64N(1 << 30),
			SegsSent:      rng.Uint32N(1 << 20),
			SegsReceived:  rng.Uint32N(1 << 20),
			Retransmits:   rng.Uint32N(10),
			SrttUs:        rng.Uint32N(1e5),
			RttVarUs:      rng.Uint32N(1e4),
			MinRttUs:      rng.Uint32N(1e4),
			Close:         flow.Close(i % 6),
			Pid:           rng.Uint32N(1 << 22),
			Comm:          fmt.Sprintf("proc%d", i%7),
			Netns:         4026531840 + uint32(i%3),
			CgroupID:      rng.Uint64N(1 << 40),
			LocalWorkload: w,
		}
		if r.Close == flow.CloseConnectFailed {
			r.Error = "ECONNREFUSED"
		}
		if i%11 == 10 {
			r.Preexisting, r.StartTime, r.Role, r.Pid = true, 0, flow.RoleUnknown, 0
		}
		if i%13 == 12 {
			r.RemoteAddr = netip.MustParseAddr(fmt.Sprintf("fd00::%x", i))
			r.LocalAddr = netip.MustParseAddr(fmt.Sprintf("fd00::1:%x", i))
		}
		e := flow.Enriched{Record: r, ExporterID: fmt.Sprintf("exp-%d", i%3), Attribution: flow.Attribution(i % 7)}
		if e.Attribution != flow.AttributionNone && e.Attribution != flow.AttributionUnattributed {
			e.RemoteWorkload = Workloads[(i+1)%len(Workloads)]
		}
		out[i] = e
	}
	return out
}
