// Package attribute decides who the remote side of a flow was, from the ownership index, and turns every
// record into the heartbeat that feeds that index. It holds the rules; the pipeline holds the queues.
//
// The rule is the project's: a flow may stay unattributed, it must never be misattributed. So:
//   - A heartbeat answer (the remote address's owner itself reported flows covering the time) is final.
//   - Service, node and CIDR answers are final too: those addresses have no exporter whose heartbeat
//     could outrank them, and they do not churn like pod IPs.
//   - A pod-event answer is taken only at the deadline: until then a heartbeat may still arrive and
//     outrank it, because pod events can be late or lost while heartbeats come from the owner itself.
//   - No answer, or a conflict, waits for the deadline and then is stored UNATTRIBUTED.
package attribute

import (
	"cmp"
	"encoding/binary"
	"hash/fnv"
	"net/netip"
	"slices"

	"github.com/flowlens/flowlens/internal/flow"
	"github.com/flowlens/flowlens/sonar/index"
)

// Lookuper answers who owned an address at a time: an in-process *index.Index, or a sonar client.
type Lookuper interface {
	Lookup(ip netip.Addr, t int64) index.Answer
}

// BatchLookuper answers many lookups in one go: a remote sonar in one call rather than one each.
type BatchLookuper interface {
	LookupBatch(keys []Key) []index.Answer
}

// Key is one lookup: an index key and a time.
type Key struct {
	IP netip.Addr
	At int64
}

// Prefetch asks a BatchLookuper about the remote side of n records (rec(i) is the i-th) in one go, and
// returns the answers for AnswerFor. Other lookupers answer one record at a time, as cheaply in
// process: Prefetch then returns nil and allocates nothing.
func Prefetch(l Lookuper, n int, rec func(int) *flow.Record) []index.Answer {
	bl, ok := l.(BatchLookuper)
	if !ok || n == 0 {
		return nil
	}
	keys := make([]Key, n)
	for i := range keys {
		keys[i].IP, keys[i].At = RemoteKey(rec(i))
	}
	return bl.LookupBatch(keys)
}

// AnswerFor is the answer to the i-th record's lookup: from Prefetch's answers, or asked of l now.
func AnswerFor(l Lookuper, prefetched []index.Answer, i int, r *flow.Record) index.Answer {
	if prefetched != nil {
		return prefetched[i]
	}
	return l.Lookup(RemoteKey(r))
}

// Resolve looks up r's remote address at its start time and, when the answer is good enough to keep
// (see the package comment), sets RemoteWorkload and Attribution and returns true. final says the
// record's deadline has passed: then it always decides, UNATTRIBUTED if nothing better is known.
func Resolve(l Lookuper, r *flow.Enriched, final bool) bool {
	return Apply(r, l.Lookup(RemoteKey(&r.Record)), final)
}

// Apply is Resolve with the answer to r's lookup in hand (from AnswerFor).
func Apply(r *flow.Enriched, a index.Answer, final bool) bool {
	ok := a.Status == index.Owned && (final || a.Range.Evidence != index.EvidencePodEvent)
	if remoteSocketKey(&r.Record) {
		// Only the socket's own heartbeat names a loopback socket's owner: a CIDR table entry that
		// covers the key's prefix (::/0, say) knows nothing of the host's sockets.
		ok = ok && a.Range.Evidence == index.EvidenceHeartbeat
	}
	switch {
	case ok:
		r.RemoteWorkload, r.Attribution = a.Range.Owner, flow.Attribution(a.Range.Evidence)
	case final:
		r.RemoteWorkload, r.Attribution = flow.Workload{}, flow.AttributionUnattributed
	}
	return ok || final
}

// Heartbeat is the claim a record makes: its local address belonged to its local workload while the
// connection lived. Records with no workload make none.
func Heartbeat(r *flow.Record) (index.Claim, bool) {
	if r.LocalWorkload == (flow.Workload{}) || !r.LocalAddr.IsValid() || r.EndTime == 0 {
		return index.Claim{}, false
	}
	start := r.StartTime
	if r.Preexisting || start == 0 || start > r.EndTime {
		start = r.EndTime // open before the exporter started: the record proves only the moment it was taken
	}
	ip := localKey(r)
	if !ip.IsValid() {
		return index.Claim{}, false
	}
	return index.Claim{IP: ip, Start: start, End: r.EndTime, Owner: r.LocalWorkload, Evidence: index.EvidenceHeartbeat}, true
}

