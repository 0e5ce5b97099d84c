// Package manager wires sallyport's operator together: the snapshot loader
// that runs on every replica, the status controllers that run on the leader,
// the admission webhooks, metrics and probes.
package manager

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
	"sigs.k8s.io/controller-runtime/pkg/metrics/filters"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/webhook"

	"github.com/sallyport/sallyport/api/v1alpha1"
	"github.com/sallyport/sallyport/controllers"
	"github.com/sallyport/sallyport/internal/certs"
	"github.com/sallyport/sallyport/internal/credential"
	"github.com/sallyport/sallyport/internal/decision"
	"github.com/sallyport/sallyport/internal/decisionlog"
	"github.com/sallyport/sallyport/internal/policy"
	"github.com/sallyport/sallyport/internal/store"
	"github.com/sallyport/sallyport/internal/tlspolicy"
	"github.com/sallyport/sallyport/internal/usage"
	policywebhook "github.com/sallyport/sallyport/webhook"
)

// The decision servers review credentials with the API server.
// +kubebuilder:rbac:groups=authentication.k8s.io,resources=tokenreviews,verbs=create

// LeaderElectionID names the Lease the replicas elect a leader with.
const LeaderElectionID = "sallyport.policy.sallyport.dev"

// Options are the manager's settings, one per command-line flag.
type Options struct {
	MetricsBindAddress     string
	MetricsSecure          bool
	HealthProbeBindAddress string

	EnableWebhooks  bool
	WebhookHost     string
	WebhookPort     int
	WebhookCertPath string

	LeaderElect             bool
	LeaderElectionNamespace string

	// DecisionBindAddress is the HTTPS decision API's address ("0"
	// disables it); DecisionCertPath holds its tls.crt and tls.key;
	// DecisionInsecure serves it over plain HTTP, on loopback only.
	DecisionBindAddress string
	DecisionCertPath    string
	DecisionInsecure    bool
	// GRPCBindAddress is the Envoy ext_authz address ("0" disables it). It
	// shares the decision API's certificate and insecure switch.
	GRPCBindAddress string
	// DecisionLog is where decision lines go: "-" for stdout, or a file.
	DecisionLog     string
	DecisionLogMode decisionlog.Mode
	// TokenReviewCacheTTL bounds how long a credential review is reused.
	TokenReviewCacheTTL time.Duration

	// APIAudiences are refused as ConnectionPolicy audiences, in addition to
	// the well-known ones and the issuer the API server advertises.
	APIAudiences []string

	// NoUsageMetrics turns off the per-rule and per-reach usage metrics
	// (sallyport_rule_*, sallyport_reach_*): one series per rule, which a
	// cluster with very many policies may not want to scrape.
	NoUsageMetrics bool

	// ShutdownDelay is how long the manager keeps serving after it is told
	// to stop, with its readiness check failing, before it stops accepting
	// connections: long enough for the Service's endpoints to drop the
	// replica, so no gateway sends a new decision to a closed listener. Zero
	// stops at once (tests, a local run).
	ShutdownDelay time.Duration

	// ReplicaOfAnother lets a second manager run in the same process (tests
	// that play several replicas): controller names need not be unique.
	ReplicaOfAnother bool

	// Usage configures the usage reports and their merge into status.
	Usage UsageOptions

	// Tokens tunes Secret-mode token issuance; tests shorten its overlap and
	// wrap its TokenRequest client.
	Tokens controllers.TokenOptions

	// Certs says where the webhook and decision certificates come from.
	Certs CertOptions
}

// UsageOptions configure usage tracking across replicas.
type UsageOptions struct {
	// Namespace holds the reports; empty turns status.usage and
	// status.dryRun off (the per-replica metrics stay).
	Namespace string
	// Replica names this process's report.
	Replica string
	// Pod is the pod this process runs in; nil outside a cluster.
	Pod *usage.Pod
	// Interval is how often reports are written and merged.
	Interval time.Duration
	// Window is how long a grant must go unused to count as unused.
	Window time.Duration
}

// Certificate management modes.
const (
	CertManagementSelf     = "self"
	CertManagementExternal = "external"
)

