package manager

import (
	"context"
	"strings"
	"testing"

	"github.com/go-logr/logr"
	"k8s.io/client-go/rest"
)

// A decision API with neither a certificate nor the loopback-only plaintext
// switch is refused at start-up with a message saying which flag to set.
func TestDecisionAPIWithoutCertificateIsRefused(t *testing.T) {
	// Nothing listens there: issuer discovery fails fast, and nothing else
	// in New talks to the API server.
	cfg := &rest.Config{Host: "https://127.0.0.1:1"}
	_, err := New(context.Background(), cfg, Options{
		MetricsBindAddress:     "0",
		HealthProbeBindAddress: "0",
		// Each test builds a manager in this one process.
		ReplicaOfAnother:    true,
		DecisionBindAddress: "127.0.0.1:0",
		Certs:               CertOptions{Management: CertManagementExternal},
	}, logr.Discard())
	if err == nil || !strings.Contains(err.Error(), "--decision-cert-path") || !strings.Contains(err.Error(), "--decision-insecure") {
		t.Fatalf("New = %v, want an error naming --decision-cert-path and --decision-insecure", err)
	}
}

func TestUnknownCertManagementIsRefused(t *testing.T) {
	cfg := &rest.Config{Host: "https://127.0.0.1:1"}
	_, err := New(context.Background(), cfg, Options{
		MetricsBindAddress:     "0",
		HealthProbeBindAddress: "0",
		// Each test builds a manager in this one process.
		ReplicaOfAnother: true,
		EnableWebhooks:   true,
		Certs:            CertOptions{Management: "vault"},
	}, logr.Discard())
	if err == nil || !strings.Contains(err.Error(), `unknown certificate management "vault"`) {
		t.Fatalf("New = %v, want an error naming the mode", err)
	}
}

func TestUnwritableDecisionLogIsRefused(t *testing.T) {
	cfg := &rest.Config{Host: "https://127.0.0.1:1"}
	_, err := New(context.Background(), cfg, Options{
		MetricsBindAddress:     "0",
		HealthProbeBindAddress: "0",
		// Each test builds a manager in this one process.
		ReplicaOfAnother:    true,
		DecisionBindAddress: "127.0.0.1:0",
		DecisionInsecure:    true,
		DecisionLog:         t.TempDir() + "/missing/decisions.log",
	}, logr.Discard())
	if err == nil || !strings.Contains(err.Error(), "open the decision log") {
		t.Fatalf("New = %v, want an error about the decision log", err)
	}
}
