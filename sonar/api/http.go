package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"strconv"
	"strings"

	"go.uber.org/zap"

	"github.com/flowlens/flowlens/internal/flow"
	"github.com/flowlens/flowlens/internal/timeparam"
	"github.com/flowlens/flowlens/sonar/index"
)

// maxBody bounds a POST body: MaxBatch queries of about 60 bytes each, with room for long RFC 3339
// times and whitespace.
const maxBody = 2 << 20

// RangeJSON is a range as the HTTP API writes it. Times are Unix nanoseconds; a CIDR entry spans
// every time (start and end are the smallest and largest int64).
type RangeJSON struct {
	Start    int64         `json:"start"`
	End      int64         `json:"end"`
	LastSeen int64         `json:"last_seen"`
	Owner    flow.Workload `json:"owner"`
	Evidence string        `json:"evidence"` // HEARTBEAT, POD_EVENT, SERVICE, NODE or CIDR
}

// AnswerJSON is one lookup's answer: Range is present when Status is OWNER, Conflicting when it is
// CONFLICT.
type AnswerJSON struct {
	IP          string      `json:"ip"`
	At          int64       `json:"at"`     // Unix nanoseconds
	Status      string      `json:"status"` // OWNER, UNKNOWN or CONFLICT
	Range       *RangeJSON  `json:"range,omitempty"`
	Conflicting []RangeJSON `json:"conflicting,omitempty"`
}

// QueryJSON is one query of a batch: at is RFC 3339, Unix nanoseconds (number or string), a duration
// relative to now such as "-5m", or absent for now.
type QueryJSON struct {
	IP string          `json:"ip"`
	At json.RawMessage `json:"at,omitempty"`
}

// BatchRequest is POST /api/v1/lookup's body; BatchResponse answers the queries in order.
type BatchRequest struct {
	Queries []QueryJSON `json:"queries"`
}
type BatchResponse struct {
	Answers []AnswerJSON `json:"answers"`
}

// RangesJSON is GET /api/v1/ranges's answer: the ranges held for ip sorted by start, and the parts of
// claims that conflicted with a different owner.
type RangesJSON struct {
	IP        string      `json:"ip"`
	Ranges    []RangeJSON `json:"ranges"`
	Conflicts []RangeJSON `json:"conflicts"`
}

// ErrorJSON is the body of every 4xx answer.
type ErrorJSON struct {
	Error string `json:"error"`
}

// NewHTTP returns the HTTP/JSON API on idx:
//
//	GET  /api/v1/lookup?ip=10.0.0.5&at=<RFC 3339 | unix ns | -5m>  → AnswerJSON
//	POST /api/v1/lookup {"queries":[{"ip":..,"at":..}]}             → BatchResponse (1..MaxBatch queries)
//	GET  /api/v1/ranges?ip=10.0.0.5                                 → RangesJSON
//
// Bad input is answered 400 with an ErrorJSON saying what is wrong; a body over 2 MiB 413.
func NewHTTP(idx *index.Index, log *zap.Logger, opts ...Option) http.Handler {
	s := newService(idx, log, opts)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/v1/lookup", s.httpLookup)
	mux.HandleFunc("POST /api/v1/lookup", s.httpBatch)
	mux.HandleFunc("GET /api/v1/ranges", s.httpRanges)
	return mux
}

type query struct {
	ip netip.Addr
	at int64
}

func (s *service) httpLookup(w http.ResponseWriter, r *http.Request) {
	v := r.URL.Query()
	q, err := s.parseQuery(v.Get("ip"), v.Get("at"))
	if err != nil {
		s.badRequest(w, "bad_query", http.StatusBadRequest, err)
		return
	}
	writeJSON(w, answerJSON(q, s.lookup(q)))
}

func (s *service) httpBatch(w http.ResponseWriter, r *http.Request) {
	queries, err := s.decodeBatch(http.MaxBytesReader(w, r.Body, maxBody))
	if err != nil {
		code, reason := http.StatusBadRequest, "bad_batch"
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			code, reason = http.StatusRequestEntityTooLarge, "too_large"
		}
		s.badRequest(w, reason, code, err)
		return
	}
	resp := BatchResponse{Answers: make([]AnswerJSON, len(queries))}
	for i, a := range s.lookupAll(queries) {
		resp.Answers[i] = answerJSON(queries[i], a)
	}
	writeJSON(w, resp)
}

