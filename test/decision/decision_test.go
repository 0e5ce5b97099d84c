package decision_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/sallyport/sallyport/api/v1alpha1"
	"github.com/sallyport/sallyport/internal/policy"
	"github.com/sallyport/sallyport/internal/testenv"
)

// minted keeps every token the tests mint, to check no output holds one.
var minted struct {
	sync.Mutex
	tokens []string
}

// fixture is one caller namespace, one service namespace and their policies.
type fixture struct {
	callerNS, serviceNS string
	ledgerAud, auditAud string
	host                string
}

func setup(t *testing.T) *fixture {
	t.Helper()
	ctx := context.Background()
	f := &fixture{callerNS: env.Namespace(t, nil), serviceNS: env.Namespace(t, nil)}
	f.ledgerAud = policy.DefaultAudience(f.callerNS, "to-ledger")
	f.auditAud = policy.DefaultAudience(f.callerNS, "to-audit")
	f.host = "ledger." + f.serviceNS + ".example.com"
	for _, sa := range []string{"worker", "intruder"} {
		if err := env.Client.Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: f.callerNS, Name: sa}}); err != nil {
			t.Fatal(err)
		}
	}
	toLedger := &v1alpha1.ConnectionPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: f.callerNS, Name: "to-ledger"},
		Spec: v1alpha1.ConnectionPolicySpec{
			ServiceAccountName: "worker",
			MaxTokenLifetime:   metav1.Duration{Duration: 15 * time.Minute},
			Reach: []v1alpha1.Reach{{Class: "ledger", Scopes: []v1alpha1.Scope{"ledger.read"},
				MaxClassification: v1alpha1.ClassificationConfidential}},
		},
	}
	toAudit := &v1alpha1.ConnectionPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: f.callerNS, Name: "to-audit"},
		Spec: v1alpha1.ConnectionPolicySpec{
			ServiceAccountName: "worker",
			Reach:              []v1alpha1.Reach{{Class: "audit", Scopes: []v1alpha1.Scope{"audit.read"}}},
		},
	}
	ledger := &v1alpha1.ResourcePolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: f.serviceNS, Name: "ledger-api"},
		Spec: v1alpha1.ResourcePolicySpec{
			Service: "ledger-api", Hosts: []string{f.host}, Class: "ledger",
			Classification: v1alpha1.ClassificationConfidential,
			Rules: []v1alpha1.Rule{
				{Name: "no-deletes", Effect: v1alpha1.EffectDeny, Actions: []string{"DELETE"}, Resources: []string{"/**"}},
				{Name: "read-entries", Effect: v1alpha1.EffectAllow, Actions: []string{"GET"},
					Resources: []string{"/entries", "/entries/*"}, Scopes: []v1alpha1.Scope{"ledger.read"},
					Connections: []v1alpha1.ConnectionRef{{Namespace: f.callerNS, Name: "to-ledger"}}},
				{Name: "health", Effect: v1alpha1.EffectAllow, Actions: []string{"GET"}, Resources: []string{"/healthz"},
					Connections: []v1alpha1.ConnectionRef{{NamespaceSelector: &v1alpha1.LabelSelector{}}}},
			},
		},
	}
	if err := env.Client.Create(ctx, toLedger); err != nil {
		t.Fatal(err)
	}
	if err := env.Client.Create(ctx, toAudit); err != nil {
		t.Fatal(err)
	}
	if err := env.Client.Create(ctx, ledger); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 30*time.Second, func() error {
		snap := op.Store.Snapshot()
		for _, aud := range []string{f.ledgerAud, f.auditAud} {
			if _, ok := snap.ConnectionByAudience(v1alpha1.EnforcementEnforce, aud); !ok {
				return fmt.Errorf("audience %s not served yet", aud)
			}
		}
		if _, ok := snap.ResourceByService(v1alpha1.EnforcementEnforce, f.serviceNS, "ledger-api"); !ok {
			return fmt.Errorf("ledger-api not served yet")
		}
		return nil
	})
	testenv.WaitServing(t, decideURL)
	return f
}

// mint returns a token of the ServiceAccount for the audiences, bound to the
// Secret when one is named.
func mint(t *testing.T, ns, sa string, seconds int64, boundSecret *corev1.Secret, audiences ...string) string {
	t.Helper()
	tr := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{Audiences: audiences, ExpirationSeconds: &seconds}}
	if boundSecret != nil {
		tr.Spec.BoundObjectRef = &authenticationv1.BoundObjectReference{Kind: "Secret", APIVersion: "v1", Name: boundSecret.Name, UID: boundSecret.UID}
	}
	out, err := clientset.CoreV1().ServiceAccounts(ns).CreateToken(context.Background(), sa, tr, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("TokenRequest for %s/%s: %v", ns, sa, err)
	}
	minted.Lock()
	minted.tokens = append(minted.tokens, out.Status.Token)
	minted.Unlock()
	return out.Status.Token
}

