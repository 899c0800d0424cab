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

// cidrTable is the CIDR table by prefix length, longest first: a lookup tries each length present
// (at most 33 for IPv4, 129 for IPv6) with one map probe, however many entries the table holds.
type cidrTable struct {
	lengths []int // distinct prefix lengths, descending
	owners  map[netip.Prefix][]flow.Workload
}

// SetCIDRs replaces the CIDR table. The longest matching prefix answers; two equal prefixes with
// different owners are both kept and a lookup inside them answers Conflict. v4-mapped prefixes count
// as IPv4.
func (x *Index) SetCIDRs(table []CIDR) {
	t := &cidrTable{owners: make(map[netip.Prefix][]flow.Workload, len(table))}
	for _, c := range table {
		p := c.Prefix
		if !p.IsValid() {
			continue
		}
		if p.Addr().Is4In6() && p.Bits() >= 96 {
			p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
		}
		p = p.Masked()
		if os := t.owners[p]; !slices.Contains(os, c.Owner) {
			t.owners[p] = append(os, c.Owner)
		}
		if !slices.Contains(t.lengths, p.Bits()) {
			t.lengths = append(t.lengths, p.Bits())
		}
	}
	slices.SortFunc(t.lengths, func(a, b int) int { return cmp.Compare(b, a) })
	x.cidrs.Store(t)
}

func (x *Index) lookupCIDR(ip netip.Addr) Answer {
	t := x.cidrs.Load()
	if t == nil {
		return Answer{}
	}
	for _, bits := range t.lengths {
		p, err := ip.Prefix(bits)
		if err != nil {
			continue // a length of the other address family
		}
		owners := t.owners[p]
		switch len(owners) {
		case 0:
			continue
		case 1:
			return Answer{Status: Owned, Range: cidrRange(owners[0])}
		}
		a := Answer{Status: Conflict}
		for _, o := range owners {
			a.Conflicting = append(a.Conflicting, cidrRange(o))
		}
		return a
	}
	return Answer{}
}

func cidrRange(owner flow.Workload) Range {
	return Range{Start: minTime, End: maxTime, Owner: owner, Evidence: EvidenceCIDR}
}

const (
	minTime = -1 << 63
	maxTime = 1<<63 - 1
)
