package webhook

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/go-logr/logr"

	"github.com/sallyport/sallyport/internal/credential"
	"github.com/sallyport/sallyport/internal/decision"
	"github.com/sallyport/sallyport/internal/decisionlog"
	"github.com/sallyport/sallyport/internal/loader"
	"github.com/sallyport/sallyport/internal/policy"
	"github.com/sallyport/sallyport/internal/store"
)

// The invariant fuzz targets run the real decoders, the real engine and
// real compiled policies behind every endpoint, and check one property: a
// request is allowed only if it is the one shape the policies allow — the
// good token, GET, the ledger service (by namespace and service, or by its
// host), an object under /entries/, and no scope beyond ledger.read. The
// oracle states only necessary conditions, independently of the engine, so
// it never needs to know how a rule is matched.

const invariantPolicies = `apiVersion: policy.sallyport.dev/v1alpha1
kind: ConnectionPolicy
metadata: {name: to-ledger, namespace: billing}
spec:
  serviceAccountName: worker
  reach:
    - class: ledger
      scopes: [ledger.read]
      maxClassification: confidential
---
apiVersion: policy.sallyport.dev/v1alpha1
kind: ResourcePolicy
metadata: {name: ledger-api, namespace: ledger}
spec:
  service: ledger-api
  hosts: [ledger.example.com]
  class: ledger
  classification: internal
  rules:
    - name: no-deletes
      effect: Deny
      actions: [DELETE]
      resources: ["/**"]
    - name: read-entries
      effect: Allow
      actions: [GET]
      resources: ["/entries/*"]
      scopes: [ledger.read]
      connections: [{namespace: billing, name: to-ledger}]
`

var invariantNow = time.Date(2026, 3, 2, 10, 30, 0, 0, time.UTC)

// invariantToken is the one credential the fake authenticator accepts: a
// JWT-shaped token whose aud names the connection.
var invariantToken = func() string {
	enc := base64.RawURLEncoding.EncodeToString
	claims := fmt.Sprintf(`{"aud":[%q],"sub":"system:serviceaccount:billing:worker","iat":%d,"exp":%d}`,
		policy.DefaultAudience("billing", "to-ledger"), invariantNow.Add(-time.Minute).Unix(), invariantNow.Add(9*time.Minute).Unix())
	return enc([]byte(`{"alg":"RS256","kid":"k"}`)) + "." + enc([]byte(claims)) + ".c2lnbmF0dXJl"
}()

// oneTokenAuthenticator accepts invariantToken for its audience and rejects
// everything else.
type oneTokenAuthenticator struct{}

func (oneTokenAuthenticator) Authenticate(_ context.Context, token, audience string) (*credential.Review, error) {
	if token != invariantToken || audience != policy.DefaultAudience("billing", "to-ledger") {
		return nil, fmt.Errorf("%w: not the known token", credential.ErrInvalid)
	}
	return &credential.Review{
		Identity: "system:serviceaccount:billing:worker", Namespace: "billing", ServiceAccount: "worker",
		Audience: audience, CredentialID: "JTI=invariant",
		IssuedAt: invariantNow.Add(-time.Minute), ExpiresAt: invariantNow.Add(9 * time.Minute),
	}, nil
}

var (
	invariantOnce   sync.Once
	invariantServer *DecisionServer
	invariantErr    error
)

// invariantDecisionServer is a decision server over the real engine and the
// policies above, shared by every fuzz input.
func invariantDecisionServer(tb testing.TB) *DecisionServer {
	tb.Helper()
	invariantOnce.Do(func() {
		dir, err := os.MkdirTemp("", "sallyport-invariant-")
		if err != nil {
			invariantErr = err
			return
		}
		defer os.RemoveAll(dir)
		if err := os.WriteFile(filepath.Join(dir, "policies.yaml"), []byte(invariantPolicies), 0o600); err != nil {
			invariantErr = err
			return
		}
		set, err := loader.Load(dir)
		if err != nil {
			invariantErr = err
			return
		}
		st := store.New()
		st.Publish(set.Snapshot, true)
		engine := decision.NewEngine(st, oneTokenAuthenticator{}, decision.Options{Clock: func() time.Time { return invariantNow }})
		log := decisionlog.New(io.Discard, decisionlog.Options{})
		invariantServer = NewDecisionServer(DecisionServerOptions{}, engine, log, func() bool { return true }, logr.Discard())
	})
	if invariantErr != nil {
		tb.Fatal(invariantErr)
	}
	return invariantServer
}