func decide(t *testing.T, body map[string]any) testenv.Answer {
	t.Helper()
	return testenv.Decide(t, decideURL, body)
}

func (f *fixture) request(token, action, name string, scopes ...string) map[string]any {
	if scopes == nil {
		scopes = []string{}
	}
	return map[string]any{
		"credential": map[string]any{"token": token},
		"resource":   map[string]any{"namespace": f.serviceNS, "service": "ledger-api", "name": name},
		"action":     action, "scopes": scopes,
	}
}

func expect(t *testing.T, a testenv.Answer, allowed bool, connReason, resReason string) {
	t.Helper()
	if a.Allowed != allowed || a.Connection.Reason != connReason || a.Resource.Reason != resReason {
		t.Errorf("got allowed=%v connection=%s (%s) resource=%s (%s); want allowed=%v %s %s",
			a.Allowed, a.Connection.Reason, a.Connection.Message, a.Resource.Reason, a.Resource.Message, allowed, connReason, resReason)
	}
}

func TestDecisions(t *testing.T) {
	f := setup(t)
	good := mint(t, f.callerNS, "worker", 600, nil, f.ledgerAud)

	t.Run("allowed", func(t *testing.T) {
		a := decide(t, f.request(good, "GET", "/entries/42", "ledger.read"))
		expect(t, a, true, "Matched", "Matched")
		if a.Connection.Policy != f.callerNS+"/to-ledger" || a.Connection.Identity != "system:serviceaccount:"+f.callerNS+":worker" ||
			!strings.HasPrefix(a.Connection.CredentialID, "JTI=") || a.Resource.Policy != f.serviceNS+"/ledger-api" || a.Resource.Rule != "read-entries" || a.DecisionID == "" {
			t.Errorf("answer %+v", a)
		}
	})
	t.Run("denied by rule", func(t *testing.T) {
		a := decide(t, f.request(good, "DELETE", "/entries/42"))
		expect(t, a, false, "Matched", "DeniedByRule")
		if a.Resource.Rule != "no-deletes" {
			t.Errorf("rule %q", a.Resource.Rule)
		}
	})
	t.Run("no rule matched", func(t *testing.T) {
		expect(t, decide(t, f.request(good, "GET", "/admin", "ledger.read")), false, "Matched", "NoRuleMatched")
	})
	t.Run("scope beyond the reach", func(t *testing.T) {
		expect(t, decide(t, f.request(good, "GET", "/entries/1", "ledger.write")), false, "ScopeNotReachable", "NotEvaluated")
	})
	t.Run("missing credential", func(t *testing.T) {
		expect(t, decide(t, f.request("", "GET", "/entries/1", "ledger.read")), false, "MissingCredential", "NotEvaluated")
	})
	t.Run("audience no policy holds", func(t *testing.T) {
		tok := mint(t, f.callerNS, "worker", 600, nil, "https://unrelated.example.com")
		expect(t, decide(t, f.request(tok, "GET", "/entries/1", "ledger.read")), false, "NoConnectionPolicy", "NotEvaluated")
	})
	t.Run("token of another connection is not reusable here", func(t *testing.T) {
		tok := mint(t, f.callerNS, "worker", 600, nil, f.auditAud)
		a := decide(t, f.request(tok, "GET", "/entries/1", "ledger.read"))
		expect(t, a, false, "ClassNotReachable", "NotEvaluated")
		if a.Connection.Policy != f.callerNS+"/to-audit" {
			t.Errorf("judged by %q", a.Connection.Policy)
		}
	})
	t.Run("ServiceAccount the policy does not name", func(t *testing.T) {
		tok := mint(t, f.callerNS, "intruder", 600, nil, f.ledgerAud)
		a := decide(t, f.request(tok, "GET", "/entries/1", "ledger.read"))
		expect(t, a, false, "InvalidCredential", "NotEvaluated")
		if !strings.Contains(a.Connection.Message, "intruder") {
			t.Errorf("message %q does not name the identity", a.Connection.Message)
		}
	})
	t.Run("token lifetime over the maximum", func(t *testing.T) {
		tok := mint(t, f.callerNS, "worker", 3600, nil, f.ledgerAud)
		expect(t, decide(t, f.request(tok, "GET", "/entries/1", "ledger.read")), false, "TokenLifetimeExceeded", "NotEvaluated")
	})
	t.Run("two audiences", func(t *testing.T) {
		tok := mint(t, f.callerNS, "worker", 600, nil, f.ledgerAud, f.auditAud)
		expect(t, decide(t, f.request(tok, "GET", "/entries/1", "ledger.read")), false, "InvalidCredential", "NotEvaluated")
	})
	t.Run("forged token", func(t *testing.T) {
		parts := strings.Split(good, ".")
		forged := parts[0] + "." + parts[1] + "." + strings.Repeat("A", len(parts[2]))
		expect(t, decide(t, f.request(forged, "GET", "/entries/1", "ledger.read")), false, "InvalidCredential", "NotEvaluated")
	})
	t.Run("by host", func(t *testing.T) {
		a := decide(t, map[string]any{
			"credential": map[string]any{"token": good},
			"resource":   map[string]any{"host": f.host, "name": "/entries/7"},
			"action":     "GET", "scopes": []string{"ledger.read"},
		})
		expect(t, a, true, "Matched", "Matched")
	})
}

