package main

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// results are one run's measurements.
type results struct {
	Options            options
	Started            time.Time
	NumCPU, GoMaxProcs int
	// LoadBefore and LoadAfter are /proc/loadavg's 1, 5 and 15 minute
	// averages at the start and end of the run: the machine is shared.
	LoadBefore, LoadAfter string
	// StartupCalls are the operator's API calls from its start to the
	// first create of the bulk apply.
	StartupCalls []callCount
	Apply        *applyResult
	Propagation  *propResult
}

// quantiles are a sample's nearest-rank percentiles.
type quantiles struct {
	N                        int
	P50, P90, P99, Max, Mean time.Duration
}

func quantilesOf(ds []time.Duration) quantiles {
	if len(ds) == 0 {
		return quantiles{}
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	rank := func(p float64) time.Duration {
		i := int(math.Ceil(p*float64(len(s)))) - 1
		return s[min(max(i, 0), len(s)-1)]
	}
	var sum time.Duration
	for _, d := range s {
		sum += d
	}
	return quantiles{N: len(s), P50: rank(0.50), P90: rank(0.90), P99: rank(0.99), Max: s[len(s)-1], Mean: sum / time.Duration(len(s))}
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond)) }

func secs(d time.Duration) string { return fmt.Sprintf("%.2f s", d.Seconds()) }