// decodeBatch reads and checks a batch: one JSON object, 1..MaxBatch queries, each valid.
func (s *service) decodeBatch(body interface{ Read([]byte) (int, error) }) ([]query, error) {
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	var req BatchRequest
	if err := dec.Decode(&req); err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			return nil, err
		}
		return nil, fmt.Errorf("body: %w", err)
	}
	if dec.More() {
		return nil, errors.New("body: more than one JSON value")
	}
	switch n := len(req.Queries); {
	case n == 0:
		return nil, errors.New("queries: empty batch")
	case n > MaxBatch:
		return nil, fmt.Errorf("queries: %d in one batch, at most %d", n, MaxBatch)
	}
	queries := make([]query, len(req.Queries))
	for i, qj := range req.Queries {
		at, err := atText(qj.At)
		if err != nil {
			return nil, fmt.Errorf("query %d: %w", i, err)
		}
		if queries[i], err = s.parseQuery(qj.IP, at); err != nil {
			return nil, fmt.Errorf("query %d: %w", i, err)
		}
	}
	return queries, nil
}

// atText turns a JSON time (number, string or absent) into the text parseAt reads.
func atText(raw json.RawMessage) (string, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return "", nil
	}
	if raw[0] == '"' {
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return "", fmt.Errorf("at: %w", err)
		}
		if s == "" {
			return "", errors.New(`at: empty string (omit "at" for now)`)
		}
		return s, nil
	}
	if _, err := strconv.ParseInt(string(raw), 10, 64); err != nil {
		return "", fmt.Errorf("at %s: want Unix nanoseconds as an integer, or a string", raw)
	}
	return string(raw), nil
}

func (s *service) parseQuery(ipText, atText string) (query, error) {
	if ipText == "" {
		return query{}, errors.New("ip: missing")
	}
	ip, err := netip.ParseAddr(ipText)
	if err != nil {
		return query{}, fmt.Errorf("ip: %w", err)
	}
	at, err := timeparam.Parse(atText, s.now())
	if err != nil {
		return query{}, fmt.Errorf("at: %w", err)
	}
	return query{ip: ip, at: at}, nil
}

func (s *service) httpRanges(w http.ResponseWriter, r *http.Request) {
	ipText := r.URL.Query().Get("ip")
	ip, err := netip.ParseAddr(ipText)
	if err != nil {
		if ipText == "" {
			err = errors.New("missing")
		}
		s.badRequest(w, "bad_query", http.StatusBadRequest, fmt.Errorf("ip: %w", err))
		return
	}
	ranges, conflicts := s.idx.Ranges(ip)
	resp := RangesJSON{IP: ip.String(), Ranges: make([]RangeJSON, 0, len(ranges)), Conflicts: make([]RangeJSON, 0, len(conflicts))}
	for _, rg := range ranges {
		resp.Ranges = append(resp.Ranges, rangeJSON(rg))
	}
	for _, rg := range conflicts {
		resp.Conflicts = append(resp.Conflicts, rangeJSON(rg))
	}
	writeJSON(w, resp)
}

func answerJSON(q query, a index.Answer) AnswerJSON {
	j := AnswerJSON{IP: q.ip.String(), At: q.at, Status: a.Status.String()}
	if a.Status == index.Owned {
		r := rangeJSON(a.Range)
		j.Range = &r
	}
	for _, r := range a.Conflicting {
		j.Conflicting = append(j.Conflicting, rangeJSON(r))
	}
	return j
}

func rangeJSON(r index.Range) RangeJSON {
	return RangeJSON{Start: r.Start, End: r.End, LastSeen: r.LastSeen, Owner: r.Owner, Evidence: r.Evidence.String()}
}

func (s *service) badRequest(w http.ResponseWriter, reason string, code int, err error) {
	s.metrics.refused.WithLabelValues(reason).Inc()
	s.log.Debug("request refused", zap.String("reason", reason), zap.Error(err))
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(ErrorJSON{Error: strings.TrimSpace(err.Error())})
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
}
