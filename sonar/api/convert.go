// Package api serves sonar's index: the gRPC SonarService (Report, Lookup, ListRanges) and an
// HTTP/JSON lookup API that sonar and the collector both mount. Conversions between the index's types
// and the protocol's live here too, for the client.
package api

import (
	"fmt"
	"net/netip"

	"github.com/flowlens/flowlens/internal/wire"
	sonarv1 "github.com/flowlens/flowlens/proto/flowlens/sonar/v1"
	"github.com/flowlens/flowlens/sonar/index"
)

// MaxBatch is the most queries one lookup request may carry (gRPC and HTTP), and MaxReport the most
// ranges one Report may carry. Beyond them a request is refused as a whole: a caller splits it (the
// client does). 10,000 ranges with their owners are about 600 KB, well under gRPC's 4 MiB default.
const (
	MaxBatch  = 10_000
	MaxReport = 10_000
)

// AddrFromBytes parses a protocol address: 4 or 16 bytes.
func AddrFromBytes(b []byte) (netip.Addr, error) {
	ip, ok := netip.AddrFromSlice(b)
	if !ok {
		return netip.Addr{}, fmt.Errorf("ip: %d bytes, want 4 or 16", len(b))
	}
	return ip, nil
}

// AddrBytes is ip as the protocol carries it: 4 bytes for IPv4, 16 for IPv6.
func AddrBytes(ip netip.Addr) []byte { return ip.Unmap().AsSlice() }

// RangeToProto converts a range held for ip.
func RangeToProto(ip netip.Addr, r index.Range) *sonarv1.OwnershipRange {
	return &sonarv1.OwnershipRange{Ip: AddrBytes(ip), Start: r.Start, End: r.End, LastSeen: r.LastSeen,
		Owner: wire.WorkloadToProto(r.Owner), Evidence: sonarv1.Evidence(r.Evidence)}
}

// RangeFromProto converts a range back; the address is not checked.
func RangeFromProto(p *sonarv1.OwnershipRange) index.Range {
	return index.Range{Start: p.GetStart(), End: p.GetEnd(), LastSeen: p.GetLastSeen(),
		Owner: wire.WorkloadFromProto(p.GetOwner()), Evidence: index.Evidence(p.GetEvidence())}
}

// ClaimToProto converts a claim to the range a Report carries.
func ClaimToProto(c index.Claim) *sonarv1.OwnershipRange {
	return &sonarv1.OwnershipRange{Ip: AddrBytes(c.IP), Start: c.Start, End: c.End, LastSeen: c.Seen,
		Owner: wire.WorkloadToProto(c.Owner), Evidence: sonarv1.Evidence(c.Evidence)}
}

// ClaimFromProto validates a reported range and converts it to a claim: a 4- or 16-byte address,
// start <= end, and evidence of a kind a claim may carry (heartbeat, pod event, service, node; CIDR
// entries come from the CIDR file only).
func ClaimFromProto(p *sonarv1.OwnershipRange) (index.Claim, error) {
	ip, err := AddrFromBytes(p.GetIp())
	if err != nil {
		return index.Claim{}, err
	}
	if p.GetEnd() < p.GetStart() {
		return index.Claim{}, fmt.Errorf("end %d before start %d", p.GetEnd(), p.GetStart())
	}
	switch p.GetEvidence() {
	case sonarv1.Evidence_EVIDENCE_HEARTBEAT, sonarv1.Evidence_EVIDENCE_POD_EVENT, sonarv1.Evidence_EVIDENCE_SERVICE, sonarv1.Evidence_EVIDENCE_NODE:
	default:
		return index.Claim{}, fmt.Errorf("evidence %v: want HEARTBEAT, POD_EVENT, SERVICE or NODE", p.GetEvidence())
	}
	return index.Claim{IP: ip, Start: p.GetStart(), End: p.GetEnd(), Seen: p.GetLastSeen(),
		Owner: wire.WorkloadFromProto(p.GetOwner()), Evidence: index.Evidence(p.GetEvidence())}, nil
}

var statusToProto = [...]sonarv1.LookupStatus{
	index.Unknown:  sonarv1.LookupStatus_LOOKUP_STATUS_UNKNOWN,
	index.Owned:    sonarv1.LookupStatus_LOOKUP_STATUS_OWNER,
	index.Conflict: sonarv1.LookupStatus_LOOKUP_STATUS_CONFLICT,
}

// AnswerToProto converts a lookup's answer for ip.
func AnswerToProto(ip netip.Addr, a index.Answer) *sonarv1.LookupAnswer {
	p := &sonarv1.LookupAnswer{Status: statusToProto[a.Status]}
	if a.Status == index.Owned {
		p.Range = RangeToProto(ip, a.Range)
	}
	for _, r := range a.Conflicting {
		p.Conflicting = append(p.Conflicting, RangeToProto(ip, r))
	}
	return p
}

// AnswerFromProto converts an answer back.
func AnswerFromProto(p *sonarv1.LookupAnswer) (index.Answer, error) {
	var a index.Answer
	switch p.GetStatus() {
	case sonarv1.LookupStatus_LOOKUP_STATUS_UNKNOWN:
		return a, nil
	case sonarv1.LookupStatus_LOOKUP_STATUS_OWNER:
		if p.GetRange() == nil {
			return a, fmt.Errorf("answer OWNER without a range")
		}
		a.Status, a.Range = index.Owned, RangeFromProto(p.GetRange())
	case sonarv1.LookupStatus_LOOKUP_STATUS_CONFLICT:
		a.Status = index.Conflict
		for _, r := range p.GetConflicting() {
			a.Conflicting = append(a.Conflicting, RangeFromProto(r))
		}
	default:
		return a, fmt.Errorf("answer status %v", p.GetStatus())
	}
	return a, nil
}
