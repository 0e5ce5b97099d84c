package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/sallyport/sallyport/internal/controlplane"
	"github.com/sallyport/sallyport/internal/manager"
	"github.com/sallyport/sallyport/internal/testenv"
)

// bench is a started control plane, operator and the benchmark's clients.
type bench struct {
	o   options
	log logr.Logger

	env *testenv.Env
	op  *manager.Operator
	// calls counts the operator's API calls.
	calls *callCounter
	// decideURL is the operator's decision API; etcdURL etcd's client
	// URL, for its disk metrics.
	decideURL, etcdURL string

	// client and cache are the benchmark's own, with their own rate limit
	// and connections: what a user's kubectl and `kubectl wait` would be.
	client    client.Client
	cache     cache.Cache
	clientset *kubernetes.Clientset
}

// run starts the control plane and the operator, runs both measurements and
// stops everything.
func run(ctx context.Context, o options, log logr.Logger) (*results, error) {
	if err := o.validate(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(o.Out, 0o750); err != nil {
		return nil, fmt.Errorf("create output directory: %w", err)
	}
	res := &results{Options: o, Started: time.Now().UTC(), GoMaxProcs: runtime.GOMAXPROCS(0), NumCPU: runtime.NumCPU()}
	res.LoadBefore = loadAvg()

	log.Info("Starting the control plane", "log", o.ControlPlaneLog)
	env, closeLog, err := startControlPlane(ctx, o.ControlPlaneLog)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err := env.Stop(); err != nil {
			log.Error(err, "Could not stop the control plane")
		}
		closeLog()
	}()
	b := &bench{o: o, log: log, env: env, calls: newCallCounter()}
	if e := env.ControlPlane.Etcd; e != nil && e.URL != nil {
		b.etcdURL = e.URL.String()
	}

	stopOp, err := b.startOperator(ctx)
	if err != nil {
		return nil, err
	}
	defer stopOp()
	stopClients, err := b.startClients(ctx)
	if err != nil {
		return nil, err
	}
	defer stopClients()

	// Everything the operator did before the first create: discovery and
	// its informers' initial lists, which client-go 1.35+ makes as
	// streaming watches (WatchListClient), so they count as watches.
	res.StartupCalls = diffCalls(nil, b.calls.snapshot())
	err = b.profiled("apply", func() error {
		a, err := b.bulkApply(ctx)
		res.Apply = a
		return err
	})
	if err != nil {
		return res, fmt.Errorf("bulk apply: %w", err)
	}
	err = b.profiled("propagation", func() error {
		p, err := b.propagation(ctx)
		res.Propagation = p
		return err
	})
	if err != nil {
		return res, fmt.Errorf("propagation: %w", err)
	}
	res.LoadAfter = loadAvg()
	return res, nil
}

// startControlPlane starts the control plane as testenv.Start does, with
// kube-apiserver's and etcd's output in logPath: the API server logs a trace
// of every request slower than its threshold, which tells a stall in the
// API server from one in the operator.
func startControlPlane(ctx context.Context, logPath string) (env *testenv.Env, closeLog func(), err error) {
	root, err := controlplane.RepoRoot()
	if err != nil {
		return nil, nil, err
	}
	e, err := controlplane.New(ctx, root, controlplane.Options{})
	if err != nil {
		return nil, nil, err
	}
	f, err := os.Create(logPath)
	if err != nil {
		return nil, nil, fmt.Errorf("create the control plane's log: %w", err)
	}
	closeLog = func() { _ = f.Close() }
	e.ControlPlane.APIServer = &envtest.APIServer{Out: f, Err: f}
	e.ControlPlane.Etcd = &envtest.Etcd{Out: f, Err: f}
	cfg, err := e.Start()
	if err != nil {
		// envtest leaves what it started running when a later step fails.
		_ = e.Stop()
		closeLog()
		return nil, nil, fmt.Errorf("start the control plane: %w", err)
	}
	c, err := client.New(cfg, client.Options{Scheme: manager.Scheme()})
	if err != nil {
		_ = e.Stop()
		closeLog()
		return nil, nil, fmt.Errorf("create a client: %w", err)
	}
	return &testenv.Env{Environment: e, Config: cfg, Client: c}, closeLog, nil
}