func TestMalformedRequests(t *testing.T) {
	f := setup(t)
	for name, tc := range map[string]struct {
		body string
		code int
	}{
		"dot segment":   {fmt.Sprintf(`{"resource":{"namespace":%q,"service":"ledger-api","name":"/entries/../admin"},"action":"GET"}`, f.serviceNS), 400},
		"encoded slash": {fmt.Sprintf(`{"resource":{"namespace":%q,"service":"ledger-api","name":"/entries%%2Fadmin"},"action":"GET"}`, f.serviceNS), 400},
		"not JSON":      {`{`, 400},
		"oversized":     {`{"attributes":{"a":"` + strings.Repeat("x", 70<<10) + `"}}`, 413},
	} {
		resp, err := http.Post(decideURL+"/v1/decide", "application/json", strings.NewReader(tc.body))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if resp.StatusCode != tc.code || !strings.Contains(string(body), `"error"`) {
			t.Errorf("%s: status %d: %s", name, resp.StatusCode, body)
		}
	}
}

// A token whose bound Secret is deleted is refused once the caches (ours
// and the API server's) have let go of it.
func TestRevokedTokenIsRefused(t *testing.T) {
	f := setup(t)
	anchor := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: f.callerNS, Name: "anchor"}}
	if err := env.Client.Create(context.Background(), anchor); err != nil {
		t.Fatal(err)
	}
	tok := mint(t, f.callerNS, "worker", 600, anchor, f.ledgerAud)
	expect(t, decide(t, f.request(tok, "GET", "/entries/1", "ledger.read")), true, "Matched", "Matched")
	if err := env.Client.Delete(context.Background(), anchor); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 90*time.Second, func() error {
		a := decide(t, f.request(tok, "GET", "/entries/1", "ledger.read"))
		if a.Connection.Reason != "InvalidCredential" {
			return fmt.Errorf("connection %s", a.Connection.Reason)
		}
		return nil
	})
}

// forward sends a forward-auth subrequest and returns its status and headers.
func forward(t *testing.T, path, token string, headers map[string]string, host string) (int, http.Header) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, decideURL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	if host != "" {
		req.Host = host
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	return resp.StatusCode, resp.Header
}

func TestForwardAuth(t *testing.T) {
	f := setup(t)
	tok := mint(t, f.callerNS, "worker", 600, nil, f.ledgerAud)
	q := "?namespace=" + f.serviceNS + "&service=ledger-api&scopes=ledger.read"
	tests := []struct {
		name    string
		path    string
		token   string
		headers map[string]string
		host    string
		code    int
		reason  string
	}{
		{"nginx allowed", "/v1/check/nginx" + q, tok, map[string]string{"X-Original-Method": "GET", "X-Original-URI": "/entries/1"}, "", 200, "Matched"},
		{"nginx ignores X-Forwarded-Uri", "/v1/check/nginx" + q, tok, map[string]string{"X-Original-Method": "GET", "X-Original-URI": "/admin", "X-Forwarded-Uri": "/entries/1"}, "", 403, "NoRuleMatched"},
		{"nginx ignores X-Sallyport headers", "/v1/check/nginx" + q, "", map[string]string{"X-Original-Method": "GET", "X-Original-URI": "/entries/1", "X-Sallyport-Identity": "system:serviceaccount:" + f.callerNS + ":worker", "X-Sallyport-Reason": "Matched"}, "", 401, "MissingCredential"},
		{"nginx denied by rule", "/v1/check/nginx" + q, tok, map[string]string{"X-Original-Method": "DELETE", "X-Original-URI": "/entries/1"}, "", 403, "DeniedByRule"},
		{"traefik allowed", "/v1/check/traefik" + q, tok, map[string]string{"X-Forwarded-Method": "GET", "X-Forwarded-Uri": "/entries/1?x=1"}, "", 200, "Matched"},
		{"traefik ignores X-Original-URI", "/v1/check/traefik" + q, tok, map[string]string{"X-Forwarded-Method": "GET", "X-Forwarded-Uri": "/admin", "X-Original-URI": "/entries/1"}, "", 403, "NoRuleMatched"},
		{"envoy by host, no scopes", "/v1/check/envoy/healthz?scopes=ledger.read", tok, nil, f.host, 200, "Matched"},
		// The client's own query cannot add scopes: ledger.write is beyond
		// the reach and would be refused if it were read.
		{"envoy takes no scopes from the client's query", "/v1/check/envoy/entries/1?scopes=ledger.write", tok, nil, f.host, 200, "Matched"},
		{"envoy no rule", "/v1/check/envoy/admin", tok, nil, f.host, 403, "NoRuleMatched"},
		{"no token", "/v1/check/traefik" + q, "", map[string]string{"X-Forwarded-Method": "GET", "X-Forwarded-Uri": "/entries/1"}, "", 401, "MissingCredential"},
		{"dot segments", "/v1/check/nginx" + q, tok, map[string]string{"X-Original-Method": "GET", "X-Original-URI": "/entries/../admin"}, "", 400, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, h := forward(t, tc.path, tc.token, tc.headers, tc.host)
			if code != tc.code || h.Get("X-Sallyport-Reason") != tc.reason {
				t.Errorf("status %d reason %q, want %d %q", code, h.Get("X-Sallyport-Reason"), tc.code, tc.reason)
			}
			if tc.code == 200 && h.Get("X-Sallyport-Identity") != "system:serviceaccount:"+f.callerNS+":worker" {
				t.Errorf("identity header %q", h.Get("X-Sallyport-Identity"))
			}
		})
	}
}

