package cli

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/flowlens/flowlens/collector/api/model"
	"github.com/flowlens/flowlens/internal/flow"
)

// The answers flowctl reads: the query API's from package model (no database code), the lookup's
// declared here (sonar's package would link the ownership index).
type (
	flowPage    = model.FlowPage
	node        = model.Node
	edge        = model.Edge
	edgesAnswer = model.DepsResponse
	ownerRange  struct {
		Start    int64         `json:"start"`
		End      int64         `json:"end"`
		LastSeen int64         `json:"last_seen"`
		Owner    flow.Workload `json:"owner"`
		Evidence string        `json:"evidence"`
	}
	lookupAnswer struct {
		IP          string       `json:"ip"`
		At          int64        `json:"at"`
		Status      string       `json:"status"`
		Range       *ownerRange  `json:"range"`
		Conflicting []ownerRange `json:"conflicting"`
	}
)

func decode(body []byte, v any) error {
	if err := json.Unmarshal(body, v); err != nil {
		return fmt.Errorf("unexpected answer: %w", err)
	}
	return nil
}

func (e *Env) table() *tabwriter.Writer { return tabwriter.NewWriter(e.Stdout, 0, 0, 2, ' ', 0) }

func (e *Env) time(ns int64) string {
	if ns == 0 {
		return "-"
	}
	loc := e.Location
	if loc == nil {
		loc = time.Local
	}
	return time.Unix(0, ns).In(loc).Format("2006-01-02 15:04:05.000")
}

// bytesText prints a byte count with a binary unit.
func bytesText(n uint64) string {
	if n < 1024 {
		return fmt.Sprintf("%d B", n)
	}
	f, units := float64(n)/1024, []string{"KiB", "MiB", "GiB", "TiB", "PiB"}
	i := 0
	for ; f >= 1024 && i < len(units)-1; i++ {
		f /= 1024
	}
	return fmt.Sprintf("%.1f %s", f, units[i])
}

func rttText(us float64) string {
	if us == 0 {
		return "-"
	}
	if us < 1000 {
		return fmt.Sprintf("%.0fµs", us)
	}
	return fmt.Sprintf("%.1fms", us/1000)
}

// workloadText names a workload: namespace/name, @cluster when known; "?" for no known owner.
func workloadText(name, namespace, cluster string) string {
	var s string
	switch {
	case name == "" && namespace == "" && cluster == "":
		return "?"
	case name == "":
		s = namespace
	case namespace == "":
		s = name
	default:
		s = namespace + "/" + name
	}
	if cluster != "" {
		s += "@" + cluster
	}
	return s
}

func nodeText(n node) string { return workloadText(n.Name, n.Namespace, n.Cluster) }

func endpoint(w flow.Workload, a netip.Addr, port uint16) string {
	return workloadText(w.Name, w.Namespace, w.Cluster) + " " + netip.AddrPortFrom(a, port).String()
}

func flowsTable(e *Env, body []byte) error {
	var p flowPage
	if err := decode(body, &p); err != nil {
		return err
	}
	tw := e.table()
	fmt.Fprintln(tw, "END\tROLE\tLOCAL\tREMOTE\tCLOSE\tSENT\tRECEIVED\tSRTT\tATTRIBUTION\tEXPORTER")
	for _, f := range p.Flows {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", e.time(f.EndTime), f.Role, endpoint(f.LocalWorkload, f.LocalAddr, f.LocalPort),
			endpoint(f.RemoteWorkload, f.RemoteAddr, f.RemotePort), f.Close, bytesText(f.BytesSent), bytesText(f.BytesReceived),
			rttText(float64(f.SrttUs)), f.Attribution, f.ExporterID)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if p.Next != "" {
		fmt.Fprintf(e.Stdout, "more: --cursor %s\n", p.Next)
	}
	return nil
}

func edgesTable(e *Env, body []byte) error {
	var a edgesAnswer
	if err := decode(body, &a); err != nil {
		return err
	}
	tw := e.table()
	fmt.Fprintln(tw, "CLIENT\tSERVER\tFLOWS\tTO SERVER\tTO CLIENT\tCONNECT FAILED\tRESETS\tTIMEOUTS\tRETRANS\tRTT P50\tP90\tP99")
	for _, x := range a.Edges {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%d\t%d\t%d\t%d\t%s\t%s\t%s\n", nodeText(x.Client), nodeText(x.Server), x.Flows, bytesText(x.BytesToServer),
			bytesText(x.BytesToClient), x.ConnectFailures, x.Resets, x.Timeouts, x.Retransmits, rttText(x.RTTP50us), rttText(x.RTTP90us), rttText(x.RTTP99us))
	}
	return tw.Flush()
}

func depsTable(e *Env, body []byte) error {
	var a edgesAnswer
	if err := decode(body, &a); err != nil {
		return err
	}
	names := make([]string, len(a.Nodes))
	for i, n := range a.Nodes {
		names[i] = nodeText(n)
	}
	fmt.Fprintf(e.Stdout, "%d workloads: %s\n\n", len(a.Nodes), strings.Join(names, ", "))
	return edgesTable(e, body)
}

func lookupTable(e *Env, body []byte) error {
	var a lookupAnswer
	if err := decode(body, &a); err != nil {
		return err
	}
	fmt.Fprintf(e.Stdout, "%s at %s: %s\n", a.IP, e.time(a.At), a.Status)
	rs := a.Conflicting
	if a.Range != nil {
		rs = append([]ownerRange{*a.Range}, rs...)
	}
	if len(rs) == 0 {
		return nil
	}
	tw := e.table()
	fmt.Fprintln(tw, "OWNER\tPOD\tNODE\tEVIDENCE\tFROM\tTO\tLAST SEEN")
	for _, r := range rs {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", workloadText(r.Owner.Name, r.Owner.Namespace, r.Owner.Cluster),
			dash(r.Owner.Pod), dash(r.Owner.Node), r.Evidence, e.time(r.Start), e.time(r.End), e.time(r.LastSeen))
	}
	return tw.Flush()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