// table renders the results for a terminal and for summary.txt.
func (r *results) table() string {
	var sb strings.Builder
	o := r.Options
	host, _ := os.Hostname()
	fmt.Fprintf(&sb, "sallyport control-plane benchmark on envtest (kube-apiserver + etcd, operator in-process)\n")
	fmt.Fprintf(&sb, "started %s on %s: %d CPUs, GOMAXPROCS %d; load average before %s, after %s\n",
		r.Started.Format(time.RFC3339), host, r.NumCPU, r.GoMaxProcs, r.LoadBefore, r.LoadAfter)
	opLimit := "none (QPS -1, as the sallyport binary runs)"
	if o.OperatorQPS > 0 {
		opLimit = fmt.Sprintf("QPS %g, burst %d", o.OperatorQPS, o.OperatorBurst)
	}
	fmt.Fprintf(&sb, "operator client-side rate limit: %s\n\n", opLimit)
	if len(r.StartupCalls) > 0 {
		fmt.Fprintf(&sb, "Operator API calls at start, before the first policy: %d\n", totalCalls(r.StartupCalls, ""))
		tw := tabwriter.NewWriter(&sb, 0, 0, 2, ' ', 0)
		fmt.Fprintf(tw, "  verb\tresource\tcalls\t\n")
		for _, c := range r.StartupCalls {
			fmt.Fprintf(tw, "  %s\t%s\t%d\t\n", c.Verb, c.Resource, c.N)
		}
		_ = tw.Flush()
		sb.WriteString("\n")
	}

	if a := r.Apply; a != nil {
		n := a.Connections + a.Resources
		fmt.Fprintf(&sb, "Bulk apply: %d ConnectionPolicies + %d ResourcePolicies (%d policies) over %d namespaces,\n", a.Connections, a.Resources, n, o.Namespaces)
		fmt.Fprintf(&sb, "created by %d concurrent workers (client QPS %g, burst %d)\n", o.Workers, o.ClientQPS, o.ClientBurst)
		tw := tabwriter.NewWriter(&sb, 0, 0, 2, ' ', 0)
		fmt.Fprintf(tw, "  all created (first create sent to last answered)\t%s\n", secs(a.Created))
		fmt.Fprintf(tw, "  longest wait with no create answered\t%s (from %s)\n", secs(a.Stall), secs(a.StallAt))
		fmt.Fprintf(tw, "  all served by the operator's snapshot\t%s\n", secs(a.Served))
		fmt.Fprintf(tw, "  all Ready=True at their generation (target: under 60 s)\t%s\n", secs(a.Ready))
		_ = tw.Flush()
		fmt.Fprintf(&sb, "Snapshots the operator built and published meanwhile: %d\n", a.Snapshots)
		writeCPU(&sb, "from the first create to all Ready", a.CPU)
		writeEtcd(&sb, a.Etcd)
		writeSlow(&sb, a.Slow)
		total, settled := totalCalls(a.Calls, ""), totalCalls(a.Settled, "")
		fmt.Fprintf(&sb, "Operator API calls from the first create to all Ready: %d (%.2f per policy); %d including the next %s\n",
			total, float64(total)/float64(n), settled, a.Settle)
		tw = tabwriter.NewWriter(&sb, 0, 0, 2, ' ', 0)
		fmt.Fprintf(tw, "  verb\tresource\tuntil Ready\tper policy\twith settle\t\n")
		settledBy := map[call]int{}
		for _, c := range a.Settled {
			settledBy[c.call] = c.N
		}
		rows := slices.Clone(a.Calls)
		for _, c := range a.Settled {
			if !slices.ContainsFunc(rows, func(x callCount) bool { return x.call == c.call }) {
				rows = append(rows, callCount{c.call, 0})
			}
		}
		for _, c := range rows {
			fmt.Fprintf(tw, "  %s\t%s\t%d\t%.2f\t%d\t\n", c.Verb, c.Resource, c.N, float64(c.N)/float64(n), settledBy[c.call])
		}
		_ = tw.Flush()
		sb.WriteString("\n")
	}

	if p := r.Propagation; p != nil {
		fmt.Fprintf(&sb, "Propagation: %d server-side applies of a ResourcePolicy rule flipping Allow/Deny, one at a time,\n", len(p.Samples))
		fmt.Fprintf(&sb, "%s apart, /v1/decide polled every %s with a TokenRequest token (%d answers, %d unexpected)\n",
			o.Gap, o.PollInterval, p.Polls, p.Unexpected)
		var apply, decide, status []time.Duration
		for _, s := range p.Samples {
			apply, decide, status = append(apply, s.Apply), append(decide, s.Decide), append(status, s.Status)
		}
		tw := tabwriter.NewWriter(&sb, 0, 0, 2, ' ', 0)
		fmt.Fprintf(tw, "  from the apply sent to\tn\tp50\tp90\tp99\tmax\tmean\t\n")
		for _, row := range []struct {
			name string
			ds   []time.Duration
		}{
			{"apply answered", apply},
			{"first /v1/decide reflecting it (target p99 < 1 s)", decide},
			{"status observedGeneration and Ready", status},
		} {
			q := quantilesOf(row.ds)
			fmt.Fprintf(tw, "  %s\t%d\t%s\t%s\t%s\t%s\t%s\t\n", row.name, q.N, ms(q.P50), ms(q.P90), ms(q.P99), ms(q.Max), ms(q.Mean))
		}
		_ = tw.Flush()
		fmt.Fprintf(&sb, "Snapshots the operator built and published during the run: %d (%.2f per change)\n",
			p.Snapshots, float64(p.Snapshots)/float64(max(len(p.Samples), 1)))
		writeCPU(&sb, "during the run (gaps included)", p.CPU)
		writeEtcd(&sb, p.Etcd)
		writeSlow(&sb, p.Slow)
		total := totalCalls(p.Calls, "")
		fmt.Fprintf(&sb, "Operator API calls during the run: %d (%.2f per change)\n", total, float64(total)/float64(max(len(p.Samples), 1)))
		tw = tabwriter.NewWriter(&sb, 0, 0, 2, ' ', 0)
		fmt.Fprintf(tw, "  verb\tresource\tcalls\tper change\t\n")
		for _, c := range p.Calls {
			fmt.Fprintf(tw, "  %s\t%s\t%d\t%.2f\t\n", c.Verb, c.Resource, c.N, float64(c.N)/float64(max(len(p.Samples), 1)))
		}
		_ = tw.Flush()
	}
	return sb.String()
}

