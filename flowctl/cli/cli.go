// Package cli is flowctl: the command-line client of the collector's query API. Each command maps to
// one endpoint, its flags to the endpoint's parameters, and prints the answer as an aligned table or
// as the API's JSON.
package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/spf13/pflag"
)

// DefaultServer is the collector's API address when neither --server nor FLOWLENS_SERVER says.
const DefaultServer = "http://127.0.0.1:9480"

// Env is how Run reads the environment (os.Getenv in main).
type Env struct {
	Getenv   func(string) string
	Stdout   io.Writer
	Stderr   io.Writer
	Location *time.Location // times in tables; nil means time.Local
	Client   *http.Client   // nil: a client with a 30 s timeout
}

const usage = `flowctl queries a flowlens collector.

Commands:
  flows     flows by workload, namespace, IP, port, close reason, attribution, time
  deps      the dependency graph between workloads
  top       top talkers (workload pairs) by bytes or flows
  failing   pathways with connect failures, resets or timeouts
  cross     traffic crossing namespaces or clusters
  lookup    who owned an IP address at a time: flowctl lookup IP [--at TIME]

Every command takes --server (default $FLOWLENS_SERVER, else ` + DefaultServer + `) and
-o table|json. Times: RFC 3339, Unix nanoseconds, now, or relative like -15m.
Run 'flowctl COMMAND --help' for a command's flags.
`

// command is one subcommand: the flags it passes to its endpoint and how it prints the answer.
type command struct {
	path   string
	params []param
	args   string // positional argument name, if any ("IP")
	table  func(e *Env, body []byte) error
}

type param struct{ flag, api, def, usage string }

var (
	window = []param{
		{"from", "from", "", "start of the window (default -1h)"},
		{"to", "to", "", "end of the window (default now)"},
	}
	limitParam = param{"limit", "limit", "", "rows (default 100, at most 10000)"}
)

var commands = map[string]command{
	"flows": {path: "/api/v1/flows", table: flowsTable, params: append([]param{
		{"workload", "workload", "", "workload name, either side"},
		{"namespace", "namespace", "", "namespace, either side"},
		{"ip", "ip", "", "address, either side"},
		{"port", "port", "", "port, either side"},
		{"attribution", "attribution", "", "HEARTBEAT, POD_EVENT, SERVICE, NODE, CIDR, UNATTRIBUTED"},
		{"close", "close", "", "ACTIVE, NORMAL, RESET_SENT, RESET_RECEIVED, CONNECT_FAILED, TIMEOUT"},
		limitParam,
		{"cursor", "cursor", "", "page cursor printed after the previous page"},
	}, window...)},
	"deps":    {path: "/api/v1/deps", table: depsTable, params: append([]param{{"namespace", "namespace", "", "edges with either end in this namespace"}}, window...)},
	"top":     {path: "/api/v1/top", table: edgesTable, params: append([]param{{"by", "by", "", "bytes or flows (default bytes)"}, limitParam}, window...)},
	"failing": {path: "/api/v1/failing", table: edgesTable, params: append([]param{limitParam}, window...)},
	"cross":   {path: "/api/v1/cross", table: edgesTable, params: append([]param{{"by", "by", "", "namespace or cluster (default namespace)"}, limitParam}, window...)},
	"lookup":  {path: "/api/v1/lookup", table: lookupTable, args: "IP", params: []param{{"at", "at", "", "time of the lookup (default now)"}}},
}

// Run runs flowctl with args (without the program name) and returns the process exit code.
func Run(ctx context.Context, args []string, e *Env) int {
	if err := run(ctx, args, e); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return 0
		}
		fmt.Fprintln(e.Stderr, "flowctl:", err)
		return 1
	}
	return 0
}

func run(ctx context.Context, args []string, e *Env) error {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		fmt.Fprint(e.Stdout, usage)
		if len(args) == 0 {
			return errors.New("no command")
		}
		return nil
	}
	name := args[0]
	cmd, ok := commands[name]
	if !ok {
		return fmt.Errorf("unknown command %q (flows, deps, top, failing, cross, lookup)", name)
	}
	fs := pflag.NewFlagSet("flowctl "+name, pflag.ContinueOnError)
	fs.SetOutput(e.Stderr)
	server := fs.String("server", "", "collector API URL (default $FLOWLENS_SERVER, else "+DefaultServer+")")
	output := fs.StringP("output", "o", "table", "table or json")
	vals := make([]*string, len(cmd.params))
	for i, p := range cmd.params {
		vals[i] = fs.String(p.flag, p.def, p.usage)
	}
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if *output != "table" && *output != "json" {
		return fmt.Errorf("-o %q: want table or json", *output)
	}
	q := url.Values{}
	switch {
	case cmd.args == "" && fs.NArg() > 0:
		return fmt.Errorf("%s takes no arguments, got %q", name, fs.Args())
	case cmd.args != "" && fs.NArg() != 1:
		return fmt.Errorf("usage: flowctl %s %s [flags]", name, cmd.args)
	case cmd.args != "":
		q.Set(strings.ToLower(cmd.args), fs.Arg(0))
	}
	for i, p := range cmd.params {
		if fs.Changed(p.flag) {
			q.Set(p.api, *vals[i])
		}
	}
	base := *server
	if base == "" {
		base = e.Getenv("FLOWLENS_SERVER")
	}
	if base == "" {
		base = DefaultServer
	}
	body, err := get(ctx, e, strings.TrimRight(base, "/")+cmd.path, q)
	if err != nil {
		return err
	}
	if *output == "json" {
		var out bytes.Buffer
		if err := json.Indent(&out, body, "", "  "); err != nil {
			return fmt.Errorf("server answered something that is not JSON: %w", err)
		}
		out.WriteByte('\n')
		_, err := e.Stdout.Write(out.Bytes())
		return err
	}
	return cmd.table(e, body)
}

// get fetches u?q and returns the body of a 200, or the server's error.
func get(ctx context.Context, e *Env, u string, q url.Values) ([]byte, error) {
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, fmt.Errorf("request: %w", err)
	}
	c := e.Client
	if c == nil {
		c = &http.Client{Timeout: 30 * time.Second}
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, fmt.Errorf("query %s: %w", u, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 256<<20))
	if err != nil {
		return nil, fmt.Errorf("read answer: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		var apiErr struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(body, &apiErr) == nil && apiErr.Error != "" {
			return nil, fmt.Errorf("server: %s (%s)", apiErr.Error, resp.Status)
		}
		return nil, fmt.Errorf("server: %s: %s", resp.Status, strings.TrimSpace(string(body)))
	}
	return body, nil
}
