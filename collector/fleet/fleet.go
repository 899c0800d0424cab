// Package fleet holds what the fleet-mode outputs share: the payload every enriched-flow message carries
// (on NATS JetStream and on Kafka alike), subject tokens, and the NATS connection they publish through.
// The outputs themselves are natsflows (JetStream), kafkaflows (Kafka) and ownership (the ownership
// stream shared between collector and sonar replicas).
//
// Payload: one flowlens.flow.v1.FlowBatch per message, the schema the exporters already send, with the
// collector's fields remote_workload and attribution set on each FlowRecord. Protobuf over JSON lines
// because the schema, its decoder and its validation exist already (internal/wire), a batch costs about a
// tenth of the bytes of JSON, and the records' workload is written once per message, not per record.
package fleet

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/flowlens/flowlens/internal/flow"
	"github.com/flowlens/flowlens/internal/wire"
	flowv1 "github.com/flowlens/flowlens/proto/flowlens/flow/v1"
)

// Schema names the payload; publishers put it in a message header (SchemaHeader) so consumers can check.
const (
	SchemaHeader = "Flowlens-Schema"
	Schema       = "flowlens.flow.v1.FlowBatch"
)

// Token makes s usable as one NATS subject token: '.', '*', '>' and white space become '_', and the
// empty string is "_".
func Token(s string) string {
	if s == "" {
		return "_"
	}
	if !strings.ContainsAny(s, ".*> \t\r\n\f\v") {
		return s
	}
	return strings.Map(func(r rune) rune {
		switch r {
		case '.', '*', '>', ' ', '\t', '\r', '\n', '\f', '\v':
			return '_'
		}
		return r
	}, s)
}

// Message is one encoded batch, ready to publish.
type Message struct {
	Data    []byte
	ID      string // stable for the same records: the de-duplication key of a retried publish
	Records int
}

// Encode packs recs (all from one exporter) into FlowBatch messages of at most maxBytes each (a single
// record larger than that still gets a message of its own). Records keep their order. The encoding is
// deterministic, so encoding the same records again yields the same messages and IDs: a retried publish
// is recognised as a duplicate. The ID is the exporter id and a hash of the payload and of key (the
// subject or topic key, so the same records sent to two places keep two IDs).
func Encode(exporterID, key string, recs []flow.Enriched, maxBytes int) []Message {
	if len(recs) == 0 {
		return nil
	}
	var out []Message
	for start := 0; start < len(recs); {
		b := newBatch(exporterID, &recs[start])
		size := proto.Size(b)
		n := 0
		for i := start; i < len(recs); i++ {
			p := recordToProto(&recs[i], b.BaseTime, b.Workload)
			rs := proto.Size(p)
			add := 1 + protowire.SizeVarint(uint64(rs)) + rs // tag, length, body
			if n > 0 && size+add > maxBytes {
				break
			}
			b.Records = append(b.Records, p)
			size += add
			n++
		}
		data, err := proto.MarshalOptions{Deterministic: true}.Marshal(b)
		if err != nil { // cannot happen with this schema; keep the records rather than lose them silently
			panic(fmt.Sprintf("fleet: marshal flow batch: %v", err))
		}
		h := sha256.New()
		h.Write([]byte(key))
		h.Write([]byte{0})
		h.Write(data)
		out = append(out, Message{Data: data, ID: exporterID + ":" + hex.EncodeToString(h.Sum(nil)[:16]), Records: n})
		start += n
	}
	return out
}

func newBatch(exporterID string, first *flow.Enriched) *flowv1.FlowBatch {
	return &flowv1.FlowBatch{Version: wire.Version, ExporterId: exporterID, BaseTime: first.EndTime,
		Workload: wire.WorkloadToProto(first.LocalWorkload), Host: first.LocalWorkload.Node}
}

func recordToProto(r *flow.Enriched, base int64, batchWorkload *flowv1.Workload) *flowv1.FlowRecord {
	p := wire.ToProto(&r.Record, base, wire.WorkloadFromProto(batchWorkload))
	if r.RemoteWorkload != (flow.Workload{}) {
		p.RemoteWorkload = wire.WorkloadToProto(r.RemoteWorkload)
	}
	p.Attribution = flowv1.Attribution(r.Attribution)
	return p
}

// Decode reads a message Encode wrote. It fails on bytes that are not a FlowBatch, on a version it does
// not know, and on any invalid record.
func Decode(data []byte) ([]flow.Enriched, error) {
	var b flowv1.FlowBatch
	if err := proto.Unmarshal(data, &b); err != nil {
		return nil, fmt.Errorf("flow batch: %w", err)
	}
	if b.Version != wire.Version {
		return nil, fmt.Errorf("flow batch version %d: this reader knows %d", b.Version, wire.Version)
	}
	out := make([]flow.Enriched, len(b.Records))
	for i, p := range b.Records {
		r, err := wire.FromProto(p, &b)
		if err != nil {
			return nil, fmt.Errorf("record %d: %w", i, err)
		}
		if p.Attribution > flowv1.Attribution_ATTRIBUTION_UNATTRIBUTED {
			return nil, fmt.Errorf("record %d: unknown attribution %d", i, p.Attribution)
		}
		out[i] = flow.Enriched{Record: r, ExporterID: b.ExporterId, Attribution: flow.Attribution(p.Attribution)}
		if p.RemoteWorkload != nil {
			out[i].RemoteWorkload = wire.WorkloadFromProto(p.RemoteWorkload)
		}
	}
	return out, nil
}

// Group is the records of one exporter under one key (a subject or a Kafka key), in input order.
type Group struct {
	Key, Exporter string
	Records       []flow.Enriched
}

// GroupBy splits recs by key(r) and exporter, keeping the first-seen order of groups and the input order
// of records within each.
func GroupBy(recs []flow.Enriched, key func(*flow.Enriched) string) []Group {
	type k struct{ key, exporter string }
	at := map[k]int{}
	var out []Group
	for i := range recs {
		kk := k{key(&recs[i]), recs[i].ExporterID}
		j, ok := at[kk]
		if !ok {
			j = len(out)
			at[kk] = j
			out = append(out, Group{Key: kk.key, Exporter: kk.exporter})
		}
		out[j].Records = append(out[j].Records, recs[i])
	}
	return out
}