// startOperator runs sallyport's manager in this process, as
// testenv.StartOperator does, but on a copy of the control plane's config
// with the operator's own rate limit and the call counter on its transport,
// and logging to a file. It returns once the first snapshot is built.
func (b *bench) startOperator(ctx context.Context) (stop func(), err error) {
	cfg := rest.CopyConfig(b.env.Config)
	cfg.QPS, cfg.Burst = b.o.OperatorQPS, b.o.OperatorBurst
	cfg.Wrap(b.calls.wrap)

	addr, err := testenv.FreeLoopbackAddr()
	if err != nil {
		return nil, err
	}
	b.decideURL = "http://" + addr
	logFile, err := os.Create(b.o.OperatorLog)
	if err != nil {
		return nil, fmt.Errorf("create the operator log: %w", err)
	}
	opLog := zap.New(zap.WriteTo(logFile))
	runCtx, cancel := context.WithCancel(ctx)
	op, err := manager.New(runCtx, cfg, manager.Options{
		MetricsBindAddress:     "0",
		HealthProbeBindAddress: "0",
		DecisionBindAddress:    addr,
		GRPCBindAddress:        "0",
		DecisionInsecure:       true,
		// The poller asks thousands of decisions; their log is not what is
		// measured here.
		DecisionLog: os.DevNull,
		// The sallyport binary's default.
		TokenReviewCacheTTL: 10 * time.Second,
		// run may start an operator more than once in a process (the smoke
		// test with -count): controller names need not be unique.
		ReplicaOfAnother: true,
	}, opLog)
	if err != nil {
		cancel()
		_ = logFile.Close()
		return nil, fmt.Errorf("create the operator: %w", err)
	}
	b.op = op
	done := make(chan error, 1)
	go func() { done <- op.Start(runCtx) }()
	stop = func() {
		cancel()
		if err := <-done; err != nil {
			b.log.Error(err, "Operator stopped with an error")
		}
		_ = logFile.Close()
	}
	deadline := time.Now().Add(time.Minute)
	for !op.Store.Ready() {
		select {
		case err := <-done:
			cancel()
			_ = logFile.Close()
			return nil, fmt.Errorf("operator stopped before it was ready: %w", err)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			stop()
			return nil, errors.New("operator not ready within a minute")
		}
	}
	b.log.Info("Operator ready", "decisionAPI", b.decideURL, "operatorQPS", cfg.QPS, "operatorBurst", cfg.Burst, "log", b.o.OperatorLog)
	return stop, nil
}

// startClients makes the benchmark's client and starts its informer cache,
// which watches the policies' status as `kubectl wait` would.
func (b *bench) startClients(ctx context.Context) (stop func(), err error) {
	cfg := rest.CopyConfig(b.env.Config)
	cfg.QPS, cfg.Burst = b.o.ClientQPS, b.o.ClientBurst
	b.client, err = client.New(cfg, client.Options{Scheme: manager.Scheme()})
	if err != nil {
		return nil, fmt.Errorf("create the benchmark's client: %w", err)
	}
	b.clientset, err = kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("create the benchmark's clientset: %w", err)
	}
	b.cache, err = cache.New(cfg, cache.Options{Scheme: manager.Scheme()})
	if err != nil {
		return nil, fmt.Errorf("create the benchmark's cache: %w", err)
	}
	cacheCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- b.cache.Start(cacheCtx) }()
	return func() {
		cancel()
		if err := <-done; err != nil {
			b.log.Error(err, "Benchmark cache stopped with an error")
		}
	}, nil
}

// profiled runs f, with a CPU profile of the process written to
// <out>/cpu-<name>.pprof when -profile is set.
func (b *bench) profiled(name string, f func() error) error {
	if !b.o.Profile {
		return f()
	}
	path := filepath.Join(b.o.Out, "cpu-"+name+".pprof")
	pf, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("create CPU profile: %w", err)
	}
	defer func() { _ = pf.Close() }()
	if err := pprof.StartCPUProfile(pf); err != nil {
		return fmt.Errorf("start CPU profile: %w", err)
	}
	err = f()
	pprof.StopCPUProfile()
	b.log.Info("Wrote CPU profile", "phase", name, "path", path)
	return err
}

