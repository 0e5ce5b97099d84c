package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client/config"

	"github.com/sallyport/sallyport/internal/loader"
	"github.com/sallyport/sallyport/internal/report"
)

const reportUsage = `Usage: sallyport report -f <policy file or dir>... --decision-log <file>... [flags]
       sallyport report --cluster | --kubeconfig <file> [-n <namespace>] [flags]

Lists the grants the policies give that the decisions in the logs never used,
over a window: per ConnectionPolicy, reach entries no allowed decision took
part in and scopes never requested; per ResourcePolicy, Allow rules that
never allowed and connections they name that never came, and Deny rules that
never denied (reported, kept). Each policy comes with a tightened reach or
rule set to paste into a policy change. A grant is used when it takes part
in an allowed decision: a request the resource then denied needed no grant.

The window reaches back --window from --until (default: now; give the time
of the newest decision to analyse old logs). Logs are streamed, however
large. Only Enforce decisions and policies are counted. Give the logs of
every replica: each logs its own decisions.

With --cluster (the cluster of $KUBECONFIG, else in-cluster, else
~/.kube/config) or --kubeconfig, the report reads instead the usage the
operator merged into the policies' status: per Enforce policy the reach
entries and rules not used in the window. A grant tracked for less than the
window is listed as not tracked long enough, never as unused, and a policy
whose status has no usage yet as without usage data. The status records no
scopes or connections: for those, use the decision logs. DryRun policies
are listed with their disagreement counts, and whether they are ready to
promote (decisions for the current generation, none disagreeing).

Exit codes: 0 a report was printed, 2 unusable input or an unreachable
cluster.

Flags:
`

// runReport runs `sallyport report`.
func runReport(args []string) int {
	return reportMain(args, os.Stdout, os.Stderr)
}

// reportMain is runReport with its output streams, for tests.
func reportMain(args []string, stdout, stderr io.Writer) int {
	fs := commandFlags("sallyport report", reportUsage, stderr)
	var policies, logs stringList
	fs.Var(&policies, "f", "policy `file or directory` (repeatable)")
	fs.Var(&logs, "decision-log", "decision log `file` (repeatable; - for standard input)")
	window := fs.Duration("window", 30*24*time.Hour, "how far back from --until to count")
	until := fs.String("until", "", "end of the window, RFC 3339 (default: now)")
	format := fs.String("format", "text", "output format: text or json (with the suggested reach and rules)")
	cluster := fs.Bool("cluster", false, "read the usage in the policies' status from the cluster ($KUBECONFIG, else in-cluster, else ~/.kube/config) instead of files")
	kubeconfig := fs.String("kubeconfig", "", "read the usage from the cluster of this kubeconfig `file` (implies --cluster)")
	var namespace string
	fs.StringVar(&namespace, "namespace", "", "with --cluster: only the policies of this `namespace` (default: all)")
	fs.StringVar(&namespace, "n", "", "short for --namespace")
	if err := fs.Parse(args); err != nil {
		return parseExit(err)
	}
	fail := usageFailer("sallyport report", stderr)
	fromCluster := *cluster || *kubeconfig != ""
	switch {
	case fs.NArg() > 0:
		return fail("unexpected arguments %q (policies go with -f)", fs.Args())
	case fromCluster && (len(policies) > 0 || len(logs) > 0):
		// Two sources would give two answers for one policy: say which.
		return fail("-f and --decision-log read files, --cluster and --kubeconfig read the cluster: give one source")
	case !fromCluster && namespace != "":
		return fail("-n/--namespace needs --cluster or --kubeconfig")
	case !fromCluster && len(policies) == 0:
		return fail("no policies (-f), and no cluster (--cluster or --kubeconfig)")
	case !fromCluster && len(logs) == 0:
		return fail("no decision logs (--decision-log)")
	case *window <= 0:
		return fail("--window must be positive")
	case *format != "text" && *format != "json":
		return fail("--format must be text or json, not %q", *format)
	}

	end := time.Now()
	if *until != "" {
		var err error
		if end, err = time.Parse(time.RFC3339, *until); err != nil {
			return fail("--until: %v", err)
		}
	}
	if fromCluster {
		r, err := clusterReport(*kubeconfig, namespace, end, *window)
		if err != nil {
			return fail("%v", err)
		}
		return writeReport(r, *format, stdout, fail)
	}

	set, err := loader.Load(policies...)
	if err != nil {
		return fail("policies do not load:\n%v", err)
	}
	classOf := report.ClassesOf(set)
	u := report.NewUsage()
	u.Until = end
	for _, name := range logs {
		if err := readLog(u, name, end.Add(-*window), classOf); err != nil {
			return fail("%v", err)
		}
	}
	return writeReport(report.Build(set.ConnectionPolicies, set.ResourcePolicies, u), *format, stdout, fail)
}

// writeReport prints r in format and returns the exit code.
func writeReport(r *report.Report, format string, stdout io.Writer, fail func(string, ...any) int) int {
	if format == "json" {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(r); err != nil {
			return fail("write the report: %v", err)
		}
		return 0
	}
	r.WriteText(stdout)
	return 0
}

// clusterTimeout bounds the whole read of the cluster, so an unreachable
// API server ends the command with an error instead of a hang.
const clusterTimeout = 30 * time.Second

// clusterReport reads the policies of namespace (all when empty) from the
// cluster of kubeconfig (when empty: $KUBECONFIG, else in-cluster, else
// ~/.kube/config) and reports on the usage in their status.
func clusterReport(kubeconfig, namespace string, until time.Time, window time.Duration) (*report.Report, error) {
	var cfg *rest.Config
	var err error
	if kubeconfig != "" {
		cfg, err = clientcmd.BuildConfigFromFlags("", kubeconfig)
	} else {
		cfg, err = config.GetConfig()
	}
	if err != nil {
		return nil, fmt.Errorf("load the kubeconfig: %w", err)
	}
	cfg = rest.CopyConfig(cfg)
	cfg.UserAgent = "sallyport-report"
	if cfg.Timeout == 0 {
		cfg.Timeout = clusterTimeout
	}
	c, err := report.NewClient(cfg)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), clusterTimeout)
	defer cancel()
	conns, res, err := report.ListPolicies(ctx, c, namespace)
	if err != nil {
		return nil, fmt.Errorf("read the cluster at %s: %w", cfg.Host, err)
	}
	return report.FromStatus(conns, res, until, window), nil
}

// readLog streams one decision log (or standard input, "-") into u.
func readLog(u *report.Usage, name string, since time.Time, classOf func(string) (string, bool)) error {
	var r io.Reader = os.Stdin
	if name != "-" {
		f, err := os.Open(name)
		if err != nil {
			return fmt.Errorf("read decision log: %w", err)
		}
		defer f.Close()
		r = f
	}
	return u.Read(r, name, since, classOf)
}
