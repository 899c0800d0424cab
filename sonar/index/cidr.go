package index

import (
	"cmp"
	"net/netip"
	"slices"

	"github.com/flowlens/flowlens/internal/flow"
)

// CIDR says that every address in Prefix belongs to Owner, at any time: external services, load
// balancers, node subnets. It is the weakest evidence and answers only when no range covers the time.
type CIDR struct {
	Prefix netip.Prefix
	Owner  flow.Workload
}

type cidrRange struct {
	prefix netip.Prefix
	owner  flow.Workload
}

// SetCIDRs replaces the CIDR table. Prefixes are matched longest first; two equal prefixes with
// different owners are both kept and a lookup inside them answers Conflict.
func (x *Index) SetCIDRs(table []CIDR) {
	t := make([]cidrRange, 0, len(table))
	for _, c := range table {
		t = append(t, cidrRange{prefix: c.Prefix.Masked(), owner: c.Owner})
	}
	slices.SortStableFunc(t, func(a, b cidrRange) int { return cmp.Compare(b.prefix.Bits(), a.prefix.Bits()) })
	x.cidrs.Store(&t)
}

func (x *Index) lookupCIDR(ip netip.Addr) Answer {
	t := x.cidrs.Load()
	if t == nil {
		return Answer{}
	}
	var a Answer
	bits := -1
	for _, c := range *t {
		if bits >= 0 && c.prefix.Bits() < bits {
			break // a longer prefix already matched
		}
		if !c.prefix.Contains(ip) {
			continue
		}
		r := Range{Start: minTime, End: maxTime, Owner: c.owner, Evidence: EvidenceCIDR}
		switch {
		case bits < 0:
			a, bits = Answer{Status: Owned, Range: r}, c.prefix.Bits()
		case a.Range.Owner != c.owner || a.Status == Conflict:
			if a.Status == Owned {
				a = Answer{Status: Conflict, Conflicting: []Range{a.Range}}
			}
			a.Conflicting = append(a.Conflicting, r)
		}
	}
	return a
}

const (
	minTime = -1 << 63
	maxTime = 1<<63 - 1
)