// mayBeAllowed is the oracle: the necessary conditions for an allow.
func mayBeAllowed(token, method, namespace, service, host, uri string, scopes []string) error {
	byService := namespace == "ledger" && service == "ledger-api"
	byHost := namespace == "" && service == "" && isLedgerHost(host)
	switch {
	case token != invariantToken:
		return fmt.Errorf("token is not the known one")
	case method != http.MethodGet:
		return fmt.Errorf("method %q is not GET", method)
	case !byService && !byHost:
		return fmt.Errorf("target %q/%q host %q is not the ledger service", namespace, service, host)
	}
	decoded := uri
	if d, err := url.PathUnescape(uri); err == nil {
		decoded = d
	}
	if !strings.Contains(decoded, "/entries/") {
		return fmt.Errorf("object %q is not under /entries/", uri)
	}
	for _, s := range scopes {
		if s != "ledger.read" {
			return fmt.Errorf("scope %q is beyond ledger.read", s)
		}
	}
	return nil
}

func isLedgerHost(h string) bool {
	h = strings.ToLower(h)
	if i := strings.LastIndexByte(h, ':'); i >= 0 && !strings.Contains(h[i:], "]") {
		h = h[:i]
	}
	return strings.TrimSuffix(h, ".") == "ledger.example.com"
}

// FuzzDecideInvariant posts arbitrary bodies to /v1/decide.
func FuzzDecideInvariant(f *testing.F) {
	ok := fmt.Sprintf(`{"credential":{"token":%q},"resource":{"namespace":"ledger","service":"ledger-api","name":"/entries/1"},"action":"GET","scopes":["ledger.read"]}`, invariantToken)
	f.Add(ok)
	f.Add(strings.Replace(ok, `"GET"`, `"DELETE"`, 1))
	f.Add(strings.Replace(ok, `/entries/1`, `/entries/%2e%2e/admin`, 1))
	f.Add(strings.Replace(ok, `"namespace":"ledger","service":"ledger-api"`, `"host":"LEDGER.example.com.:443"`, 1))
	f.Add(strings.Replace(ok, `["ledger.read"]`, `["ledger.read","ledger.write"]`, 1))
	f.Add(`{"credential":{"token":"x"},"resource":{"namespace":"ledger","service":"ledger-api","name":"/entries/1"},"action":"GET"}`)
	h := invariantDecisionServer(f).Handler()
	f.Fuzz(func(t *testing.T, body string) {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest(http.MethodPost, "/v1/decide", strings.NewReader(body)))
		if w.Code >= 500 {
			t.Fatalf("status %d for %q: %s", w.Code, body, w.Body.String())
		}
		if w.Code != http.StatusOK {
			return
		}
		var answer struct {
			Allowed *bool `json:"allowed"`
		}
		if err := json.Unmarshal(w.Body.Bytes(), &answer); err != nil || answer.Allowed == nil {
			t.Fatalf("200 without an answer (%v): %s", err, w.Body.String())
		}
		if !*answer.Allowed {
			return
		}
		req, err := referenceDecode(strings.NewReader(body))
		if err != nil {
			t.Fatalf("allowed a body encoding/json refuses (%v): %q", err, body)
		}
		if err := mayBeAllowed(req.Token, req.Action, req.Target.Namespace, req.Target.Service, req.Target.Host, req.Target.Name, req.Scopes); err != nil {
			t.Fatalf("allowed, but %v: %q", err, body)
		}
	})
}

