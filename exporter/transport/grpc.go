package transport

import (
	"context"
	"fmt"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/flowlens/flowlens/internal/grpczstd"
	flowv1 "github.com/flowlens/flowlens/proto/flowlens/flow/v1"
)

// GRPC sends batches on one IngestService.Send stream, one batch in flight at a time, and waits for its
// ack. Any error or a missed deadline resets the stream; the next Send opens a new one, so a restarted
// collector is reached again without a restart of ours.
type GRPC struct {
	conn   *grpc.ClientConn
	client flowv1.IngestServiceClient
	s      *stream
	hint   string
}

// stream is one open Send stream and the goroutine that reads its acks.
type stream struct {
	send   flowv1.IngestService_SendClient
	cancel context.CancelFunc
	acks   chan *flowv1.BatchAck
	err    chan error // the reader's final error; closed with acks
}

// NewGRPC prepares a client for addr; it connects lazily, on the first Send. Batches are zstd-compressed.
func NewGRPC(addr string, creds credentials.TransportCredentials) (*GRPC, error) {
	grpczstd.Register()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds),
		grpc.WithDefaultCallOptions(grpc.UseCompressor(grpczstd.Name)))
	if err != nil {
		return nil, fmt.Errorf("grpc client for %s: %w", addr, err)
	}
	return &GRPC{conn: conn, client: flowv1.NewIngestServiceClient(conn)}, nil
}

// Name is "grpc".
func (g *GRPC) Name() string { return "grpc" }

// Send sends b and waits for its ack until ctx ends. The stream outlives one Send, so it is not opened
// with ctx; instead ctx's end cancels the stream, which unblocks a connect to an unreachable collector and a
// write stuck on flow control toward one that stopped reading.
func (g *GRPC) Send(ctx context.Context, b *flowv1.FlowBatch) (flowv1.AckStatus, error) {
	if g.s == nil {
		if err := g.open(ctx); err != nil {
			return 0, err
		}
	}
	s := g.s
	stop := context.AfterFunc(ctx, s.cancel)
	defer stop()
	if err := s.send.Send(b); err != nil {
		return 0, g.fail(fmt.Errorf("send batch %d: %w", b.Seq, err))
	}
	select {
	case ack, ok := <-s.acks:
		if !ok {
			return 0, g.fail(fmt.Errorf("stream closed before the ack of batch %d: %w", b.Seq, <-s.err))
		}
		if ack.Seq != b.Seq {
			return 0, g.fail(fmt.Errorf("ack for batch %d while waiting for %d", ack.Seq, b.Seq))
		}
		g.hint = ack.PreferredTransport
		return ack.Status, nil
	case <-ctx.Done():
		return 0, g.fail(fmt.Errorf("ack of batch %d: %w", b.Seq, ctx.Err()))
	}
}

// open starts a stream; ctx bounds only the opening.
func (g *GRPC) open(ctx context.Context) error {
	sctx, cancel := context.WithCancel(context.Background())
	stop := context.AfterFunc(ctx, cancel)
	send, err := g.client.Send(sctx)
	if !stop() {
		err = fmt.Errorf("%w (%w)", ctx.Err(), context.Cause(sctx))
	}
	if err != nil {
		cancel()
		return fmt.Errorf("open ingest stream: %w", err)
	}
	s := &stream{send: send, cancel: cancel, acks: make(chan *flowv1.BatchAck, 1), err: make(chan error, 1)}
	go func() {
		defer close(s.acks)
		for {
			ack, err := send.Recv()
			if err != nil {
				s.err <- err
				return
			}
			s.acks <- ack // at most one batch is in flight, so this never waits for long
		}
	}()
	g.s = s
	return nil
}

// fail tears the stream down, waits for its reader to end, and returns err.
func (g *GRPC) fail(err error) error {
	if g.s != nil {
		g.s.cancel()
		for range g.s.acks {
		}
		g.s = nil
	}
	return err
}

// Hint is the transport the collector said it prefers in its latest ack.
func (g *GRPC) Hint() string { return g.hint }

// Close ends the stream and the connection.
func (g *GRPC) Close() error {
	if g.s != nil {
		g.s.send.CloseSend()
		g.fail(nil)
	}
	return g.conn.Close()
}