// write stores the table and the raw samples in dir, as small text files
// docs can cite.
func (r *results) write(dir, table string) error {
	files := map[string]string{"summary.txt": table, "startup-calls.tsv": callsTSV(r.StartupCalls, "# operator API calls from its start to the first create\n")}
	if a := r.Apply; a != nil {
		var sb strings.Builder
		sb.WriteString("# kind\tnamespace/name\tcreated_ms\tready_ms (from the first create)\n")
		for _, s := range a.Samples {
			fmt.Fprintf(&sb, "%s\t%s\t%.3f\t%.3f\n", s.Kind, s.Name, msf(s.Created), msf(s.Ready))
		}
		files["apply-ready.tsv"] = sb.String()
		files["apply-calls.tsv"] = callsTSV(a.Calls, "# operator API calls from the first create to all Ready\n")
		files["apply-calls-settled.tsv"] = callsTSV(a.Settled, fmt.Sprintf("# operator API calls from the first create to %s after all Ready\n", a.Settle))
	}
	if p := r.Propagation; p != nil {
		var sb strings.Builder
		sb.WriteString("# change\tgeneration\teffect\tapply_ms\tdecide_ms\tstatus_ms (from the apply sent)\n")
		for i, s := range p.Samples {
			effect := "Deny"
			if s.Allow {
				effect = "Allow"
			}
			fmt.Fprintf(&sb, "%d\t%d\t%s\t%.3f\t%.3f\t%.3f\n", i+1, s.Generation, effect, msf(s.Apply), msf(s.Decide), msf(s.Status))
		}
		files["propagation.tsv"] = sb.String()
		files["propagation-calls.tsv"] = callsTSV(p.Calls, "# operator API calls during the propagation run\n")
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			return fmt.Errorf("write %s: %w", name, err)
		}
	}
	return nil
}

// writeCPU reports where the CPU went, in seconds and in cores busy on
// average.
func writeCPU(sb *strings.Builder, when string, u cpuUse) {
	if u.Wall <= 0 {
		return
	}
	share := func(d time.Duration) string {
		return fmt.Sprintf("%.2f s (%.2f)", d.Seconds(), d.Seconds()/u.Wall.Seconds())
	}
	fmt.Fprintf(sb, "CPU %s (%s wall), in seconds and (average cores busy):\n", when, secs(u.Wall))
	fmt.Fprintf(sb, "  this process (operator, benchmark clients, poller) %s, kube-apiserver %s, etcd %s, rest of the machine %s\n",
		share(u.Self), share(u.APIServer), share(u.Etcd), share(u.Others))
}

// writeEtcd reports etcd's slow disk operations: a stalled fsync stalls
// every write behind it.
func writeEtcd(sb *strings.Builder, d etcdDisk) {
	if d.Fsyncs == 0 && d.Commits == 0 {
		return
	}
	fmt.Fprintf(sb, "etcd disk meanwhile: %d backend commits (%d over %s s, %d over %s s); %d WAL fsyncs (%d over %s s; envtest runs etcd with --unsafe-no-fsync)\n",
		d.Commits, d.SlowCommits, slowBound, d.StalledCommits, stalledBound, d.Fsyncs, d.SlowFsyncs, slowBound)
}

// writeSlow reports the requests the API server took over a second to
// serve, by anyone: a stall there delays creates and status patches alike.
func writeSlow(sb *strings.Builder, slow []callCount) {
	if len(slow) == 0 {
		sb.WriteString("API server requests over 1 s meanwhile (its own histogram, all clients): none\n")
		return
	}
	parts := make([]string, 0, len(slow))
	for _, c := range slow {
		parts = append(parts, fmt.Sprintf("%d %s %s", c.N, c.Verb, c.Resource))
	}
	fmt.Fprintf(sb, "API server requests over 1 s meanwhile (its own histogram, all clients): %s\n", strings.Join(parts, ", "))
}

func msf(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func callsTSV(cs []callCount, header string) string {
	var sb strings.Builder
	sb.WriteString(header)
	sb.WriteString("# verb\tresource\tcount\n")
	for _, c := range cs {
		fmt.Fprintf(&sb, "%s\t%s\t%d\n", c.Verb, c.Resource, c.N)
	}
	return sb.String()
}
