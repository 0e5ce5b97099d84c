package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"runtime"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client/config"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/sallyport/sallyport/internal/certs"
	"github.com/sallyport/sallyport/internal/decisionlog"
	"github.com/sallyport/sallyport/internal/gctune"
	"github.com/sallyport/sallyport/internal/manager"
	usagereport "github.com/sallyport/sallyport/internal/usage"
	"github.com/sallyport/sallyport/internal/version"
)

// defaultReplica names this process's usage report: its pod in a cluster,
// its host outside one.
func defaultReplica() string {
	if p := os.Getenv("POD_NAME"); p != "" {
		return p
	}
	h, err := os.Hostname()
	if err != nil {
		return "local"
	}
	return h
}

func runManager(args []string) int {
	fs := flag.NewFlagSet("sallyport manager", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: sallyport manager [flags]\n\nRun the operator. Flags:\n")
		fs.PrintDefaults()
	}
	var o manager.Options
	var apiAudiences string
	// --kubeconfig is registered by controller-runtime's config package on
	// the global flag set; bring it over so it is documented here.
	fs.Var(flagValue("kubeconfig"), "kubeconfig", "Path to a kubeconfig. Default: in-cluster, then $KUBECONFIG, then ~/.kube/config.")
	fs.StringVar(&o.MetricsBindAddress, "metrics-bind-address", ":8080", `Address of the Prometheus metrics endpoint; "0" disables it.`)
	fs.BoolVar(&o.MetricsSecure, "metrics-secure", true, "Serve metrics over HTTPS, authenticated and authorized against the API server (TokenReview, SubjectAccessReview).")
	fs.StringVar(&o.HealthProbeBindAddress, "health-probe-bind-address", ":8081", "Address of /healthz and /readyz (ready once the first policy snapshot is built).")
	fs.BoolVar(&o.EnableWebhooks, "enable-webhooks", true, "Serve the admission webhooks. Turn off only when running outside the cluster, where the API server cannot call them.")
	fs.StringVar(&o.WebhookHost, "webhook-host", "", "Address the admission webhook server listens on; empty means every interface.")
	fs.IntVar(&o.WebhookPort, "webhook-port", 9443, "Port of the admission webhook server.")
	fs.StringVar(&o.WebhookCertPath, "webhook-cert-path", "", "Directory with tls.crt and tls.key for the admission webhook server; empty means controller-runtime's default (<temp>/k8s-webhook-server/serving-certs).")
	fs.BoolVar(&o.LeaderElect, "leader-elect", false, "Elect a leader for status writes; every replica still compiles policies. Turn on with more than one replica.")
	fs.StringVar(&o.LeaderElectionNamespace, "leader-election-namespace", "", "Namespace of the leader election Lease; empty means the namespace the manager runs in.")
	fs.StringVar(&o.DecisionBindAddress, "decision-bind-address", ":8443", `Address of the HTTPS decision API (/v1/decide, /v1/check/*); "0" disables it.`)
	fs.StringVar(&o.DecisionCertPath, "decision-cert-path", "", "Directory with tls.crt and tls.key for the decision API and ext_authz; reloaded when they change.")
	fs.BoolVar(&o.DecisionInsecure, "decision-insecure", false, "Serve the decision API and ext_authz without TLS. Allowed on loopback addresses only; for local runs.")
	fs.StringVar(&o.GRPCBindAddress, "grpc-bind-address", ":9001", `Address of the Envoy ext_authz gRPC service; "0" disables it.`)
	fs.StringVar(&o.DecisionLog, "decision-log", "-", `Where the decision log goes, one JSON line per decision: "-" for stdout, or a file (appended to).`)
	decisionLogMode := fs.String("decision-log-mode", "block", `What a full decision log queue does: "block" waits (no line is lost), "drop" drops and counts in sallyport_decision_log_dropped_total.`)
	usageMetrics := fs.Bool("usage-metrics", true, "Export per-rule and per-reach usage metrics (sallyport_rule_*, sallyport_reach_*): one series per rule; turn off for very many policies.")
	fs.DurationVar(&o.ShutdownDelay, "shutdown-delay", 5*time.Second, "After SIGTERM, how long to keep serving with /readyz failing before closing the listeners, so the Service's endpoints drop this replica first; 0 stops at once.")
	fs.DurationVar(&o.TokenReviewCacheTTL, "token-review-cache-ttl", 10*time.Second, "Upper bound of how long a credential review is reused; never past the token's expiry.")
	fs.StringVar(&apiAudiences, "api-audiences", "", "Comma-separated audiences the API server accepts (its --api-audiences), refused as ConnectionPolicy audiences. The issuer it advertises and the well-known kubernetes.default.svc names are refused anyway.")
	fs.StringVar(&o.Certs.Management, "cert-management", manager.CertManagementSelf, `Where the webhook and decision certificates come from: "self" makes a CA and serving certificate, keeps them in a Secret, rotates them, injects the CA into the webhook configurations and publishes it in the ConfigMap sallyport-ca; "external" reads them from --webhook-cert-path and --decision-cert-path (cert-manager, say).`)
	fs.StringVar(&o.Certs.Namespace, "cert-namespace", os.Getenv("POD_NAMESPACE"), "Namespace of the certificate Secret, the ConfigMap sallyport-ca and the Services (self only). Default: $POD_NAMESPACE.")
	fs.StringVar(&o.Certs.SecretName, "cert-secret-name", "sallyport-certs", "Secret holding the self-managed CA and serving certificate.")
	fs.StringVar(&o.Certs.WebhookServiceName, "webhook-service-name", "sallyport-webhook-service", "Service of the admission webhooks; the serving certificate covers its DNS names (self only).")
	fs.StringVar(&o.Certs.DecisionServiceName, "decision-service-name", "sallyport-decision-service", "Service of the decision API and ext_authz; the serving certificate covers its DNS names (self only).")
	certExtraNames := fs.String("cert-extra-names", "", "Comma-separated extra DNS names or IP addresses for the serving certificate (self only).")
	fs.StringVar(&o.Certs.ValidatingWebhookConfigurationName, "validating-webhook-configuration-name", "sallyport-validating-webhook-configuration", `ValidatingWebhookConfiguration that gets the CA bundle (self only); "" skips it.`)
	fs.StringVar(&o.Certs.MutatingWebhookConfigurationName, "mutating-webhook-configuration-name", "sallyport-mutating-webhook-configuration", `MutatingWebhookConfiguration that gets the CA bundle (self only); "" skips it.`)
	fs.StringVar(&o.Usage.Namespace, "usage-namespace", os.Getenv("POD_NAMESPACE"), "Namespace of the usage reports each replica writes and the leader merges into the policies' status; empty turns status.usage and status.dryRun off. Default: $POD_NAMESPACE.")
	fs.StringVar(&o.Usage.Replica, "usage-replica", defaultReplica(), "Name of this replica's usage report; two processes running at once must not share it. Default: $POD_NAME, else the host name.")
	fs.DurationVar(&o.Usage.Interval, "usage-interval", time.Minute, "How often each replica writes its usage report and the leader merges them: status.usage lags the decisions by up to about twice this.")
	fs.DurationVar(&o.Usage.Window, "usage-window", 30*24*time.Hour, "How long a grant must go unused to be counted in status.usage.unused.")
	zapOpts := zap.Options{}
	zapOpts.BindFlags(fs)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "sallyport manager: unexpected arguments %q\n", fs.Args())
		return 2
	}
	mode, err := decisionlog.ParseMode(*decisionLogMode)
	if err != nil {
		fmt.Fprintf(os.Stderr, "sallyport manager: --decision-log-mode: %v\n", err)
		return 2
	}
	o.DecisionLogMode = mode
	switch o.Certs.Management {
	case manager.CertManagementSelf, manager.CertManagementExternal:
	default:
		fmt.Fprintf(os.Stderr, "sallyport manager: --cert-management must be %q or %q\n", manager.CertManagementSelf, manager.CertManagementExternal)
		return 2
	}
	o.Certs.ExtraNames = certs.SplitNames(*certExtraNames)
	o.NoUsageMetrics = !*usageMetrics
	if o.ShutdownDelay < 0 {
		fmt.Fprintln(os.Stderr, "sallyport manager: --shutdown-delay must not be negative")
		return 2
	}
	if o.Usage.Interval <= 0 || o.Usage.Window <= 0 {
		fmt.Fprintln(os.Stderr, "sallyport manager: --usage-interval and --usage-window must be positive")
		return 2
	}
	if o.Usage.Namespace != "" && strings.TrimSpace(o.Usage.Replica) == "" {
		fmt.Fprintln(os.Stderr, "sallyport manager: --usage-replica must not be empty while --usage-namespace is set")
		return 2
	}
	if name, uid := os.Getenv("POD_NAME"), os.Getenv("POD_UID"); name != "" && uid != "" {
		o.Usage.Pod = &usagereport.Pod{Name: name, UID: types.UID(uid)}
	}
	if o.TokenReviewCacheTTL <= 0 {
		fmt.Fprintln(os.Stderr, "sallyport manager: --token-review-cache-ttl must be positive")
		return 2
	}
	for _, a := range strings.Split(apiAudiences, ",") {
		if a = strings.TrimSpace(a); a != "" {
			o.APIAudiences = append(o.APIAudiences, a)
		}
	}

	log := zap.New(zap.UseFlagOptions(&zapOpts))
	log.Info("Starting sallyport", "version", version.Get().String())
	if gc := gctune.Apply(); gc != (gctune.Settings{}) {
		log.Info("Tuned the garbage collector for the decision path (GOGC and GOMEMLIMIT override)", "gcPercent", gc.GCPercent, "memoryLimitBytes", gc.MemoryLimit)
	}
	if advice := gctune.OneProcessorAdvice(runtime.GOMAXPROCS(0)); advice != "" {
		log.Info(advice)
	}
	cfg, err := config.GetConfig()
	if err != nil {
		log.Error(err, "Could not load a kubeconfig")
		return 1
	}
	if err := manager.Run(ctrl.SetupSignalHandler(), cfg, o, log); err != nil {
		log.Error(err, "Manager stopped")
		return 1
	}
	return 0
}

// flagValue exposes a flag of the global flag set on another flag set.
func flagValue(name string) flag.Value {
	f := flag.CommandLine.Lookup(name)
	if f == nil {
		panic(fmt.Sprintf("flag %q is not registered", name))
	}
	return f.Value
}
