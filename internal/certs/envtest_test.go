package certs_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/sallyport/sallyport/internal/certs"
	"github.com/sallyport/sallyport/internal/controlplane"
	"github.com/sallyport/sallyport/internal/manager"
	"github.com/sallyport/sallyport/internal/testenv"
)

var env *testenv.Env

func TestMain(m *testing.M) {
	testenv.Main(m, controlplane.Options{Webhooks: true}, func(e *testenv.Env) (func(), error) {
		env = e
		return nil, nil
	})
}

func startSelf(t *testing.T, ns string) (webhookAddr, decisionAddr string, stop func()) {
	t.Helper()
	decisionAddr, err := testenv.FreeLoopbackAddr()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	_, stop, err = env.StartOperator(manager.Options{
		EnableWebhooks:      true,
		WebhookCertPath:     filepath.Join(dir, "webhook"),
		DecisionBindAddress: decisionAddr,
		DecisionCertPath:    filepath.Join(dir, "decision"),
		GRPCBindAddress:     "0",
		DecisionLog:         filepath.Join(dir, "decisions.log"),
		TokenReviewCacheTTL: time.Second,
		// A second start in the same process registers the controllers again.
		ReplicaOfAnother: true,
		Certs: manager.CertOptions{
			Management:          manager.CertManagementSelf,
			Namespace:           ns,
			WebhookServiceName:  "sallyport-webhook-service",
			DecisionServiceName: "sallyport-decision-service",
			// The API server calls envtest's webhook URL on loopback.
			ExtraNames:                         []string{"127.0.0.1"},
			ValidatingWebhookConfigurationName: "validating-webhook-configuration",
			MutatingWebhookConfigurationName:   "mutating-webhook-configuration",
			CheckInterval:                      200 * time.Millisecond,
			SyncInterval:                       200 * time.Millisecond,
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	wh := env.WebhookInstallOptions
	return net.JoinHostPort(wh.LocalServingHost, strconv.Itoa(wh.LocalServingPort)), decisionAddr, stop
}

func TestSelfManagedCertificates(t *testing.T) {
	ctx := context.Background()
	ns := env.Namespace(t, nil)
	webhookAddr, decisionAddr, stop := startSelf(t, ns)

	var sec corev1.Secret
	if err := env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: certs.DefaultSecretName}, &sec); err != nil {
		t.Fatalf("the certificate Secret: %v", err)
	}
	ca := sec.Data[certs.KeyCACert]
	if len(ca) == 0 || len(sec.Data[certs.KeyCert]) == 0 {
		t.Fatalf("the Secret holds %d keys, no CA or certificate", len(sec.Data))
	}

	testenv.Eventually(t, 30*time.Second, func() error {
		var cm corev1.ConfigMap
		if err := env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: certs.CAConfigMapName}, &cm); err != nil {
			return err
		}
		if cm.Data[certs.CAConfigMapKey] != string(ca) {
			return fmt.Errorf("ConfigMap %s holds another CA", certs.CAConfigMapName)
		}
		if _, ok := cm.Data["ca.key"]; ok {
			return fmt.Errorf("the ConfigMap holds a key")
		}
		var vwc admissionregistrationv1.ValidatingWebhookConfiguration
		if err := env.Client.Get(ctx, client.ObjectKey{Name: "validating-webhook-configuration"}, &vwc); err != nil {
			return err
		}
		for _, w := range vwc.Webhooks {
			if !bytes.Equal(w.ClientConfig.CABundle, ca) {
				return fmt.Errorf("webhook %s: caBundle is not the CA", w.Name)
			}
		}
		var mwc admissionregistrationv1.MutatingWebhookConfiguration
		if err := env.Client.Get(ctx, client.ObjectKey{Name: "mutating-webhook-configuration"}, &mwc); err != nil {
			return err
		}
		for _, w := range mwc.Webhooks {
			if !bytes.Equal(w.ClientConfig.CABundle, ca) {
				return fmt.Errorf("webhook %s: caBundle is not the CA", w.Name)
			}
		}
		return nil
	})

	// Both servers serve the stored certificate, verified against the CA for
	// their Service's name.
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	for addr, name := range map[string]string{
		webhookAddr:  "sallyport-webhook-service." + ns + ".svc",
		decisionAddr: "sallyport-decision-service." + ns + ".svc.cluster.local",
	} {
		testenv.Eventually(t, 10*time.Second, func() error {
			conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: pool, ServerName: name, MinVersion: tls.VersionTLS12})
			if err != nil {
				return err
			}
			defer conn.Close()
			got := conn.ConnectionState().PeerCertificates[0].Raw
			if want := pemDER(t, sec.Data[certs.KeyCert]); !bytes.Equal(got, want) {
				return fmt.Errorf("%s serves another certificate than the Secret's", addr)
			}
			return nil
		})
	}
	stop()

	// A second start reuses the stored certificate.
	_, _, stop = startSelf(t, ns)
	defer stop()
	var again corev1.Secret
	if err := env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: certs.DefaultSecretName}, &again); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(again.Data[certs.KeyCACert], ca) || !bytes.Equal(again.Data[certs.KeyCert], sec.Data[certs.KeyCert]) {
		t.Fatal("a second start made a new CA or certificate")
	}
}

func pemDER(t *testing.T, p []byte) []byte {
	t.Helper()
	b, _ := pem.Decode(p)
	if b == nil {
		t.Fatal("no certificate in PEM")
	}
	return b.Bytes
}