// FuzzForwardAuthInvariant sends arbitrary gateway subrequests to each
// forward-auth profile. Headers of other gateways and X-Sallyport-* headers
// are set too, to any value: they must never change the answer.
func FuzzForwardAuthInvariant(f *testing.F) {
	bearer := "Bearer " + invariantToken
	q := "namespace=ledger&service=ledger-api&scopes=ledger.read"
	f.Add(uint8(0), "GET", "/entries/1", "", bearer, q, "/admin")
	f.Add(uint8(1), "GET", "/entries/1", "", bearer, q, "/entries/2")
	f.Add(uint8(2), "GET", "/entries/1", "ledger.example.com", bearer, "", "/entries/1")
	f.Add(uint8(0), "DELETE", "/entries/1", "", bearer, q, "/entries/1")
	f.Add(uint8(1), "GET", "/admin", "", bearer, q, "/entries/1")
	f.Add(uint8(2), "GET", "/entries/%2F..%2Fadmin", "ledger.example.com:8080", bearer, "", "")
	h := invariantDecisionServer(f).Handler()
	f.Fuzz(func(t *testing.T, profile uint8, method, uri, host, authz, query, decoy string) {
		r := &http.Request{Method: http.MethodGet, Header: http.Header{}, Host: "sallyport", Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1}
		var path string
		switch profile % 3 {
		case 0:
			path = "/v1/check/nginx"
			r.Header.Set("X-Original-Method", method)
			r.Header.Set("X-Original-URI", uri)
			r.Header.Set("X-Forwarded-Method", http.MethodGet)
			r.Header.Set("X-Forwarded-Uri", decoy)
		case 1:
			path = "/v1/check/traefik"
			r.Header.Set("X-Forwarded-Method", method)
			r.Header.Set("X-Forwarded-Uri", uri)
			r.Header.Set("X-Original-Method", http.MethodGet)
			r.Header.Set("X-Original-URI", decoy)
		case 2:
			// Envoy's HTTP ext_authz: the original method, path and Host.
			path = "/v1/check/envoy" + uri
			r.Method, r.Host = method, host
			r.Header.Set("X-Forwarded-Uri", decoy)
		}
		u, err := url.Parse(path)
		if err != nil || !strings.HasPrefix(u.Path, "/v1/check/") {
			return
		}
		if profile%3 != 2 {
			u.RawQuery = query
		}
		r.URL, r.RequestURI = u, u.RequestURI()
		r.Header.Set("X-Sallyport-Identity", "system:serviceaccount:ledger:admin")
		r.Header.Set("X-Sallyport-Namespace", "ledger")
		if authz != "" {
			r.Header.Set("Authorization", authz)
		}
		w := httptest.NewRecorder()
		func() {
			defer func() {
				if p := recover(); p != nil {
					t.Fatalf("panic for %s %s: %v", r.Method, u, p)
				}
			}()
			h.ServeHTTP(w, r)
		}()
		if w.Code >= 500 {
			t.Fatalf("status %d for %s %s", w.Code, r.Method, u)
		}
		if w.Code != http.StatusOK {
			return
		}
		// The scheme is case-insensitive (RFC 7235).
		scheme, token, _ := strings.Cut(authz, " ")
		if !strings.EqualFold(scheme, "Bearer") {
			t.Fatalf("%s allowed with authorization %q", path, authz)
		}
		token = strings.TrimSpace(token)
		var ns, svc, targetHost string
		var scopes []string
		if profile%3 == 2 {
			targetHost = host
		} else {
			vals, _ := url.ParseQuery(query)
			ns, svc, targetHost, scopes = vals.Get("namespace"), vals.Get("service"), vals.Get("host"), strings.Fields(vals.Get("scopes"))
		}
		if err := mayBeAllowed(token, method, ns, svc, targetHost, uri, scopes); err != nil {
			t.Fatalf("%s allowed, but %v (method %q, uri %q, host %q, query %q)", path, err, method, uri, host, query)
		}
	})
}