// CertOptions configure the operator's own certificates.
type CertOptions struct {
	// Management is CertManagementSelf (the operator makes, rotates and
	// publishes them) or CertManagementExternal (they are in the cert
	// directories, from cert-manager say); empty means external.
	Management string
	// Namespace holds the Secret and the ConfigMap sallyport-ca.
	Namespace string
	// SecretName defaults to certs.DefaultSecretName.
	SecretName string
	// WebhookServiceName and DecisionServiceName are the Services whose DNS
	// names the serving certificate covers (in Namespace).
	WebhookServiceName  string
	DecisionServiceName string
	// ExtraNames are more DNS names or IP addresses for it.
	ExtraNames []string
	// The webhook configurations that get the CA bundle; empty skips one.
	ValidatingWebhookConfigurationName string
	MutatingWebhookConfigurationName   string
	// CheckInterval and SyncInterval: see certs.Config.
	CheckInterval, SyncInterval time.Duration
}

// Scheme returns the scheme the manager's clients use.
func Scheme() *runtime.Scheme {
	s := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(s))
	utilruntime.Must(v1alpha1.AddToScheme(s))
	return s
}

// tlsOpts apply to the admission webhook and metrics listeners: the
// operator's TLS policy (TLS 1.2 or newer, modern suites), and HTTP/1.1
// only, which keeps the HTTP/2 rapid-reset and stream-exhaustion attacks
// (CVE-2023-44487, CVE-2023-39325) off these endpoints.
var tlsOpts = []func(*tls.Config){func(c *tls.Config) {
	tlspolicy.Apply(c)
	c.NextProtos = []string{"http/1.1"}
}}

// Operator is a wired manager and the store its snapshot loader publishes
// to.
type Operator struct {
	Manager ctrl.Manager
	Store   *store.Store
	// Decisions is the decision server, nil when the decision API and
	// ext_authz are both disabled.
	Decisions *policywebhook.DecisionServer
	log       logr.Logger
	opts      Options
	// closeLog flushes the decision log once the servers have stopped.
	closeLog func() error
	// certs are the self-managed certificates, nil when external.
	certs *certs.Manager
	// usage writes this replica's usage report; nil when usage tracking is
	// off.
	usage *usage.Reporter
	// stopping is set when the manager has been told to stop: the
	// readiness check fails from then on.
	stopping atomic.Bool
}

// Run runs the manager until ctx ends.
func Run(ctx context.Context, cfg *rest.Config, o Options, log logr.Logger) error {
	op, err := New(ctx, cfg, o, log)
	if err != nil {
		return err
	}
	return op.Start(ctx)
}

// Start runs the manager until ctx ends.
func (op *Operator) Start(ctx context.Context) error {
	op.log.Info("Starting manager", "leaderElection", op.opts.LeaderElect, "webhooks", op.opts.EnableWebhooks)
	if op.certs != nil {
		// The servers read their certificate when they start: write it
		// first.
		if err := op.certs.Bootstrap(ctx); err != nil {
			return err
		}
	}
	err := op.Manager.Start(op.delayStop(ctx))
	// The manager returns once every runnable, the decision servers among
	// them, has stopped: no decision is still being logged.
	if op.closeLog != nil {
		if cerr := op.closeLog(); cerr != nil {
			op.log.Error(cerr, "Could not flush the decision log")
		}
	}
	if op.usage != nil {
		// The last report, with every decision this process made.
		flushCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		if ferr := op.usage.Flush(flushCtx); ferr != nil {
			op.log.Error(ferr, "Could not write the final usage report; the decisions since the last one are not counted in status")
		}
		cancel()
	}
	if err != nil {
		return fmt.Errorf("run manager: %w", err)
	}
	return nil
}

// delayStop returns a context that ends ShutdownDelay after ctx ends; in
// between, the replica reports not ready and keeps serving.
func (op *Operator) delayStop(ctx context.Context) context.Context {
	run, cancel := context.WithCancel(context.WithoutCancel(ctx))
	go func() {
		<-ctx.Done()
		op.stopping.Store(true)
		if d := op.opts.ShutdownDelay; d > 0 {
			op.log.Info("Stopping: not ready from now on; serving on until the endpoints drop this replica", "shutdownDelay", d.String())
			time.Sleep(d)
		}
		cancel()
	}()
	return run
}

