package webhook

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/go-logr/logr"

	"github.com/sallyport/sallyport/internal/decision"
	"github.com/sallyport/sallyport/internal/decisionlog"
)

// recordingDecider answers with a fixed decision and keeps the requests.
type recordingDecider struct {
	mu     sync.Mutex
	reqs   []decision.Request
	answer decision.Decision
}

func (d *recordingDecider) Decide(_ context.Context, r *decision.Request) *decision.Decision {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.reqs = append(d.reqs, *r)
	a := d.answer
	a.ID = "test-decision"
	return &a
}

func (d *recordingDecider) last(t *testing.T) decision.Request {
	t.Helper()
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.reqs) == 0 {
		t.Fatal("nothing was decided")
	}
	return d.reqs[len(d.reqs)-1]
}

func (d *recordingDecider) count() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.reqs)
}

var allowed = decision.Decision{
	Allowed:    true,
	Connection: decision.Connection{Allowed: true, Policy: "billing/b2l", Identity: "system:serviceaccount:billing:worker", Reason: decision.ReasonMatched},
	Resource:   decision.Resource{Allowed: true, Policy: "ledger/api", Rule: "read", Reason: decision.ReasonMatched},
}

func newTestServer(t *testing.T, answer decision.Decision, ready bool) (*DecisionServer, *recordingDecider, *bytes.Buffer) {
	t.Helper()
	d := &recordingDecider{answer: answer}
	var logBuf bytes.Buffer
	l := decisionlog.New(&logBuf, decisionlog.Options{})
	t.Cleanup(func() { _ = l.Close() })
	s := NewDecisionServer(DecisionServerOptions{MaxBodyBytes: 4096}, d, l, func() bool { return ready }, logr.Discard())
	return s, d, &logBuf
}

