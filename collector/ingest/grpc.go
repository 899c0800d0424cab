package ingest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/stats"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/flowlens/flowlens/internal/wire"
	flowv1 "github.com/flowlens/flowlens/proto/flowlens/flow/v1"
)

// Metrics are what every listener counts.
type Metrics struct {
	Batches *prometheus.CounterVec // by transport and outcome: stored, duplicate, rejected, retry, error
	Records *prometheus.CounterVec // stored records by transport
}

// NewMetrics registers the ingest metrics on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Batches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flowlens_collector_ingest_batches_total", Help: "Batches received, by transport and outcome.",
		}, []string{"transport", "outcome"}),
		Records: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flowlens_collector_ingest_records_total", Help: "Records stored, by transport.",
		}, []string{"transport"}),
	}
	reg.MustRegister(m.Batches, m.Records)
	return m
}

// Handler decodes, de-duplicates and stores batches for every transport.
type Handler struct {
	Sink    Sink
	Dedup   *Dedup
	Metrics *Metrics
	Log     *zap.Logger
	// Prefer, when set, is sent in every ack as the transport exporters should use (grpc, https or udp):
	// how an operator steers a fleet from the collector.
	Prefer string
}

// Handle takes one wire batch that arrived over transport now and says what to answer.
func (h *Handler) Handle(ctx context.Context, transport string, b *flowv1.FlowBatch) *flowv1.BatchAck {
	return h.HandleArrival(ctx, Arrival{Transport: transport, Bytes: proto.Size(b), At: time.Now()}, b)
}

// HandleArrival takes one wire batch that arrived as a says and says what to answer.
func (h *Handler) HandleArrival(ctx context.Context, a Arrival, b *flowv1.FlowBatch) *flowv1.BatchAck {
	transport := a.Transport
	ack := &flowv1.BatchAck{Seq: b.GetSeq(), PreferredTransport: h.Prefer}
	outcome := func(s flowv1.AckStatus, name, msg string) *flowv1.BatchAck {
		h.Metrics.Batches.WithLabelValues(transport, name).Inc()
		ack.Status, ack.Message = s, msg
		return ack
	}
	records, err := wire.Records(b)
	if err != nil {
		h.Log.Warn("batch rejected", zap.String("transport", transport), zap.String("exporter", b.GetExporterId()), zap.Error(err))
		return outcome(flowv1.AckStatus_ACK_STATUS_REJECTED, "rejected", err.Error())
	}
	switch h.Dedup.Claim(b.ExporterId, b.Seq) {
	case Stored:
		return outcome(flowv1.AckStatus_ACK_STATUS_DUPLICATE, "duplicate", "")
	case InFlight:
		// Not DUPLICATE: the store in progress may yet fail, and then only this resend would carry it.
		return outcome(flowv1.AckStatus_ACK_STATUS_RETRY, "in_flight", "the same batch is being stored")
	}
	err = h.put(ctx, newBatch(b, records, a))
	switch {
	case err == nil:
		h.Metrics.Records.WithLabelValues(transport).Add(float64(len(records)))
		return outcome(flowv1.AckStatus_ACK_STATUS_STORED, "stored", "")
	case errors.Is(err, ErrFull):
		return outcome(flowv1.AckStatus_ACK_STATUS_RETRY, "retry", err.Error())
	default:
		h.Log.Error("store batch", zap.Error(err))
		return outcome(flowv1.AckStatus_ACK_STATUS_RETRY, "error", "store failed")
	}
}

// put stores a claimed batch and always ends the claim, even if the sink panics: a claim left held would
// answer every resend "in flight" forever, and a panic must not take a server goroutine down.
func (h *Handler) put(ctx context.Context, b *Batch) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("sink panicked: %v", r)
		}
		h.Dedup.Done(b.ExporterID, b.Seq, err == nil)
	}()
	return h.Sink.Put(ctx, b)
}

// Store decodes b and hands it to the sink without claiming it: for UDP, which is at most once and whose
// datagrams carry parts of one batch under one sequence number, so a claim would refuse the later parts.
// A batch already stored over an acked transport is counted as a duplicate and not stored again. It
// returns the records stored.
func (h *Handler) Store(ctx context.Context, a Arrival, b *flowv1.FlowBatch) (int, error) {
	transport := a.Transport
	records, err := wire.Records(b)
	if err != nil {
		h.Metrics.Batches.WithLabelValues(transport, "rejected").Inc()
		return 0, err
	}
	if h.Dedup.IsStored(b.ExporterId, b.Seq) {
		// Stored before over an acked transport (a resend after a lost ack, on UDP now): count, do not store.
		h.Metrics.Batches.WithLabelValues(transport, "duplicate").Inc()
		return 0, nil
	}
	if err := h.Sink.Put(ctx, newBatch(b, records, a)); err != nil {
		h.Metrics.Batches.WithLabelValues(transport, "error").Inc()
		return 0, err
	}
	h.Metrics.Batches.WithLabelValues(transport, "stored").Inc()
	h.Metrics.Records.WithLabelValues(transport).Add(float64(len(records)))
	return len(records), nil
}