// New wires the manager: the snapshot loader, the status controllers, the
// admission webhooks (when enabled), and the health and readiness checks.
// ctx bounds the discovery of the API server's issuer.
func New(ctx context.Context, cfg *rest.Config, o Options, log logr.Logger) (*Operator, error) {
	ctrl.SetLogger(log)
	apiAudiences := append([]string(nil), o.APIAudiences...)
	discoverCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	issuer, err := credential.DiscoverIssuer(discoverCtx, cfg)
	cancel()
	if err != nil {
		// The well-known audiences and --api-audiences are still refused.
		log.Info("Could not discover the service account issuer; refusing only the well-known and configured API audiences", "error", err.Error())
	} else {
		log.Info("Discovered the service account issuer", "issuer", issuer)
		apiAudiences = append(apiAudiences, issuer)
	}
	compiler := policy.NewCompiler(policy.CompilerOptions{APIAudiences: apiAudiences})

	metricsOpts := metricsserver.Options{
		BindAddress:   o.MetricsBindAddress,
		SecureServing: o.MetricsSecure,
		TLSOpts:       tlsOpts,
	}
	if o.MetricsSecure {
		metricsOpts.FilterProvider = filters.WithAuthenticationAndAuthorization
	}
	mgrOpts := ctrl.Options{
		Scheme:                        Scheme(),
		Metrics:                       metricsOpts,
		HealthProbeBindAddress:        o.HealthProbeBindAddress,
		LeaderElection:                o.LeaderElect,
		LeaderElectionID:              LeaderElectionID,
		LeaderElectionNamespace:       o.LeaderElectionNamespace,
		LeaderElectionReleaseOnCancel: true,
		GracefulShutdownTimeout:       ptr.To(30 * time.Second),
		// Never cache Secrets: the operator may not list them cluster-wide
		// (it reaches them only in namespaces that delegate Secret mode).
		Client: client.Options{Cache: &client.CacheOptions{DisableFor: []client.Object{&corev1.Secret{}}}},
	}
	if o.ReplicaOfAnother {
		mgrOpts.Controller.SkipNameValidation = ptr.To(true)
	}
	certCfg, err := selfCerts(&o)
	if err != nil {
		return nil, err
	}
	if o.EnableWebhooks {
		mgrOpts.WebhookServer = webhook.NewServer(webhook.Options{
			Host:    o.WebhookHost,
			Port:    o.WebhookPort,
			CertDir: o.WebhookCertPath,
			TLSOpts: tlsOpts,
		})
	}
	mgr, err := ctrl.NewManager(cfg, mgrOpts)
	if err != nil {
		return nil, fmt.Errorf("create manager: %w", err)
	}

	st := store.New()
	if !o.NoUsageMetrics {
		if err := store.RegisterUsageMetrics(ctrlmetrics.Registry, st); err != nil {
			return nil, fmt.Errorf("register usage metrics: %w", err)
		}
	}
	loader := store.NewLoader(mgr.GetCache(), st, store.NewBuilder(compiler), log.WithName("snapshot"))
	if err := mgr.Add(loader); err != nil {
		return nil, fmt.Errorf("add snapshot loader: %w", err)
	}
	rec := mgr.GetEventRecorder("sallyport")
	tokens, err := controllers.NewTokenIssuer(cfg, mgr.GetClient(), mgr.GetAPIReader(), o.Tokens)
	if err != nil {
		return nil, err
	}
	tracking, reporter, err := addUsage(mgr, st, o.Usage, log)
	if err != nil {
		return nil, err
	}
	connRec := controllers.NewConnectionPolicyReconciler(mgr.GetClient(), st, rec, tokens)
	connRec.Usage = tracking
	if err := connRec.SetupWithManager(mgr); err != nil {
		return nil, fmt.Errorf("set up ConnectionPolicy controller: %w", err)
	}
	resRec := controllers.NewResourcePolicyReconciler(mgr.GetClient(), st, rec)
	resRec.Usage = tracking
	if err := resRec.SetupWithManager(mgr); err != nil {
		return nil, fmt.Errorf("set up ResourcePolicy controller: %w", err)
	}
	if o.EnableWebhooks {
		if err := policywebhook.Setup(mgr, compiler, st); err != nil {
			return nil, err
		}
		if err := policywebhook.SetupPodTokens(mgr); err != nil {
			return nil, fmt.Errorf("register the pod token webhook: %w", err)
		}
	}

	op := &Operator{Manager: mgr, Store: st, log: log, opts: o, usage: reporter}
	if certCfg != nil {
		cm, err := certs.New(*certCfg, mgr.GetClient(), mgr.GetAPIReader(), log.WithName("certs"))
		if err != nil {
			return nil, err
		}
		if err := mgr.Add(cm.Rotator()); err != nil {
			return nil, fmt.Errorf("add the certificate rotator: %w", err)
		}
		if err := mgr.Add(cm.Syncer()); err != nil {
			return nil, fmt.Errorf("add the certificate syncer: %w", err)
		}
		op.certs = cm
	}
	if err := op.addDecisionServers(cfg, st, log); err != nil {
		return nil, err
	}

	if err := mgr.AddHealthzCheck("ping", healthz.Ping); err != nil {
		return nil, fmt.Errorf("add health check: %w", err)
	}
	if err := mgr.AddReadyzCheck("stopping", func(*http.Request) error {
		if op.stopping.Load() {
			return errors.New("stopping")
		}
		return nil
	}); err != nil {
		return nil, fmt.Errorf("add readiness check: %w", err)
	}
	if err := mgr.AddReadyzCheck("snapshot", func(*http.Request) error {
		if !st.Ready() {
			return errors.New("the first policy snapshot is not built yet")
		}
		return nil
	}); err != nil {
		return nil, fmt.Errorf("add readiness check: %w", err)
	}
	if o.EnableWebhooks {
		if err := mgr.AddReadyzCheck("webhook", mgr.GetWebhookServer().StartedChecker()); err != nil {
			return nil, fmt.Errorf("add webhook readiness check: %w", err)
		}
	}
	return op, nil
}