func TestExtAuthz(t *testing.T) {
	f := setup(t)
	tok := mint(t, f.callerNS, "worker", 600, nil, f.ledgerAud)
	conn, err := grpc.NewClient(grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close() }()
	client := authv3.NewAuthorizationClient(conn)
	check := func(method, path, host string, ext map[string]string, token string) *authv3.CheckResponse {
		t.Helper()
		headers := map[string]string{"x-forwarded-uri": "/entries/1"}
		if token != "" {
			headers["authorization"] = "Bearer " + token
		}
		resp, err := client.Check(context.Background(), &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
			Request:           &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{Method: method, Path: path, Host: host, Headers: headers}},
			ContextExtensions: ext,
		}})
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	ext := map[string]string{"namespace": f.serviceNS, "service": "ledger-api", "scopes": "ledger.read"}
	if r := check("GET", "/entries/1", "other.example.com", ext, tok); r.GetStatus().GetCode() != int32(codes.OK) {
		t.Errorf("allowed request: %v", r)
	}
	if r := check("DELETE", "/entries/1", "", ext, tok); r.GetStatus().GetCode() != int32(codes.PermissionDenied) || r.GetDeniedResponse().GetStatus().GetCode() != 403 {
		t.Errorf("denied by rule: %v", r)
	}
	if r := check("GET", "/entries/1", "", ext, ""); r.GetStatus().GetCode() != int32(codes.Unauthenticated) || r.GetDeniedResponse().GetStatus().GetCode() != 401 {
		t.Errorf("no token: %v", r)
	}
	// Without context extensions, the target is the authority.
	if r := check("GET", "/healthz", f.host+":443", nil, tok); r.GetStatus().GetCode() != int32(codes.OK) {
		t.Errorf("by authority: %v", r)
	}
}

// Runs last (go test runs tests in source order): every decision so far is
// in the log with both gates, and no token is.
func TestZDecisionLog(t *testing.T) {
	testenv.Eventually(t, 10*time.Second, func() error {
		raw, err := os.ReadFile(logPath)
		if err != nil {
			return err
		}
		lines := bytes.Split(bytes.TrimSpace(raw), []byte("\n"))
		if len(lines) < 20 {
			return fmt.Errorf("%d lines", len(lines))
		}
		for _, l := range lines {
			var e struct {
				SchemaVersion int            `json:"schemaVersion"`
				DecisionID    string         `json:"decisionID"`
				Connection    map[string]any `json:"connection"`
				Resource      map[string]any `json:"resource"`
			}
			if err := json.Unmarshal(l, &e); err != nil {
				return fmt.Errorf("line %q: %w", l, err)
			}
			if e.SchemaVersion != 1 || e.DecisionID == "" || e.Connection["reason"] == nil || e.Resource["reason"] == nil {
				return fmt.Errorf("line lacks a field: %s", l)
			}
		}
		minted.Lock()
		defer minted.Unlock()
		for _, tok := range minted.tokens {
			if bytes.Contains(raw, []byte(tok)) || bytes.Contains(raw, []byte(strings.Split(tok, ".")[2])) {
				t.Fatal("the decision log holds a token")
			}
		}
		return nil
	})
}
