package ingest

import (
	"context"
	"net"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap/zaptest"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/flowlens/flowlens/internal/flow"
	"github.com/flowlens/flowlens/internal/wire"
	flowv1 "github.com/flowlens/flowlens/proto/flowlens/flow/v1"
)

// rawCodec sends bytes as they are, so a test can put anything on a gRPC stream.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) { return *v.(*[]byte), nil }
func (rawCodec) Unmarshal(b []byte, v any) error {
	*v.(*[]byte) = append([]byte(nil), b...)
	return nil
}
func (rawCodec) Name() string { return "proto" } // what the server expects to decode

// TestGRPCBadInput: bytes that are not a batch end the stream with InvalidArgument and are counted; a
// well-formed batch of an unknown version is answered REJECTED on a stream that stays usable.
func TestGRPCBadInput(t *testing.T) {
	reg := prometheus.NewRegistry()
	h := &Handler{Sink: nullSink{}, Dedup: NewDedup(10), Metrics: NewMetrics(reg), Log: zaptest.NewLogger(t)}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := NewGRPCServer(h)
	go srv.Serve(ln)
	defer srv.Stop()
	conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()

	desc := &grpc.StreamDesc{StreamName: "Send", ServerStreams: true, ClientStreams: true}
	stream, err := conn.NewStream(context.Background(), desc, "/flowlens.flow.v1.IngestService/Send", grpc.ForceCodecV2(nil), grpc.ForceCodec(rawCodec{}))
	if err != nil {
		t.Fatal(err)
	}
	garbage := []byte{0xff, 0xff, 0xff, 0x01, 0x02}
	if err := stream.SendMsg(&garbage); err != nil {
		t.Fatal(err)
	}
	var reply []byte
	err = stream.RecvMsg(&reply)
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("garbage on the stream: %v, want InvalidArgument", err)
	}
	if v := testutil.ToFloat64(h.Metrics.Batches.WithLabelValues("grpc", "malformed")); v != 1 {
		t.Errorf("malformed counted %v, want 1", v)
	}

	// A proper client: an unknown version is REJECTED and the same stream then stores a good batch.
	client := flowv1.NewIngestServiceClient(conn)
	s, err := client.Send(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	bad := wire.NewBatch("e", 1, 1, flow.Workload{}, nil)
	bad.Version = 99
	good := wire.NewBatch("e", 2, 1, flow.Workload{}, nil)
	for _, tc := range []struct {
		b    *flowv1.FlowBatch
		want flowv1.AckStatus
	}{{bad, flowv1.AckStatus_ACK_STATUS_REJECTED}, {good, flowv1.AckStatus_ACK_STATUS_STORED}} {
		if err := s.Send(tc.b); err != nil {
			t.Fatal(err)
		}
		ack, err := s.Recv()
		if err != nil || ack.Status != tc.want {
			t.Fatalf("batch %d: ack %v, %v; want %v", tc.b.Seq, ack.GetStatus(), err, tc.want)
		}
	}
}
