package ownership

import (
	"errors"
	"fmt"
	"net/netip"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/flowlens/flowlens/internal/flow"
	"github.com/flowlens/flowlens/internal/wire"
	flowv1 "github.com/flowlens/flowlens/proto/flowlens/flow/v1"
	sonarv1 "github.com/flowlens/flowlens/proto/flowlens/sonar/v1"
	"github.com/flowlens/flowlens/sonar/index"
)

// Message is one encoded report.
type Message struct {
	Data   []byte
	Ranges int
}

// Encode packs claims into ReportRequest messages of at most maxBytes each (a single range larger than
// that still gets one of its own).
func Encode(claims []index.Claim, maxBytes int) []Message {
	var out []Message
	req := &sonarv1.ReportRequest{}
	size := 0
	flush := func() {
		if len(req.Ranges) == 0 {
			return
		}
		b, err := proto.Marshal(req)
		if err != nil { // cannot happen with this schema
			panic(fmt.Sprintf("ownership: marshal report: %v", err))
		}
		out = append(out, Message{b, len(req.Ranges)})
		req, size = &sonarv1.ReportRequest{}, 0
	}
	for _, c := range claims {
		r := &sonarv1.OwnershipRange{Ip: c.IP.Unmap().AsSlice(), Start: c.Start, End: c.End,
			Owner: wire.WorkloadToProto(c.Owner), Evidence: sonarv1.Evidence(c.Evidence), LastSeen: c.Seen}
		n := proto.Size(r)
		add := 1 + protowire.SizeVarint(uint64(n)) + n
		if len(req.Ranges) > 0 && size+add > maxBytes {
			flush()
		}
		req.Ranges = append(req.Ranges, r)
		size += add
	}
	flush()
	return out
}

// Decode reads one ownership message. Every range must be valid for the index: a 4- or 16-byte address,
// start <= end, an owner, and heartbeat, pod, service or node evidence (CIDR tables are not shared this
// way). One bad range fails the whole message: its writer is broken, and half of its claims are no
// better than none.
func Decode(data []byte) ([]index.Claim, error) {
	var req sonarv1.ReportRequest
	if err := proto.Unmarshal(data, &req); err != nil {
		return nil, fmt.Errorf("ownership report: %w", err)
	}
	if len(req.Ranges) == 0 {
		return nil, errors.New("ownership report without ranges")
	}
	out := make([]index.Claim, len(req.Ranges))
	for i, r := range req.Ranges {
		ip, ok := netip.AddrFromSlice(r.GetIp())
		switch {
		case !ok:
			return nil, fmt.Errorf("range %d: ip of %d bytes, want 4 or 16", i, len(r.GetIp()))
		case r.GetStart() > r.GetEnd():
			return nil, fmt.Errorf("range %d: start %d after end %d", i, r.GetStart(), r.GetEnd())
		case r.GetEvidence() < sonarv1.Evidence_EVIDENCE_HEARTBEAT || r.GetEvidence() > sonarv1.Evidence_EVIDENCE_NODE:
			return nil, fmt.Errorf("range %d: evidence %d not shared", i, r.GetEvidence())
		case r.GetOwner() == nil || proto.Equal(r.GetOwner(), &flowv1.Workload{}):
			return nil, fmt.Errorf("range %d: no owner", i)
		}
		out[i] = index.Claim{IP: ip.Unmap(), Start: r.GetStart(), End: r.GetEnd(), Owner: wire.WorkloadFromProto(r.GetOwner()),
			Evidence: index.Evidence(r.GetEvidence()), Seen: r.GetLastSeen()}
	}
	return out, nil
}

// valid says whether the index would take c (index.Add refuses the rest silently).
func valid(c *index.Claim) bool {
	return c.IP.IsValid() && c.Start <= c.End && c.Evidence > index.EvidenceNone && c.Evidence < index.EvidenceCIDR &&
		c.Owner != (flow.Workload{})
}