func do(t *testing.T, h http.Handler, r *http.Request) *httptest.ResponseRecorder {
	t.Helper()
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

const validBody = `{"credential":{"token":"tkn"},"resource":{"namespace":"ledger","service":"ledger-api","name":"/entries/42"},"action":"GET","scopes":["ledger.read"],"attributes":{"sourceIP":"10.1.2.3"}}`

func TestDecide(t *testing.T) {
	s, d, _ := newTestServer(t, allowed, true)
	w := do(t, s.Handler(), httptest.NewRequest(http.MethodPost, "/v1/decide", strings.NewReader(validBody)))
	if w.Code != http.StatusOK {
		t.Fatalf("status %d: %s", w.Code, w.Body)
	}
	var got map[string]any
	if err := json.Unmarshal(w.Body.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	if got["decisionID"] != "test-decision" || got["allowed"] != true {
		t.Errorf("response %s", w.Body)
	}
	conn := got["connection"].(map[string]any)
	res := got["resource"].(map[string]any)
	if conn["policy"] != "billing/b2l" || conn["reason"] != "Matched" || res["rule"] != "read" {
		t.Errorf("response %s", w.Body)
	}
	req := d.last(t)
	if req.Token != "tkn" || req.Target.Namespace != "ledger" || req.Target.Service != "ledger-api" || req.Target.Name != "/entries/42" ||
		req.Action != "GET" || len(req.Scopes) != 1 || req.Attributes["sourceIP"] != "10.1.2.3" {
		t.Errorf("decided %+v", req)
	}
}

// A denial is still a decision: 200 with allowed false.
func TestDecideDenialIs200(t *testing.T) {
	denied := decision.Decision{Connection: decision.Connection{Reason: decision.ReasonMissingCredential}, Resource: decision.Resource{Reason: decision.ReasonNotEvaluated}}
	s, _, _ := newTestServer(t, denied, true)
	w := do(t, s.Handler(), httptest.NewRequest(http.MethodPost, "/v1/decide", strings.NewReader(validBody)))
	if w.Code != http.StatusOK || !strings.Contains(w.Body.String(), `"allowed":false`) {
		t.Errorf("status %d: %s", w.Code, w.Body)
	}
}

func TestDecideMalformed(t *testing.T) {
	tests := []struct {
		name, body string
		code       int
		field      string
	}{
		{"empty", ``, 400, "body"},
		{"not JSON", `{"action":`, 400, "body"},
		{"two values", validBody + validBody, 400, "body"},
		{"unknown field", `{"actoin":"GET"}`, 400, "actoin"},
		{"wrong type", strings.Replace(validBody, `"scopes":["ledger.read"]`, `"scopes":"ledger.read"`, 1), 400, "scopes"},
		{"no target", `{"resource":{"name":"/x"},"action":"GET"}`, 400, "resource"},
		{"no action", strings.Replace(validBody, `"action":"GET"`, `"action":""`, 1), 400, "action"},
		{"dot segment", strings.Replace(validBody, `/entries/42`, `/entries/../admin`, 1), 400, "resource.name"},
		{"encoded slash", strings.Replace(validBody, `/entries/42`, `/entries%2F42`, 1), 400, "resource.name"},
		{"too many scopes", strings.Replace(validBody, `["ledger.read"]`, `[`+strings.Repeat(`"s",`, 64)+`"s"]`, 1), 400, "scopes"},
		{"oversized", `{"action":"` + strings.Repeat("x", 5000) + `"}`, 413, "body"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, d, logBuf := newTestServer(t, allowed, true)
			w := do(t, s.Handler(), httptest.NewRequest(http.MethodPost, "/v1/decide", strings.NewReader(tc.body)))
			if w.Code != tc.code {
				t.Fatalf("status %d, want %d: %s", w.Code, tc.code, w.Body)
			}
			var e struct{ Error string }
			if err := json.Unmarshal(w.Body.Bytes(), &e); err != nil || !strings.HasPrefix(e.Error, tc.field) {
				t.Errorf("error %q does not start with the field %q", w.Body, tc.field)
			}
			if d.count() != 0 || logBuf.Len() != 0 {
				t.Error("a malformed request was decided or logged")
			}
		})
	}
}

func TestNotReadyIs503(t *testing.T) {
	s, d, _ := newTestServer(t, allowed, false)
	for _, r := range []*http.Request{
		httptest.NewRequest(http.MethodPost, "/v1/decide", strings.NewReader(validBody)),
		httptest.NewRequest(http.MethodGet, "/v1/check/nginx", nil),
	} {
		if w := do(t, s.Handler(), r); w.Code != http.StatusServiceUnavailable {
			t.Errorf("%s: status %d", r.URL, w.Code)
		}
	}
	if d.count() != 0 {
		t.Error("decided before ready")
	}
}

func TestDecideMethod(t *testing.T) {
	s, _, _ := newTestServer(t, allowed, true)
	if w := do(t, s.Handler(), httptest.NewRequest(http.MethodGet, "/v1/decide", nil)); w.Code != http.StatusMethodNotAllowed {
		t.Errorf("GET /v1/decide: %d", w.Code)
	}
}

func forward(path string, headers map[string]string) *http.Request {
	r := httptest.NewRequest(http.MethodGet, path, nil)
	for k, v := range headers {
		r.Header.Set(k, v)
	}
	return r
}

func TestForwardAuthProfiles(t *testing.T) {
	tests := []struct {
		name    string
		req     *http.Request
		want    decision.Request
		wantErr string
	}{
		{
			name: "nginx",
			req: forward("/v1/check/nginx?namespace=ledger&service=ledger-api&scopes=ledger.read+ledger.write", map[string]string{
				"Authorization": "Bearer tkn", "X-Original-Method": "POST", "X-Original-URI": "/entries/42?page=2",
				// Another gateway's headers, which a client could send, are ignored.
				"X-Forwarded-Uri": "/public", "X-Forwarded-Method": "GET", "X-Sallyport-Identity": "system:serviceaccount:kube-system:admin",
			}),
			want: decision.Request{Token: "tkn", Action: "POST", Scopes: []string{"ledger.read", "ledger.write"},
				Target: decision.Target{Namespace: "ledger", Service: "ledger-api", Name: "/entries/42"}},
		},
		{
			name: "traefik",
			req: forward("/v1/check/traefik?namespace=ledger&service=ledger-api", map[string]string{
				"Authorization": "Bearer tkn", "X-Forwarded-Method": "DELETE", "X-Forwarded-Uri": "/entries/7",
				"X-Original-URI": "/public", "X-Original-Method": "GET",
			}),
			want: decision.Request{Token: "tkn", Action: "DELETE",
				Target: decision.Target{Namespace: "ledger", Service: "ledger-api", Name: "/entries/7"}},
		},
		{
			name: "envoy takes the target by host and nothing from the client's query",
			req: func() *http.Request {
				r := forward("/v1/check/envoy/entries/42?namespace=kube-system&service=api&scopes=admin", map[string]string{
					"Authorization": "Bearer tkn", "X-Original-URI": "/public", "X-Forwarded-Uri": "/public",
				})
				r.Method = http.MethodPut
				r.Host = "Ledger.example.com:8443"
				return r
			}(),
			want: decision.Request{Token: "tkn", Action: "PUT",
				Target: decision.Target{Host: "ledger.example.com", Name: "/entries/42"}},
		},
		{
			name:    "nginx without its headers",
			req:     forward("/v1/check/nginx?namespace=ledger&service=ledger-api", map[string]string{"X-Forwarded-Uri": "/entries/1", "X-Forwarded-Method": "GET"}),
			wantErr: "X-Original-Method",
		},
		{
			name:    "repeated query parameter",
			req:     forward("/v1/check/nginx?namespace=ledger&service=ledger-api&service=other", map[string]string{"X-Original-Method": "GET", "X-Original-URI": "/"}),
			wantErr: "service",
		},
		{
			name:    "not a bearer token",
			req:     forward("/v1/check/nginx?namespace=ledger&service=ledger-api", map[string]string{"Authorization": "Basic dTpw", "X-Original-Method": "GET", "X-Original-URI": "/"}),
			wantErr: "Authorization",
		},
		{
			name:    "dot segments",
			req:     forward("/v1/check/traefik?namespace=ledger&service=ledger-api", map[string]string{"X-Forwarded-Method": "GET", "X-Forwarded-Uri": "/entries/../admin"}),
			wantErr: "resource.name",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, d, _ := newTestServer(t, allowed, true)
			w := do(t, s.Handler(), tc.req)
			if tc.wantErr != "" {
				if w.Code != http.StatusBadRequest || !strings.Contains(w.Body.String(), tc.wantErr) {
					t.Fatalf("status %d body %s, want 400 naming %s", w.Code, w.Body, tc.wantErr)
				}
				if d.count() != 0 {
					t.Error("a malformed subrequest was decided")
				}
				return
			}
			if w.Code != http.StatusOK {
				t.Fatalf("status %d: %s", w.Code, w.Body)
			}
			got := d.last(t)
			if got.Token != tc.want.Token || got.Action != tc.want.Action || got.Target != tc.want.Target || strings.Join(got.Scopes, " ") != strings.Join(tc.want.Scopes, " ") {
				t.Errorf("decided %+v\nwant    %+v", got, tc.want)
			}
		})
	}
}