// RemoteKey is the index key and time to look the remote side of r up at: the middle of the
// connection. An established TCP connection keeps both addresses for its whole life, so any instant of
// it names the same owner; the middle is covered by the remote side's own record of the same
// connection, whose start is half a round trip after this side's connect(). A connection that was not
// established — a failed connect, or an interim record of one still waiting for its SYN-ACK, which has
// neither a segment received nor an RTT sample — is looked up at its start: its address may belong to
// nobody yet, and to a new owner a moment later.
func RemoteKey(r *flow.Record) (netip.Addr, int64) {
	at := r.StartTime
	switch {
	case r.Preexisting || at == 0:
		at = r.EndTime
	case established(r) && r.EndTime > at:
		at += (r.EndTime - at) / 2
	}
	if hostLocal(r.RemoteAddr) {
		return socketKey(r.LocalWorkload.Node, r.RemoteAddr, r.RemotePort), at
	}
	return r.RemoteAddr.Unmap(), at
}

// hostLocal says whether ip names no owner across the fleet: a loopback address is on every host, and a
// connect() to the unspecified address (0.0.0.0, ::) reaches the connecting host itself.
func hostLocal(ip netip.Addr) bool {
	ip = ip.Unmap()
	return ip.IsLoopback() || ip.IsUnspecified()
}

// remoteSocketKey says whether RemoteKey(r) is a socket key, without hashing one: on the per-record path
// the key was made already, for the lookup.
func remoteSocketKey(r *flow.Record) bool {
	if hostLocal(r.RemoteAddr) {
		return r.LocalWorkload.Node != "" // socketKey: no node, no key
	}
	return isSocketKey(r.RemoteAddr.Unmap())
}

func isSocketKey(ip netip.Addr) bool {
	a := ip.As16()
	return ip.Is6() && [8]byte(a[:8]) == [8]byte{0x01}
}

func established(r *flow.Record) bool {
	return r.Close != flow.CloseConnectFailed && (r.SegsReceived > 0 || r.SrttUs > 0)
}

func localKey(r *flow.Record) netip.Addr {
	if hostLocal(r.LocalAddr) {
		return socketKey(r.LocalWorkload.Node, r.LocalAddr, r.LocalPort)
	}
	return r.LocalAddr.Unmap()
}

// socketKey stands for a loopback socket of one host. Every host has 127.0.0.1, and on one host every
// process shares it, so a loopback address names no owner; the (host, address, port) of a socket does.
// Both ends of a loopback connection are on the host that exported them, so the client's record claims
// its ephemeral port, the server's its listening port, and each finds the other under the same key.
// The key is an address in 100::/64, the discard-only prefix (RFC 6666), which no real flow carries.
// A record that does not name its host (no node in its workload) has no key, the invalid address: its
// socket could be on any host, and a key shared by every such host would attribute one host's loopback
// flows to another host's workload.
func socketKey(host string, ip netip.Addr, port uint16) netip.Addr {
	if host == "" {
		return netip.Addr{}
	}
	h := fnv.New64a()
	h.Write([]byte(host))
	a := ip.Unmap().As16()
	h.Write(a[:])
	var b [16]byte
	b[0], b[1] = 0x01, 0x00
	binary.BigEndian.PutUint64(b[8:], h.Sum64()<<16|uint64(port))
	return netip.AddrFrom16(b)
}

// Coalesce merges, in place, claims of the same address, owner and evidence whose ranges overlap or
// touch, and returns the shorter slice. A batch's records mostly share their exporter's address, so
// this turns hundreds of heartbeats into a few before they reach the index, its log and the fleet.
// Claims with a gap between them stay apart: only the index may bridge a gap, where it can see
// whether another owner holds it.
func Coalesce(claims []index.Claim) []index.Claim {
	if len(claims) < 2 {
		return claims
	}
	slices.SortFunc(claims, func(a, b index.Claim) int {
		return cmp.Or(a.IP.Compare(b.IP), cmp.Compare(a.Evidence, b.Evidence), compareWorkloads(a.Owner, b.Owner), cmp.Compare(a.Start, b.Start))
	})
	out := claims[:1]
	for _, c := range claims[1:] {
		last := &out[len(out)-1]
		if c.IP == last.IP && c.Evidence == last.Evidence && c.Owner == last.Owner && c.Start <= last.End {
			last.End = max(last.End, c.End)
			last.Seen = max(last.Seen, c.Seen)
			continue
		}
		out = append(out, c)
	}
	return out
}

func compareWorkloads(a, b flow.Workload) int {
	return cmp.Or(cmp.Compare(a.Name, b.Name), cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Pod, b.Pod),
		cmp.Compare(a.PodUID, b.PodUID), cmp.Compare(a.Node, b.Node), cmp.Compare(a.Cluster, b.Cluster))
}
