package testenv

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/sallyport/sallyport/internal/manager"
)

// StartOperator runs sallyport's manager in this process against the control
// plane, serving the control plane's webhooks when o.EnableWebhooks is set,
// and returns once its first snapshot is built (and its webhook server
// started). With o.Certs.Management set to self, the operator's own
// certificates replace envtest's. Metrics and probes are off unless o sets them. stop cancels the
// manager and waits for it to return.
func (e *Env) StartOperator(o manager.Options) (op *manager.Operator, stop func(), err error) {
	if o.MetricsBindAddress == "" {
		o.MetricsBindAddress = "0"
	}
	if o.HealthProbeBindAddress == "" {
		o.HealthProbeBindAddress = "0"
	}
	if o.EnableWebhooks {
		wh := e.WebhookInstallOptions
		if wh.LocalServingPort == 0 {
			return nil, nil, errors.New("webhooks enabled but the control plane has none installed")
		}
		o.WebhookHost, o.WebhookPort = wh.LocalServingHost, wh.LocalServingPort
		// With self-managed certificates the operator writes its own (to
		// o.WebhookCertPath) and injects its CA over envtest's.
		if o.Certs.Management != manager.CertManagementSelf {
			o.WebhookCertPath = wh.LocalServingCertDir
		}
	}
	var out io.Writer = os.Stderr
	if e.OperatorLog != nil {
		out = e.OperatorLog
	}
	log := zap.New(zap.WriteTo(out), zap.UseDevMode(true))
	ctx, cancel := context.WithCancel(context.Background())
	op, err = manager.New(ctx, e.Config, o, log)
	if err != nil {
		cancel()
		return nil, nil, err
	}
	done := make(chan error, 1)
	go func() { done <- op.Start(ctx) }()
	stop = func() {
		cancel()
		if err := <-done; err != nil {
			fmt.Fprintf(os.Stderr, "testenv: operator: %v\n", err)
		}
	}

	deadline := time.Now().Add(time.Minute)
	for !op.Store.Ready() || (o.EnableWebhooks && op.Manager.GetWebhookServer().StartedChecker()(nil) != nil) {
		select {
		case err := <-done:
			cancel()
			return nil, nil, fmt.Errorf("operator stopped before it was ready: %w", err)
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			stop()
			return nil, nil, errors.New("operator not ready within a minute")
		}
	}
	return op, stop, nil
}