func TestForwardAuthAnswers(t *testing.T) {
	connDenied := decision.Decision{Connection: decision.Connection{Reason: decision.ReasonInvalidCredential}, Resource: decision.Resource{Reason: decision.ReasonNotEvaluated}}
	resDenied := decision.Decision{Connection: allowed.Connection, Resource: decision.Resource{Policy: "ledger/api", Rule: "no-deletes", Reason: decision.ReasonDeniedByRule}}
	tests := []struct {
		answer  decision.Decision
		code    int
		reason  string
		allowed bool
	}{
		{allowed, 200, "Matched", true},
		{connDenied, 401, "InvalidCredential", false},
		{resDenied, 403, "DeniedByRule", false},
	}
	for _, tc := range tests {
		s, _, logBuf := newTestServer(t, tc.answer, true)
		w := do(t, s.Handler(), forward("/v1/check/nginx?namespace=ledger&service=ledger-api", map[string]string{
			"Authorization": "Bearer secret-token-value", "X-Original-Method": "GET", "X-Original-URI": "/entries/1",
		}))
		h := w.Result().Header
		if w.Code != tc.code || h.Get("X-Sallyport-Reason") != tc.reason || h.Get("X-Sallyport-Decision-Id") != "test-decision" {
			t.Errorf("%s: status %d headers %v", tc.reason, w.Code, h)
		}
		if got := h.Get("X-Sallyport-Identity") != ""; got != tc.allowed {
			t.Errorf("%s: identity header present = %v", tc.reason, got)
		}
		if tc.allowed && h.Get("X-Sallyport-Connection") != "billing/b2l" {
			t.Errorf("connection header %q", h.Get("X-Sallyport-Connection"))
		}
		_ = s.log.Close()
		line, _ := io.ReadAll(logBuf)
		if !bytes.Contains(line, []byte(`"endpoint":"check/nginx"`)) || bytes.Contains(line, []byte("secret-token-value")) {
			t.Errorf("decision log line %s", line)
		}
	}
}

func TestDecisionServerRefusesPlaintextOffLoopback(t *testing.T) {
	s, _, _ := newTestServer(t, allowed, true)
	s.opts.BindAddress, s.opts.Insecure = "0.0.0.0:0", true
	if err := s.Start(context.Background()); err == nil || !strings.Contains(err.Error(), "loopback") {
		t.Fatalf("Start = %v, want a refusal to serve plain HTTP off loopback", err)
	}
}

// The hand-written answer is the document encoding/json makes of a Decision.
func TestAppendDecisionMatchesEncodingJSON(t *testing.T) {
	for _, d := range []decision.Decision{
		{},
		allowed,
		{ID: "x\"y\n", Connection: decision.Connection{Reason: "MissingCredential", Message: "no \u2028 token\xff"}, Resource: decision.Resource{Reason: "NotEvaluated"}},
		{ID: "id", Connection: decision.Connection{Allowed: true, Policy: "a/b", Identity: "i", CredentialID: "JTI=1", Reason: "Matched"},
			Resource: decision.Resource{Policy: "c/d", Rule: "r", Reason: "DeniedByRule", Message: "<html>&"}},
	} {
		want, err := json.Marshal(&d)
		if err != nil {
			t.Fatal(err)
		}
		got := appendDecision(nil, &d)
		var gotV, wantV any
		if err := json.Unmarshal(got, &gotV); err != nil {
			t.Fatalf("invalid JSON %s: %v", got, err)
		}
		_ = json.Unmarshal(want, &wantV)
		g, _ := json.Marshal(gotV)
		w, _ := json.Marshal(wantV)
		if !bytes.Equal(g, w) {
			t.Errorf("appendDecision\n got %s\nwant %s", got, want)
		}
	}
}