// FuzzExtAuthzInvariant sends arbitrary Envoy CheckRequests through the
// ext_authz mapping.
func FuzzExtAuthzInvariant(f *testing.F) {
	bearer := "Bearer " + invariantToken
	f.Add("GET", "/entries/1", "", bearer, "ledger", "ledger-api", "ledger.read")
	f.Add("GET", "/entries/1?x=/admin", "ledger.example.com", bearer, "", "", "")
	f.Add("DELETE", "/entries/1", "", bearer, "ledger", "ledger-api", "")
	f.Add("GET", "/entries/1", "", "bearer  "+invariantToken, "ledger", "ledger-api", "ledger.write")
	s := NewExtAuthzServer(ExtAuthzOptions{}, invariantDecisionServer(f), logr.Discard())
	f.Fuzz(func(t *testing.T, method, path, host, authz, ns, svc, scopes string) {
		ext := map[string]string{}
		for k, v := range map[string]string{"namespace": ns, "service": svc, "scopes": scopes} {
			if v != "" {
				ext[k] = v
			}
		}
		in := &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
			ContextExtensions: ext,
			Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
				Method: method, Path: path, Host: host,
				Headers: map[string]string{"authorization": authz, "x-sallyport-identity": "system:serviceaccount:ledger:admin"},
			}},
		}}
		resp, err := s.Check(context.Background(), in)
		if err != nil {
			t.Fatalf("Check: %v", err)
		}
		if resp.GetStatus().GetCode() != 0 {
			return
		}
		scheme, token, _ := strings.Cut(authz, " ")
		if !strings.EqualFold(scheme, "Bearer") {
			t.Fatalf("allowed with authorization %q", authz)
		}
		target := host
		if ns != "" || svc != "" {
			target = ""
		}
		if err := mayBeAllowed(strings.TrimSpace(token), method, ns, svc, target, pathOf(path), strings.Fields(scopes)); err != nil {
			t.Fatalf("allowed, but %v (method %q, path %q, host %q, ext %v)", err, method, path, host, ext)
		}
	})
}

// TestInvariantSeedsAllowed makes sure the fuzz targets can see an allow:
// the one matching request is allowed through every endpoint, so the oracle
// is exercised and not vacuous.
func TestInvariantSeedsAllowed(t *testing.T) {
	ds := invariantDecisionServer(t)
	h := ds.Handler()
	body := fmt.Sprintf(`{"credential":{"token":%q},"resource":{"namespace":"ledger","service":"ledger-api","name":"/entries/1"},"action":"GET","scopes":["ledger.read"]}`, invariantToken)
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest(http.MethodPost, "/v1/decide", strings.NewReader(body)))
	if w.Code != http.StatusOK || !strings.Contains(w.Body.String(), `"allowed":true`) {
		t.Errorf("/v1/decide: %d %s", w.Code, w.Body.String())
	}

	r := httptest.NewRequest(http.MethodGet, "/v1/check/nginx?namespace=ledger&service=ledger-api&scopes=ledger.read", nil)
	r.Header.Set("X-Original-Method", "GET")
	r.Header.Set("X-Original-URI", "/entries/1")
	r.Header.Set("Authorization", "Bearer "+invariantToken)
	w = httptest.NewRecorder()
	h.ServeHTTP(w, r)
	if w.Code != http.StatusOK {
		t.Errorf("/v1/check/nginx: %d %s", w.Code, w.Body.String())
	}

	resp, err := NewExtAuthzServer(ExtAuthzOptions{}, ds, logr.Discard()).Check(context.Background(), &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		ContextExtensions: map[string]string{"namespace": "ledger", "service": "ledger-api", "scopes": "ledger.read"},
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Method: "GET", Path: "/entries/1", Headers: map[string]string{"authorization": "Bearer " + invariantToken},
		}},
	}})
	if err != nil || resp.GetStatus().GetCode() != 0 {
		t.Errorf("ext_authz: %v %v", resp.GetStatus(), err)
	}
}

// BenchmarkExtAuthzCheckAllowed measures one allowed ext_authz Check over
// the real engine and a warm (fake) credential review, response included.
func BenchmarkExtAuthzCheckAllowed(b *testing.B) {
	s := NewExtAuthzServer(ExtAuthzOptions{}, invariantDecisionServer(b), logr.Discard())
	in := &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		ContextExtensions: map[string]string{"namespace": "ledger", "service": "ledger-api", "scopes": "ledger.read"},
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Method: "GET", Path: "/entries/1", Headers: map[string]string{"authorization": "Bearer " + invariantToken},
		}},
	}}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		resp, err := s.Check(ctx, in)
		if err != nil || resp.GetStatus().GetCode() != 0 {
			b.Fatalf("%v %v", resp.GetStatus(), err)
		}
	}
}