// addUsage adds the usage reporter (every replica) and merger (the leader)
// and returns where the policy controllers find the merged usage; nil when
// usage tracking is off.
func addUsage(mgr ctrl.Manager, st *store.Store, o UsageOptions, log logr.Logger) (*controllers.UsageTracking, *usage.Reporter, error) {
	if o.Namespace == "" {
		log.Info("No usage namespace: policies' status.usage and status.dryRun are not kept (set --usage-namespace, or run in a pod)")
		return nil, nil, nil
	}
	if o.Replica == "" || o.Interval <= 0 || o.Window <= 0 {
		return nil, nil, fmt.Errorf("usage tracking needs a replica name, a positive interval and window (got %q, %s, %s)", o.Replica, o.Interval, o.Window)
	}
	rep := usage.NewReporter(mgr.GetClient(), mgr.GetAPIReader(), st, usage.ReporterOptions{
		Namespace: o.Namespace, Replica: o.Replica, Pod: o.Pod, Interval: o.Interval,
	}, log.WithName("usage"))
	if err := mgr.Add(rep); err != nil {
		return nil, nil, fmt.Errorf("add the usage reporter: %w", err)
	}
	m := usage.NewMerger(mgr.GetClient(), mgr.GetAPIReader(), st, usage.MergerOptions{Namespace: o.Namespace, Interval: o.Interval}, log.WithName("usage"))
	if err := mgr.Add(m); err != nil {
		return nil, nil, fmt.Errorf("add the usage merger: %w", err)
	}
	log.Info("Tracking usage across replicas", "namespace", o.Namespace, "replica", o.Replica, "interval", o.Interval.String(), "window", o.Window.String())
	return &controllers.UsageTracking{Merger: m, Window: o.Window}, rep, nil
}

