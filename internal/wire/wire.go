// Package wire converts flow records to and from the wire schema (proto/flowlens/flow/v1). The exporter
// and the collector both use it, so the mapping is written once.
package wire

import (
	"fmt"
	"net/netip"

	"github.com/flowlens/flowlens/internal/flow"
	flowv1 "github.com/flowlens/flowlens/proto/flowlens/flow/v1"
)

// Version is the FlowBatch schema version this code writes and reads.
const Version = 1

// ToProto converts r for a batch whose base_time is base. Its local workload is sent only when it differs
// from the batch's own (batchWorkload).
func ToProto(r *flow.Record, base int64, batchWorkload flow.Workload) *flowv1.FlowRecord {
	p := &flowv1.FlowRecord{
		LocalAddr:     r.LocalAddr.AsSlice(),
		LocalPort:     uint32(r.LocalPort),
		RemoteAddr:    r.RemoteAddr.AsSlice(),
		RemotePort:    uint32(r.RemotePort),
		Role:          flowv1.Role(r.Role),
		EndOffsetNs:   r.EndTime - base,
		BytesSent:     r.BytesSent,
		BytesReceived: r.BytesReceived,
		SegsSent:      r.SegsSent,
		SegsReceived:  r.SegsReceived,
		Retransmits:   r.Retransmits,
		SrttUs:        r.SrttUs,
		RttVarUs:      r.RttVarUs,
		MinRttUs:      r.MinRttUs,
		Close:         flowv1.Close(r.Close + 1), // flow.Close starts at ACTIVE; the wire keeps 0 for unset
		Error:         r.Error,
		Pid:           r.Pid,
		Comm:          r.Comm,
		Netns:         r.Netns,
		CgroupId:      r.CgroupID,
		Preexisting:   r.Preexisting,
	}
	if !r.Preexisting {
		p.DurationNs = uint64(r.EndTime - r.StartTime)
	}
	if r.LocalWorkload != batchWorkload {
		p.LocalWorkload = WorkloadToProto(r.LocalWorkload)
	}
	return p
}

// FromProto converts a wire record of batch b back; it fails on addresses of the wrong length and on
// enum values this version does not know.
func FromProto(p *flowv1.FlowRecord, b *flowv1.FlowBatch) (flow.Record, error) {
	local, ok := netip.AddrFromSlice(p.LocalAddr)
	if !ok {
		return flow.Record{}, fmt.Errorf("local_addr: %d bytes, want 4 or 16", len(p.LocalAddr))
	}
	remote, ok := netip.AddrFromSlice(p.RemoteAddr)
	if !ok {
		return flow.Record{}, fmt.Errorf("remote_addr: %d bytes, want 4 or 16", len(p.RemoteAddr))
	}
	if p.LocalPort > 65535 || p.RemotePort > 65535 {
		return flow.Record{}, fmt.Errorf("port %d/%d out of range", p.LocalPort, p.RemotePort)
	}
	if p.Role > flowv1.Role_ROLE_SERVER {
		return flow.Record{}, fmt.Errorf("unknown role %d", p.Role)
	}
	if p.Close == flowv1.Close_CLOSE_UNSPECIFIED || p.Close > flowv1.Close_CLOSE_TIMEOUT {
		return flow.Record{}, fmt.Errorf("unknown close reason %d", p.Close)
	}
	r := flow.Record{
		LocalAddr:     local,
		LocalPort:     uint16(p.LocalPort),
		RemoteAddr:    remote,
		RemotePort:    uint16(p.RemotePort),
		Role:          flow.Role(p.Role),
		EndTime:       b.BaseTime + p.EndOffsetNs,
		BytesSent:     p.BytesSent,
		BytesReceived: p.BytesReceived,
		SegsSent:      p.SegsSent,
		SegsReceived:  p.SegsReceived,
		Retransmits:   p.Retransmits,
		SrttUs:        p.SrttUs,
		RttVarUs:      p.RttVarUs,
		MinRttUs:      p.MinRttUs,
		Close:         flow.Close(p.Close - 1),
		Error:         p.Error,
		Pid:           p.Pid,
		Comm:          p.Comm,
		Netns:         p.Netns,
		CgroupID:      p.CgroupId,
		Preexisting:   p.Preexisting,
		LocalWorkload: WorkloadFromProto(b.Workload),
	}
	if !p.Preexisting {
		r.StartTime = r.EndTime - int64(p.DurationNs)
	}
	if p.LocalWorkload != nil {
		r.LocalWorkload = WorkloadFromProto(p.LocalWorkload)
	}
	return r, nil
}

// WorkloadToProto converts a workload identity.
func WorkloadToProto(w flow.Workload) *flowv1.Workload {
	return &flowv1.Workload{Name: w.Name, Namespace: w.Namespace, Pod: w.Pod, PodUid: w.PodUID, Node: w.Node, Cluster: w.Cluster}
}

// WorkloadFromProto converts a workload identity; nil is the empty one.
func WorkloadFromProto(w *flowv1.Workload) flow.Workload {
	return flow.Workload{Name: w.GetName(), Namespace: w.GetNamespace(), Pod: w.GetPod(), PodUID: w.GetPodUid(),
		Node: w.GetNode(), Cluster: w.GetCluster()}
}

// NewBatch builds the batch of records for exporter id with sequence number seq, sent at now. The base
// time is the first record's end, so offsets stay small.
func NewBatch(id string, seq uint64, now int64, workload flow.Workload, records []flow.Record) *flowv1.FlowBatch {
	b := &flowv1.FlowBatch{Version: Version, ExporterId: id, Seq: seq, SendTime: now, Workload: WorkloadToProto(workload),
		Host: workload.Node, Records: make([]*flowv1.FlowRecord, len(records))}
	if len(records) > 0 {
		b.BaseTime = records[0].EndTime
	}
	for i := range records {
		b.Records[i] = ToProto(&records[i], b.BaseTime, workload)
	}
	return b
}

// Records decodes every record of b; the first bad one fails the whole batch, which is then refused.
func Records(b *flowv1.FlowBatch) ([]flow.Record, error) {
	if b.Version != Version {
		return nil, fmt.Errorf("batch version %d: this collector reads version %d", b.Version, Version)
	}
	if b.ExporterId == "" || b.Seq == 0 {
		return nil, fmt.Errorf("batch without exporter_id or seq")
	}
	out := make([]flow.Record, len(b.Records))
	for i, p := range b.Records {
		r, err := FromProto(p, b)
		if err != nil {
			return nil, fmt.Errorf("record %d: %w", i, err)
		}
		out[i] = r
	}
	return out, nil
}
