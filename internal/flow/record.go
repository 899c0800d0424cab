// Package flow defines the flow record: one TCP connection (or one interval of a long-lived one) as the
// exporter reports it. Its JSON form, with the snake_case names of the design's record table, is what
// `flow-exporter --output=stdout` prints.
package flow

import (
	"fmt"
	"net/netip"
)

// Role says which side of the connection this record describes.
type Role uint8

const (
	RoleUnknown Role = iota // the connection predates the exporter
	RoleClient              // this side connected
	RoleServer              // this side accepted
)

var roleNames = [...]string{"UNKNOWN", "CLIENT", "SERVER"}

func (r Role) String() string {
	if int(r) < len(roleNames) {
		return roleNames[r]
	}
	return fmt.Sprintf("Role(%d)", r)
}

// MarshalText makes roles print by name in JSON.
func (r Role) MarshalText() ([]byte, error) { return []byte(r.String()), nil }

// UnmarshalText parses a role name.
func (r *Role) UnmarshalText(b []byte) error { return parseName(roleNames[:], "role", b, (*uint8)(r)) }

// Close says how a connection ended, or that it has not (Active, for interim records).
type Close uint8

const (
	CloseActive        Close = iota // interim record: still open, counters cumulative so far
	CloseNormal                     // FIN exchange or a plain close
	CloseResetSent                  // this side aborted with a RST
	CloseResetReceived              // the peer aborted with a RST
	CloseConnectFailed              // the handshake never completed: refused, timed out or abandoned
	CloseTimeout                    // an established connection died of retransmission or keepalive timeout
)

var closeNames = [...]string{"ACTIVE", "NORMAL", "RESET_SENT", "RESET_RECEIVED", "CONNECT_FAILED", "TIMEOUT"}

func (c Close) String() string {
	if int(c) < len(closeNames) {
		return closeNames[c]
	}
	return fmt.Sprintf("Close(%d)", c)
}

// MarshalText makes close reasons print by name in JSON.
func (c Close) MarshalText() ([]byte, error) { return []byte(c.String()), nil }

// UnmarshalText parses a close reason name.
func (c *Close) UnmarshalText(b []byte) error {
	return parseName(closeNames[:], "close reason", b, (*uint8)(c))
}

func parseName(names []string, what string, b []byte, dst *uint8) error {
	for i, n := range names {
		if n == string(b) {
			*dst = uint8(i)
			return nil
		}
	}
	return fmt.Errorf("unknown %s %q", what, b)
}

// Workload identifies the workload on one side of a flow. The exporter fills the local side from its
// configuration (in a pod, from the downward API); the collector fills the remote side.
type Workload struct {
	Name      string `json:"name,omitempty" mapstructure:"name"`           // the workload: app label, deployment, or host service
	Namespace string `json:"namespace,omitempty" mapstructure:"namespace"` // Kubernetes namespace
	Pod       string `json:"pod,omitempty" mapstructure:"pod"`
	PodUID    string `json:"pod_uid,omitempty" mapstructure:"pod_uid"`
	Node      string `json:"node,omitempty" mapstructure:"node"` // node or host name
	Cluster   string `json:"cluster,omitempty" mapstructure:"cluster"`
}

// Record is one TCP connection seen from one side. Times are Unix nanoseconds of the wall clock.
// (exporter, local address and port, remote address and port, start_time) identifies a connection, so
// interim records and the final one can be merged without counting twice.
type Record struct {
	LocalAddr     netip.Addr `json:"local_addr"` // IPv4 (v4-mapped IPv6 is unmapped) or IPv6
	LocalPort     uint16     `json:"local_port"`
	RemoteAddr    netip.Addr `json:"remote_addr"`
	RemotePort    uint16     `json:"remote_port"`
	Role          Role       `json:"role"`
	StartTime     int64      `json:"start_time"` // connect() or the arrival of the handshake; 0 if Preexisting
	EndTime       int64      `json:"end_time"`   // close, or the moment an interim record was taken
	BytesSent     uint64     `json:"bytes_sent"` // data bytes; a retransmitted byte counts once
	BytesReceived uint64     `json:"bytes_received"`
	SegsSent      uint32     `json:"segs_sent"` // every segment, SYN, FIN and pure ACKs included
	SegsReceived  uint32     `json:"segs_received"`
	Retransmits   uint32     `json:"retransmits"`
	SrttUs        uint32     `json:"srtt_us"`
	RttVarUs      uint32     `json:"rtt_var_us"`
	MinRttUs      uint32     `json:"min_rtt_us"`
	Close         Close      `json:"close"`
	Error         string     `json:"error,omitempty"` // the socket's error at close (ECONNREFUSED, ETIMEDOUT, ...)
	Pid           uint32     `json:"pid"`             // the process that connected or accepted; 0 if unknown
	Comm          string     `json:"comm"`
	Netns         uint32     `json:"netns"`
	CgroupID      uint64     `json:"cgroup_id"`
	Preexisting   bool       `json:"preexisting,omitempty"` // open before the exporter started: no start, role, pid
	LocalWorkload Workload   `json:"local_workload"`
}

// Attribution says how the collector decided a flow's remote workload. Its values match the sonar
// evidence kinds they come from, so one converts to the other by value.
type Attribution uint8

const (
	AttributionNone         Attribution = iota // not attributed yet: as the exporter sends it
	AttributionHeartbeat                       // the remote IP's owner reported flows covering start_time
	AttributionPodEvent                        // Kubernetes pod events
	AttributionService                         // a Kubernetes service's cluster IP
	AttributionNode                            // a Kubernetes node's address
	AttributionCIDR                            // a static CIDR table
	AttributionUnattributed                    // no owner was known by the deadline, or owners conflicted: never guessed
)

var attributionNames = [...]string{"NONE", "HEARTBEAT", "POD_EVENT", "SERVICE", "NODE", "CIDR", "UNATTRIBUTED"}

func (a Attribution) String() string {
	if int(a) < len(attributionNames) {
		return attributionNames[a]
	}
	return fmt.Sprintf("Attribution(%d)", a)
}

// MarshalText makes attributions print by name in JSON.
func (a Attribution) MarshalText() ([]byte, error) { return []byte(a.String()), nil }

// UnmarshalText parses an attribution name.
func (a *Attribution) UnmarshalText(b []byte) error {
	return parseName(attributionNames[:], "attribution", b, (*uint8)(a))
}

// Enriched is a record as the collector stores and publishes it: the exporter's record, where it came
// from, and the owner of its remote address at its start time.
type Enriched struct {
	Record
	ExporterID     string      `json:"exporter_id"`
	RemoteWorkload Workload    `json:"remote_workload"`
	Attribution    Attribution `json:"attribution"`
}
