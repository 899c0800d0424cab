// Package model holds the query API's JSON answers. It imports no database code, so clients such as
// flowctl decode the answers with the very types the collector encodes them from.
package model

import "github.com/flowlens/flowlens/internal/flow"

// FlowPage is one page of flows, newest end_time first. Next is empty on the last page.
type FlowPage struct {
	Flows []flow.Enriched `json:"flows"`
	Next  string          `json:"next,omitempty"`
}

// Node is a workload in the graph. The empty node stands for remote addresses with no known owner.
type Node struct {
	Name      string `json:"name"`
	Namespace string `json:"namespace"`
	Cluster   string `json:"cluster"`
}

// Edge is the traffic from Client's workload to Server's over a time window, each connection
// counted once.
type Edge struct {
	Client          Node   `json:"client"`
	Server          Node   `json:"server"`
	Flows           int64  `json:"flows"`
	BytesToServer   uint64 `json:"bytes_to_server"`
	BytesToClient   uint64 `json:"bytes_to_client"`
	ConnectFailures int64  `json:"connect_failures"`
	Resets          int64  `json:"resets"`
	Timeouts        int64  `json:"timeouts"`
	Retransmits     uint64 `json:"retransmits"`
	// Percentiles of the connections' smoothed RTT (those that have one: not failed connects), from a
	// histogram with 8 buckets per power of two: within 4.5 % (see store.ApproxRTT).
	RTTP50us float64 `json:"rtt_p50_us"`
	RTTP90us float64 `json:"rtt_p90_us"`
	RTTP99us float64 `json:"rtt_p99_us"`
}

// Failures is what a failing pathway is sorted by.
func (e Edge) Failures() int64 { return e.ConnectFailures + e.Resets + e.Timeouts }

// DepsResponse is /api/v1/deps: the graph's nodes (every workload an edge touches, sorted) and edges.
type DepsResponse struct {
	From  int64  `json:"from"` // the window, Unix ns
	To    int64  `json:"to"`
	Nodes []Node `json:"nodes"`
	Edges []Edge `json:"edges"`
}

// EdgesResponse is /api/v1/top, /api/v1/failing and /api/v1/cross.
type EdgesResponse struct {
	From  int64  `json:"from"`
	To    int64  `json:"to"`
	By    string `json:"by,omitempty"`
	Edges []Edge `json:"edges"`
}

// ErrorResponse is the body of every 4xx and 5xx answer.
type ErrorResponse struct {
	Error string `json:"error"`
}
