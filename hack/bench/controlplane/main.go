// Command controlplane measures sallyport's control plane on envtest (see
// docs/benchmarks-controlplane.md): a real kube-apiserver and etcd built from
// Go modules by hack/envtest.sh, and the operator's manager running in this
// process with its decision API on a loopback port.
//
// It measures two things, in order:
//
//  1. Bulk apply: -policies policies (half ConnectionPolicies, half
//     ResourcePolicies, shaped like config/samples) created at once by a
//     client with raised QPS and burst, until every one reports Ready=True
//     at its generation: the wall time, and the API calls the operator made
//     meanwhile, counted by verb and resource on its rest.Config transport.
//  2. Propagation: -changes server-side applies (as `kubectl apply
//     --server-side` does) of a ResourcePolicy whose rule flips between
//     Allow and Deny, each timed to the first /v1/decide answer that
//     reflects it (the decision API polled with a real ServiceAccount token
//     minted by TokenRequest) and, separately, to the status reporting the
//     new generation as observed and Ready.
//
// It prints a results table and writes it, with the raw per-sample numbers,
// to -out.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
)

// options are the benchmark's settings, one per flag.
type options struct {
	// Policies is how many policies the bulk apply creates: half
	// ConnectionPolicies and half ResourcePolicies.
	Policies int
	// Namespaces spreads them over this many namespaces.
	Namespaces int
	// Workers create them concurrently, through a client limited to
	// ClientQPS and ClientBurst.
	Workers     int
	ClientQPS   float32
	ClientBurst int
	// ReadyTimeout bounds the wait for every policy to become Ready.
	ReadyTimeout time.Duration

	// Changes is how many rule changes the propagation run makes; Gap is
	// the pause after each has fully propagated; ChangeTimeout bounds each.
	Changes       int
	Gap           time.Duration
	ChangeTimeout time.Duration
	// PollInterval is the pause between /v1/decide polls (0: none).
	PollInterval time.Duration

	// OperatorQPS and OperatorBurst are the operator's client-side rate
	// limit. The default, -1, is what the sallyport binary runs with:
	// controller-runtime's config.GetConfig disables client-side limiting
	// and relies on the API server's priority and fairness.
	OperatorQPS   float32
	OperatorBurst int

	// Out is the directory results go to; Profile writes CPU profiles of
	// each phase there.
	Out     string
	Profile bool
	// OperatorLog is where the operator logs ("" for Out/operator.log);
	// ControlPlaneLog where kube-apiserver and etcd do ("" for
	// Out/control-plane.log).
	OperatorLog, ControlPlaneLog string
}

func main() {
	o := options{}
	flag.IntVar(&o.Policies, "policies", 1000, "policies the bulk apply creates: half ConnectionPolicies, half ResourcePolicies")
	flag.IntVar(&o.Namespaces, "namespaces", 50, "namespaces the bulk apply spreads its policies over")
	flag.IntVar(&o.Workers, "workers", 32, "concurrent creators in the bulk apply")
	qps := flag.Float64("client-qps", 1000, "QPS limit of the benchmark's own client")
	flag.IntVar(&o.ClientBurst, "client-burst", 2000, "burst of the benchmark's own client")
	flag.DurationVar(&o.ReadyTimeout, "ready-timeout", 10*time.Minute, "how long to wait for every policy to become Ready")
	flag.IntVar(&o.Changes, "changes", 200, "rule changes in the propagation run")
	flag.DurationVar(&o.Gap, "gap", 100*time.Millisecond, "pause after each change has propagated")
	flag.DurationVar(&o.ChangeTimeout, "change-timeout", 30*time.Second, "how long to wait for one change to propagate")
	flag.DurationVar(&o.PollInterval, "poll-interval", time.Millisecond, "pause between /v1/decide polls")
	opQPS := flag.Float64("operator-qps", -1, "the operator's client QPS limit (-1: none, as the sallyport binary runs)")
	flag.IntVar(&o.OperatorBurst, "operator-burst", 0, "the operator's client burst (with -operator-qps > 0)")
	flag.StringVar(&o.Out, "out", "", "directory for results (default: a new directory under the temporary directory)")
	flag.BoolVar(&o.Profile, "profile", false, "write a CPU profile of each phase (the whole process: operator, API clients, poller) to -out")
	flag.StringVar(&o.OperatorLog, "operator-log", "", "the operator's log file (default: <out>/operator.log)")
	flag.StringVar(&o.ControlPlaneLog, "control-plane-log", "", "kube-apiserver's and etcd's log file (default: <out>/control-plane.log)")
	flag.Parse()
	o.ClientQPS, o.OperatorQPS = float32(*qps), float32(*opQPS)

	log := zap.New(zap.WriteTo(os.Stderr), zap.UseDevMode(true)).WithName("bench")
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	if err := mainErr(ctx, o, log); err != nil {
		log.Error(err, "Benchmark failed")
		os.Exit(1)
	}
}

func mainErr(ctx context.Context, o options, log logr.Logger) error {
	if o.Out == "" {
		dir, err := os.MkdirTemp("", "sallyport-bench-controlplane-")
		if err != nil {
			return fmt.Errorf("create output directory: %w", err)
		}
		o.Out = dir
	}
	res, err := run(ctx, o, log)
	if err != nil {
		return err
	}
	table := res.table()
	fmt.Print(table)
	if err := res.write(o.Out, table); err != nil {
		return err
	}
	log.Info("Wrote results", "dir", o.Out)
	return nil
}

// validate rejects settings the run cannot honour.
func (o *options) validate() error {
	switch {
	case o.Policies < 2 || o.Policies%2 != 0:
		return fmt.Errorf("-policies %d: want an even number, at least 2", o.Policies)
	case o.Namespaces < 1:
		return errors.New("-namespaces: want at least 1")
	case o.Workers < 1:
		return errors.New("-workers: want at least 1")
	case o.Changes < 1:
		return errors.New("-changes: want at least 1")
	case o.Out == "":
		return errors.New("no output directory")
	}
	if o.OperatorLog == "" {
		o.OperatorLog = filepath.Join(o.Out, "operator.log")
	}
	if o.ControlPlaneLog == "" {
		o.ControlPlaneLog = filepath.Join(o.Out, "control-plane.log")
	}
	return nil
}