// addDecisionServers adds the decision API and the ext_authz server, which
// share one engine, one credential cache and one decision log.
func (op *Operator) addDecisionServers(cfg *rest.Config, st *store.Store, log logr.Logger) error {
	o := op.opts
	httpOn, grpcOn := enabled(o.DecisionBindAddress), enabled(o.GRPCBindAddress)
	if !httpOn && !grpcOn {
		return nil
	}
	if !o.DecisionInsecure && o.DecisionCertPath == "" {
		return errors.New("the decision API needs --decision-cert-path (a directory with tls.crt and tls.key), or --decision-insecure on a loopback address")
	}
	auth, err := credential.NewCachingAuthenticator(cfg, credential.Options{
		CacheTTL: o.TokenReviewCacheTTL,
		Log:      log.WithName("credential"),
	})
	if err != nil {
		return fmt.Errorf("create the credential authenticator: %w", err)
	}
	out, closeOut, err := openDecisionLog(o.DecisionLog)
	if err != nil {
		return err
	}
	dlog := decisionlog.New(out, decisionlog.Options{Mode: o.DecisionLogMode})
	op.closeLog = func() error { return errors.Join(dlog.Close(), closeOut()) }

	engine := decision.NewEngine(st, auth, decision.Options{Logger: log.WithName("decision")})
	ds := policywebhook.NewDecisionServer(policywebhook.DecisionServerOptions{
		BindAddress: o.DecisionBindAddress,
		CertDir:     o.DecisionCertPath,
		Insecure:    o.DecisionInsecure,
	}, engine, dlog, st.Ready, log.WithName("decision-api"))
	op.Decisions = ds
	if httpOn {
		if err := op.Manager.Add(ds); err != nil {
			return fmt.Errorf("add the decision API: %w", err)
		}
	}
	if grpcOn {
		ext := policywebhook.NewExtAuthzServer(policywebhook.ExtAuthzOptions{
			BindAddress: o.GRPCBindAddress,
			CertDir:     o.DecisionCertPath,
			Insecure:    o.DecisionInsecure,
		}, ds, log.WithName("ext-authz"))
		if err := op.Manager.Add(ext); err != nil {
			return fmt.Errorf("add the ext_authz server: %w", err)
		}
	}
	return nil
}

// selfCerts returns the configuration of self-managed certificates, nil when
// they are external or no server needs one, and defaults the certificate
// directories they are written to.
func selfCerts(o *Options) (*certs.Config, error) {
	c := o.Certs
	switch c.Management {
	case "", CertManagementExternal:
		return nil, nil
	case CertManagementSelf:
	default:
		return nil, fmt.Errorf("unknown certificate management %q (want %q or %q)", c.Management, CertManagementSelf, CertManagementExternal)
	}
	cfg := &certs.Config{
		Namespace:     c.Namespace,
		SecretName:    c.SecretName,
		CheckInterval: c.CheckInterval,
		SyncInterval:  c.SyncInterval,
	}
	if o.EnableWebhooks {
		if o.WebhookCertPath == "" {
			// controller-runtime's default.
			o.WebhookCertPath = filepath.Join(os.TempDir(), "k8s-webhook-server", "serving-certs")
		}
		cfg.CertDirs = append(cfg.CertDirs, o.WebhookCertPath)
		if c.WebhookServiceName != "" {
			cfg.Names = append(cfg.Names, certs.ServiceNames(c.WebhookServiceName, c.Namespace)...)
		}
		cfg.ValidatingWebhookConfiguration = c.ValidatingWebhookConfigurationName
		cfg.MutatingWebhookConfiguration = c.MutatingWebhookConfigurationName
	}
	if (enabled(o.DecisionBindAddress) || enabled(o.GRPCBindAddress)) && !o.DecisionInsecure {
		if o.DecisionCertPath == "" {
			o.DecisionCertPath = filepath.Join(os.TempDir(), "sallyport", "decision-certs")
		}
		if o.DecisionCertPath != o.WebhookCertPath || !o.EnableWebhooks {
			cfg.CertDirs = append(cfg.CertDirs, o.DecisionCertPath)
		}
		if c.DecisionServiceName != "" {
			cfg.Names = append(cfg.Names, certs.ServiceNames(c.DecisionServiceName, c.Namespace)...)
		}
	}
	if len(cfg.CertDirs) == 0 {
		return nil, nil
	}
	cfg.Names = append(cfg.Names, c.ExtraNames...)
	return cfg, nil
}

func enabled(addr string) bool { return addr != "" && addr != "0" }

// openDecisionLog opens the decision log destination: stdout for "-" or "",
// else a file opened for appending, readable by its owner only.
func openDecisionLog(path string) (io.Writer, func() error, error) {
	if path == "" || path == "-" {
		return os.Stdout, func() error { return nil }, nil
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, nil, fmt.Errorf("open the decision log %s: %w", path, err)
	}
	return f, f.Close, nil
}
