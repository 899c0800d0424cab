// Package client is a gRPC client of sonar with the lookup shape the collector uses in process, so a
// collector can attribute against a remote sonar.
package client

import (
	"context"
	"fmt"
	"net/netip"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	sonarv1 "github.com/flowlens/flowlens/proto/flowlens/sonar/v1"
	"github.com/flowlens/flowlens/sonar/api"
	"github.com/flowlens/flowlens/sonar/index"
)

// Client talks to one sonar. It is safe for concurrent use.
type Client struct {
	conn *grpc.ClientConn // nil when built with New
	cc   grpc.ClientConnInterface
	c    sonarv1.SonarServiceClient
}

// Dial connects to sonar's gRPC address. Without options it uses plaintext (sonar's default listener
// is loopback); pass grpc.WithTransportCredentials for TLS. The connection is made lazily.
func Dial(target string, opts ...grpc.DialOption) (*Client, error) {
	if len(opts) == 0 {
		opts = []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	}
	conn, err := grpc.NewClient(target, opts...)
	if err != nil {
		return nil, fmt.Errorf("sonar client %s: %w", target, err)
	}
	return &Client{conn: conn, cc: conn, c: sonarv1.NewSonarServiceClient(conn)}, nil
}

// New uses a connection the caller owns (Close does not close it).
func New(conn grpc.ClientConnInterface) *Client {
	return &Client{cc: conn, c: sonarv1.NewSonarServiceClient(conn)}
}

// Close closes the connection Dial made.
func (c *Client) Close() error {
	if c.conn == nil {
		return nil
	}
	return c.conn.Close()
}

// Query is one lookup: who owned IP at At (Unix nanoseconds).
type Query struct {
	IP netip.Addr
	At int64
}

// Lookup answers who owned ip at t.
func (c *Client) Lookup(ctx context.Context, ip netip.Addr, t int64) (index.Answer, error) {
	as, err := c.LookupBatch(ctx, []Query{{IP: ip, At: t}})
	if err != nil {
		return index.Answer{}, err
	}
	return as[0], nil
}

// LookupBatch answers the queries in order, in requests of at most api.MaxBatch.
func (c *Client) LookupBatch(ctx context.Context, qs []Query) ([]index.Answer, error) {
	answers := make([]index.Answer, 0, len(qs))
	for len(qs) > 0 {
		n := min(len(qs), api.MaxBatch)
		req := &sonarv1.LookupRequest{Queries: make([]*sonarv1.LookupQuery, n)}
		for i, q := range qs[:n] {
			req.Queries[i] = &sonarv1.LookupQuery{Ip: api.AddrBytes(q.IP), Time: q.At}
		}
		var resp rawResponse
		if err := c.cc.Invoke(ctx, sonarv1.SonarService_Lookup_FullMethodName, req, &resp, grpc.ForceCodec(rawCodec{})); err != nil {
			return nil, fmt.Errorf("sonar lookup: %w", err)
		}
		as, err := decodeAnswers(resp.b, n)
		if err != nil {
			return nil, fmt.Errorf("sonar lookup: %w", err)
		}
		if len(as) != n {
			return nil, fmt.Errorf("sonar lookup: %d answers to %d queries", len(as), n)
		}
		answers = append(answers, as...)
		qs = qs[n:]
	}
	return answers, nil
}

// Report sends claims (in requests of at most api.MaxReport) and returns how many overlapped a
// different owner. When it returns nil, sonar has them durably.
func (c *Client) Report(ctx context.Context, claims []index.Claim) (conflicts int, err error) {
	for len(claims) > 0 {
		n := min(len(claims), api.MaxReport)
		req := &sonarv1.ReportRequest{Ranges: make([]*sonarv1.OwnershipRange, n)}
		for i, cl := range claims[:n] {
			req.Ranges[i] = api.ClaimToProto(cl)
		}
		resp, err := c.c.Report(ctx, req)
		if err != nil {
			return conflicts, fmt.Errorf("sonar report: %w", err)
		}
		conflicts += int(resp.GetConflicts())
		claims = claims[n:]
	}
	return conflicts, nil
}

// Ranges lists the ranges sonar holds for ip and, apart, the parts of claims that conflicted with a
// different owner, each sorted by start.
func (c *Client) Ranges(ctx context.Context, ip netip.Addr) (ranges, conflicts []index.Range, err error) {
	resp, err := c.c.ListRanges(ctx, &sonarv1.ListRangesRequest{Ip: api.AddrBytes(ip)})
	if err != nil {
		return nil, nil, fmt.Errorf("sonar ranges: %w", err)
	}
	for _, p := range resp.GetRanges() {
		ranges = append(ranges, api.RangeFromProto(p))
	}
	for _, p := range resp.GetConflicts() {
		conflicts = append(conflicts, api.RangeFromProto(p))
	}
	return ranges, conflicts, nil
}

// Lookuper adapts a Client to the collector's in-process shape, Lookup(ip, t) index.Answer. A lookup
// that fails (sonar unreachable, deadline) answers Unknown, never a guess: the collector parks the flow
// and retries as it does for an address nobody has claimed yet. Failures are counted.
type Lookuper struct {
	c       *Client
	timeout time.Duration
	errors  atomic.Int64
}

// Lookuper returns the adapter; each lookup waits at most timeout.
func (c *Client) Lookuper(timeout time.Duration) *Lookuper { return &Lookuper{c: c, timeout: timeout} }

// Lookup answers who owned ip at t, or Unknown if sonar could not be asked.
func (l *Lookuper) Lookup(ip netip.Addr, t int64) index.Answer {
	ctx, cancel := context.WithTimeout(context.Background(), l.timeout)
	defer cancel()
	a, err := l.c.Lookup(ctx, ip, t)
	if err != nil {
		l.errors.Add(1)
		return index.Answer{}
	}
	return a
}

// LookupBatch answers every query in as few calls as sonar's batch limit allows, each call waiting at
// most the timeout (a long list is many calls, not one deadline for all); the queries of a call that
// failed are answered Unknown.
func (l *Lookuper) LookupBatch(qs []Query) []index.Answer {
	out := make([]index.Answer, 0, len(qs))
	for len(qs) > 0 {
		n := min(len(qs), api.MaxBatch)
		ctx, cancel := context.WithTimeout(context.Background(), l.timeout)
		as, err := l.c.LookupBatch(ctx, qs[:n])
		cancel()
		if err != nil {
			l.errors.Add(1)
			as = make([]index.Answer, n)
		}
		out = append(out, as...)
		qs = qs[n:]
	}
	return out
}

// Errors is how many lookups failed.
func (l *Lookuper) Errors() int64 { return l.errors.Load() }
