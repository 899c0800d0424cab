package api

import (
	"context"
	"fmt"

	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	sonarv1 "github.com/flowlens/flowlens/proto/flowlens/sonar/v1"
	"github.com/flowlens/flowlens/sonar/index"
)

// GRPC is the SonarService on an index.
type GRPC struct {
	sonarv1.UnimplementedSonarServiceServer
	s *service
}

// NewGRPC returns the SonarService on idx; Register it on a *grpc.Server.
func NewGRPC(idx *index.Index, log *zap.Logger, opts ...Option) *GRPC {
	return &GRPC{s: newService(idx, log, opts)}
}

// Register registers the service on srv.
func (g *GRPC) Register(srv grpc.ServiceRegistrar) { sonarv1.RegisterSonarServiceServer(srv, g) }

// Report adds the ranges as claims once they are durable. The request is checked whole first: one bad
// range refuses it all (InvalidArgument), so a caller never has to guess which ranges got in.
func (g *GRPC) Report(_ context.Context, req *sonarv1.ReportRequest) (*sonarv1.ReportResponse, error) {
	rs := req.GetRanges()
	if len(rs) == 0 {
		return nil, g.refuse("empty", "ranges: empty report")
	}
	if len(rs) > MaxReport {
		return nil, g.refuse("too_large", "ranges: %d in one report, at most %d", len(rs), MaxReport)
	}
	claims := make([]index.Claim, len(rs))
	for i, r := range rs {
		c, err := ClaimFromProto(r)
		if err != nil {
			return nil, g.refuse("bad_range", "range %d: %v", i, err)
		}
		claims[i] = c
	}
	conflicts, err := g.s.report(claims)
	if err != nil {
		g.s.log.Error("report not durable", zap.Error(err))
		return nil, status.Errorf(codes.Unavailable, "journal: %v", err)
	}
	return &sonarv1.ReportResponse{Accepted: uint32(len(claims)), Conflicts: uint32(conflicts)}, nil
}

// Lookup answers 1..MaxBatch queries in order.
func (g *GRPC) Lookup(_ context.Context, req *sonarv1.LookupRequest) (*sonarv1.LookupResponse, error) {
	qs := req.GetQueries()
	if len(qs) == 0 {
		return nil, g.refuse("empty", "queries: empty batch")
	}
	if len(qs) > MaxBatch {
		return nil, g.refuse("too_large", "queries: %d in one batch, at most %d", len(qs), MaxBatch)
	}
	queries := make([]query, len(qs))
	for i, q := range qs {
		ip, err := AddrFromBytes(q.GetIp())
		if err != nil {
			return nil, g.refuse("bad_query", "query %d: %v", i, err)
		}
		queries[i] = query{ip: ip, at: q.GetTime()}
	}
	answers := g.s.lookupAll(queries)
	// The answers go as the response's unknown fields, encoded by hand (encode.go): the same bytes
	// proto.Marshal would write for Answers, without a message per answer.
	resp := &sonarv1.LookupResponse{}
	resp.ProtoReflect().SetUnknown(encodeAnswers(queries, answers))
	return resp, nil
}

// ListRanges lists the ranges held for an address and, apart, the parts of claims that conflicted,
// each sorted by start.
func (g *GRPC) ListRanges(_ context.Context, req *sonarv1.ListRangesRequest) (*sonarv1.ListRangesResponse, error) {
	ip, err := AddrFromBytes(req.GetIp())
	if err != nil {
		return nil, g.refuse("bad_query", "%v", err)
	}
	ranges, conflicts := g.s.idx.Ranges(ip)
	resp := &sonarv1.ListRangesResponse{}
	for _, r := range ranges {
		resp.Ranges = append(resp.Ranges, RangeToProto(ip, r))
	}
	for _, r := range conflicts {
		resp.Conflicts = append(resp.Conflicts, RangeToProto(ip, r))
	}
	return resp, nil
}

func (g *GRPC) refuse(reason, format string, args ...any) error {
	g.s.metrics.refused.WithLabelValues(reason).Inc()
	return status.Error(codes.InvalidArgument, fmt.Sprintf(format, args...))
}
