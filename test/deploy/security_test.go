package deploy_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/sallyport/sallyport/api/v1alpha1"
	"github.com/sallyport/sallyport/internal/testenv"
)

var netDialer = net.Dialer{Timeout: 5 * time.Second}

// checkTLSPolicy probes one TLS listener of a replica: TLS 1.1 is refused,
// a TLS 1.2 CBC suite is refused, and TLS 1.2 with ECDHE and AES-GCM is
// accepted. The probes check the protocol, not the certificate.
func checkTLSPolicy(t *testing.T, what, addr string, nextProtos ...string) {
	t.Helper()
	dial := func(c *tls.Config) error {
		c.InsecureSkipVerify = true // a protocol probe; certificates are verified in the HA test
		c.NextProtos = nextProtos
		conn, err := tls.DialWithDialer(&netDialer, "tcp", addr, c)
		if err == nil {
			_ = conn.Close()
		}
		return err
	}
	if err := dial(&tls.Config{MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11}); err == nil {
		t.Errorf("%s at %s accepts TLS 1.1", what, addr)
	}
	if err := dial(&tls.Config{MaxVersion: tls.VersionTLS12, CipherSuites: []uint16{
		tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA, tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA,
		tls.TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA, tls.TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA,
	}}); err == nil {
		t.Errorf("%s at %s accepts a TLS 1.2 CBC cipher suite", what, addr)
	}
	if err := dial(&tls.Config{MinVersion: tls.VersionTLS12, MaxVersion: tls.VersionTLS12, CipherSuites: []uint16{
		tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
	}}); err != nil {
		t.Errorf("%s at %s refuses TLS 1.2 with ECDHE and AES-GCM: %v", what, addr, err)
	}
}

// checkListeners applies the TLS policy probes to every listener of a
// replica, and checks the request size limits of the decision API and
// ext_authz on the live servers.
func checkListeners(t *testing.T, r *replica, serverName string) {
	t.Helper()
	checkTLSPolicy(t, "decision API", r.decisionAddr, "http/1.1")
	checkTLSPolicy(t, "ext_authz", r.grpcAddr, "h2")
	checkTLSPolicy(t, "admission webhooks", r.webhookAddr, "http/1.1")
	checkTLSPolicy(t, "metrics", r.metricsAddr, "http/1.1")

	// A body over the decision API's limit (64 KiB) is refused with 413.
	hc := tlsClient(nil, serverName)
	hc.Transport.(*http.Transport).TLSClientConfig.InsecureSkipVerify = true // the size limit is the point here
	big := bytes.Repeat([]byte(" "), 128<<10)
	resp, err := hc.Post("https://"+r.decisionAddr+"/v1/decide", "application/json", bytes.NewReader(big))
	if err != nil {
		t.Errorf("oversized decision request: %v", err)
	} else {
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusRequestEntityTooLarge {
			t.Errorf("oversized decision request: %s, want 413", resp.Status)
		}
	}

	// An ext_authz request over the same limit is refused before it is
	// decided.
	// The size limit is the point here, not the certificate.
	creds := credentials.NewTLS(&tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12})
	conn, err := grpc.NewClient(r.grpcAddr, grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req := &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{
		Http: &authv3.AttributeContext_HttpRequest{Method: "GET", Path: "/", Body: strings.Repeat("x", 128<<10)},
	}}}
	if _, err := authv3.NewAuthorizationClient(conn).Check(ctx, req); status.Code(err) != codes.ResourceExhausted {
		t.Errorf("oversized ext_authz request: %v, want ResourceExhausted", err)
	}
}

// checkMetricsAuth checks that the metrics endpoint answers only an
// authenticated and authorized scraper: 401 without a token, 403 with the
// token of a ServiceAccount that is not bound to sallyport-metrics-reader,
// 200 with one that is. It returns the tokens it minted.
func checkMetricsAuth(t *testing.T, r *replica, instName string) []string {
	t.Helper()
	ctx := context.Background()
	ns := env.Namespace(t, nil)
	for _, sa := range []string{"scraper", "stranger"} {
		if _, err := clientset.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	// Bound before its first scrape: the authorizer caches answers.
	crb := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "scraper-" + instName},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "sallyport-metrics-reader"},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: ns, Name: "scraper"}},
	}
	if err := env.Client.Create(ctx, crb); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Client.Delete(context.Background(), crb) })
	scraper, stranger := mint(t, ns, "scraper", 600), mint(t, ns, "stranger", 600)

	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		// controller-runtime signs the metrics certificate itself.
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12},
	}}
	get := func(bearer string) int {
		req, err := http.NewRequest(http.MethodGet, "https://"+r.metricsAddr+"/metrics", nil)
		if err != nil {
			t.Fatal(err)
		}
		if bearer != "" {
			req.Header.Set("Authorization", "Bearer "+bearer)
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatalf("metrics: %v", err)
		}
		_ = resp.Body.Close()
		return resp.StatusCode
	}
	for _, c := range []struct {
		who, token string
		want       int
	}{
		{"without a token", "", http.StatusUnauthorized},
		{"with an unbound ServiceAccount's token", stranger, http.StatusForbidden},
		{"with a token bound to sallyport-metrics-reader", scraper, http.StatusOK},
	} {
		if code := get(c.token); code != c.want {
			t.Errorf("metrics %s: %d, want %d", c.who, code, c.want)
		}
	}
	return []string{scraper, stranger}
}

// secretValues are the credentials a run handed out: the tokens it minted
// and those the operator issued into Secrets.
type secretValues []string

// add records v; empty values are ignored.
func (s *secretValues) add(v ...string) {
	for _, x := range v {
		if x != "" {
			*s = append(*s, x)
		}
	}
}

// addIssued records the token of every operator-issued token Secret in ns
// (not its other keys, such as the expiry, which are public).
func (s *secretValues) addIssued(t *testing.T, ns string) {
	t.Helper()
	list, err := clientset.CoreV1().Secrets(ns).List(context.Background(), metav1.ListOptions{
		LabelSelector: v1alpha1.LabelSecretRole + "=" + v1alpha1.SecretRoleToken,
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, sec := range list.Items {
		s.add(string(sec.Data[v1alpha1.TokenSecretKeyToken]))
	}
}

// assertNothingLeaks requires that no credential of secrets appears, whole
// or as its signature, in anything the operator produced for a reader:
// the replicas' logs and decision logs, and the Events and policy statuses
// in the API server.
func assertNothingLeaks(t *testing.T, secrets secretValues, replicas ...*replica) {
	t.Helper()
	sources, err := testenv.ClusterText(context.Background(), env.Client)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range replicas {
		sources[r.name+" log"] = r.logs.String()
		raw, err := os.ReadFile(filepath.Join(r.dir, "decisions.log"))
		if err != nil {
			t.Fatal(err)
		}
		if len(raw) == 0 {
			t.Errorf("%s wrote no decision log", r.name)
		}
		sources[r.name+" decision log"] = string(raw)
	}
	if len(secrets) == 0 {
		t.Fatal("no credentials to look for")
	}
	for _, leak := range testenv.Leaks(secrets, sources) {
		t.Error(leak)
	}
}