// etcdDisk reads etcd's disk metrics, logging (not failing) when it cannot:
// they explain stalls but are not what is measured.
func (b *bench) etcdDisk(ctx context.Context) etcdDisk {
	if b.etcdURL == "" {
		return etcdDisk{}
	}
	d, err := readEtcdDisk(ctx, b.etcdURL)
	if err != nil {
		b.log.Info("Could not read etcd's disk metrics", "error", err.Error())
	}
	return d
}

// slowRequests reads the API server's slow requests so far, logging (not
// failing) when it cannot: they explain stalls but are not what is
// measured.
func (b *bench) slowRequests(ctx context.Context) slowRequests {
	s, err := readSlowRequests(ctx, b.clientset.RESTClient())
	if err != nil {
		b.log.Info("Could not read the API server's metrics", "error", err.Error())
	}
	return s
}

// loadAvg returns /proc/loadavg's first three fields, or "" where there is
// none.
func loadAvg() string {
	raw, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	var a, b, c string
	if _, err := fmt.Sscan(string(raw), &a, &b, &c); err != nil {
		return ""
	}
	return a + " " + b + " " + c
}

// clockTick is USER_HZ, the unit of /proc's CPU times: 100 on every Linux
// architecture Go supports.
const clockTick = 10 * time.Millisecond

// cpuSample is the CPU time used so far by this process (the benchmark's
// clients, the poller and the operator), by its children (the control
// plane's kube-apiserver and etcd), and by the whole machine.
type cpuSample struct {
	procs   map[string]time.Duration
	machine time.Duration
}

// cpuUse is the CPU time used between two samples, by process and by
// everything else on the machine (others: other people's work on a shared
// machine, the hypervisor's steal).
type cpuUse struct {
	Wall            time.Duration
	Self            time.Duration
	APIServer, Etcd time.Duration
	Others          time.Duration
}

func sampleCPU() cpuSample {
	s := cpuSample{procs: map[string]time.Duration{}}
	self := os.Getpid()
	if _, _, t, ok := procStat("self"); ok {
		s.procs["self"] = t
	}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		if e.Name()[0] < '0' || e.Name()[0] > '9' {
			continue
		}
		comm, ppid, t, ok := procStat(e.Name())
		if ok && ppid == self {
			s.procs[comm] += t
		}
	}
	if raw, err := os.ReadFile("/proc/stat"); err == nil {
		// cpu  user nice system idle iowait irq softirq steal ...
		fields := strings.Fields(strings.SplitN(string(raw), "\n", 2)[0])
		for i, f := range fields[1:] {
			if i == 3 || i == 4 { // idle, iowait
				continue
			}
			if i > 7 { // guest time is already in user
				break
			}
			n, _ := strconv.ParseInt(f, 10, 64)
			s.machine += time.Duration(n) * clockTick
		}
	}
	return s
}

// procStat reads a process's command name, parent and user+system CPU time.
func procStat(pid string) (comm string, ppid int, cpu time.Duration, ok bool) {
	raw, err := os.ReadFile(filepath.Join("/proc", pid, "stat"))
	if err != nil {
		return "", 0, 0, false
	}
	s := string(raw)
	open, closing := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	if open < 0 || closing < open {
		return "", 0, 0, false
	}
	fields := strings.Fields(s[closing+1:])
	// state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime
	if len(fields) < 13 {
		return "", 0, 0, false
	}
	ppid, _ = strconv.Atoi(fields[1])
	ut, _ := strconv.ParseInt(fields[11], 10, 64)
	st, _ := strconv.ParseInt(fields[12], 10, 64)
	return s[open+1 : closing], ppid, time.Duration(ut+st) * clockTick, true
}

// cpuSince is the CPU used since before, over wall.
func cpuSince(before cpuSample, wall time.Duration) cpuUse {
	after := sampleCPU()
	d := func(k string) time.Duration { return after.procs[k] - before.procs[k] }
	u := cpuUse{Wall: wall, Self: d("self"), APIServer: d("kube-apiserver"), Etcd: d("etcd")}
	u.Others = max(after.machine-before.machine-u.Self-u.APIServer-u.Etcd, 0)
	return u
}