// GRPC serves flowlens.flow.v1.IngestService. A batch that is well-formed protobuf but wrong (unknown
// version, bad address) is answered REJECTED on the stream, which stays open; bytes that are not a batch
// at all end the stream with InvalidArgument. grpc-go answers a message it cannot decode with Internal and
// no say for the handler, so the service receives raw bytes (Register, Codec) and decodes them itself.
type GRPC struct {
	H *Handler
}

// Register adds the service to srv, which must have been made with grpc.ForceServerCodecV2(Codec{}).
func (g *GRPC) Register(srv *grpc.Server) {
	srv.RegisterService(&grpc.ServiceDesc{
		ServiceName: "flowlens.flow.v1.IngestService",
		HandlerType: (*any)(nil),
		Streams: []grpc.StreamDesc{{
			StreamName:    "Send",
			Handler:       func(_ any, stream grpc.ServerStream) error { return g.send(stream) },
			ServerStreams: true,
			ClientStreams: true,
		}},
		Metadata: "flowlens/flow/v1/flow.proto",
	}, g)
}

// NewGRPCServer makes a gRPC server with opts serving the ingest service.
func NewGRPCServer(h *Handler, opts ...grpc.ServerOption) *grpc.Server {
	srv := grpc.NewServer(append(opts, grpc.ForceServerCodecV2(Codec{}), grpc.StatsHandler(wireSizes{}))...)
	(&GRPC{H: h}).Register(srv)
	return srv
}

// send is IngestService.Send: one ack per batch, in order.
func (g *GRPC) send(stream grpc.ServerStream) error {
	for {
		var raw mem.BufferSlice
		err := stream.RecvMsg(&raw)
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		var b flowv1.FlowBatch
		size := raw.Len()
		if ws, ok := stream.Context().Value(wireSizeKey{}).(*atomic.Int64); ok {
			size = int(ws.Load()) // as it came, compressed: what the stats handler was told by RecvMsg
		}
		err = proto.Unmarshal(raw.Materialize(), &b)
		raw.Free()
		if err != nil {
			g.H.Metrics.Batches.WithLabelValues("grpc", "malformed").Inc()
			return status.Errorf(codes.InvalidArgument, "malformed batch: %v", err)
		}
		a := Arrival{Transport: "grpc", Bytes: size, At: time.Now()}
		if err := stream.SendMsg(g.H.HandleArrival(stream.Context(), a, &b)); err != nil {
			return err
		}
	}
}

// wireSizes keeps, per stream, the size of the message received last as it came over the wire
// (compressed, with gRPC's framing): grpc-go tells it to stats handlers only, and the codec sees the
// message decompressed. RecvMsg reports it before it returns, on the stream's own goroutine.
type wireSizes struct{}

type wireSizeKey struct{}

func (wireSizes) TagRPC(ctx context.Context, _ *stats.RPCTagInfo) context.Context {
	return context.WithValue(ctx, wireSizeKey{}, new(atomic.Int64))
}

func (wireSizes) HandleRPC(ctx context.Context, s stats.RPCStats) {
	if in, ok := s.(*stats.InPayload); ok {
		if ws, ok := ctx.Value(wireSizeKey{}).(*atomic.Int64); ok {
			ws.Store(int64(in.WireLength))
		}
	}
}

func (wireSizes) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context { return ctx }

func (wireSizes) HandleConn(context.Context, stats.ConnStats) {}

// Codec is the ingest server's codec: requests arrive as raw bytes, for the service to decode; replies
// are protobuf messages.
type Codec struct{}

// Name is "proto": on the wire nothing differs from the usual codec.
func (Codec) Name() string { return "proto" }

// Marshal encodes a reply.
func (Codec) Marshal(v any) (mem.BufferSlice, error) {
	m, ok := v.(proto.Message)
	if !ok {
		return nil, fmt.Errorf("ingest codec: cannot marshal %T", v)
	}
	b, err := proto.Marshal(m)
	if err != nil {
		return nil, err
	}
	return mem.BufferSlice{mem.SliceBuffer(b)}, nil
}

// Unmarshal hands the request's bytes over undecoded; the service takes ownership.
func (Codec) Unmarshal(data mem.BufferSlice, v any) error {
	dst, ok := v.(*mem.BufferSlice)
	if !ok {
		return fmt.Errorf("ingest codec: cannot unmarshal into %T", v)
	}
	data.Ref()
	*dst = data
	return nil
}
