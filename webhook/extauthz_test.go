package webhook

import (
	"context"
	"net"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/go-logr/logr"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/sallyport/sallyport/internal/decision"
)

func checkRequest(method, host, path string, headers map[string]string, ext map[string]string) *authv3.CheckRequest {
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Method: method, Host: host, Path: path, Headers: headers,
		}},
		ContextExtensions: ext,
	}}
}

func headerValue(hs []*corev3.HeaderValueOption, key string) (string, bool) {
	for _, h := range hs {
		if h.GetHeader().GetKey() == key {
			return h.GetHeader().GetValue(), h.GetAppendAction() == corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD
		}
	}
	return "", false
}

func TestExtAuthzMapping(t *testing.T) {
	tests := []struct {
		name string
		in   *authv3.CheckRequest
		want decision.Request
	}{
		{
			name: "context extensions name the target and scopes",
			in: checkRequest("GET", "ledger.example.com", "/entries/42?page=2",
				map[string]string{"authorization": "Bearer tkn", "x-forwarded-uri": "/public", "x-sallyport-identity": "forged"},
				map[string]string{"namespace": "ledger", "service": "ledger-api", "scopes": "ledger.read ledger.write"}),
			want: decision.Request{Token: "tkn", Action: "GET", Scopes: []string{"ledger.read", "ledger.write"},
				Target: decision.Target{Namespace: "ledger", Service: "ledger-api", Name: "/entries/42"}},
		},
		{
			name: "without extensions the target is the authority",
			in:   checkRequest("POST", "Ledger.Example.com:443", "/entries", map[string]string{"authorization": "bearer tkn"}, nil),
			want: decision.Request{Token: "tkn", Action: "POST", Target: decision.Target{Host: "ledger.example.com", Name: "/entries"}},
		},
		{
			name: "no credential",
			in:   checkRequest("GET", "ledger.example.com", "/", nil, nil),
			want: decision.Request{Action: "GET", Target: decision.Target{Host: "ledger.example.com", Name: "/"}},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ds, d, _ := newTestServer(t, allowed, true)
			s := NewExtAuthzServer(ExtAuthzOptions{}, ds, logr.Discard())
			resp, err := s.Check(context.Background(), tc.in)
			if err != nil || resp.GetStatus().GetCode() != int32(codes.OK) {
				t.Fatalf("Check = %v, %v", resp, err)
			}
			got := d.last(t)
			if got.Token != tc.want.Token || got.Action != tc.want.Action || got.Target != tc.want.Target || len(got.Scopes) != len(tc.want.Scopes) {
				t.Errorf("decided %+v\nwant    %+v", got, tc.want)
			}
			ok := resp.GetOkResponse()
			for key, want := range map[string]string{
				"X-Sallyport-Decision-Id": "test-decision", "X-Sallyport-Identity": allowed.Connection.Identity,
				"X-Sallyport-Connection": allowed.Connection.Policy, "X-Sallyport-Reason": "Matched",
			} {
				v, overwrite := headerValue(ok.GetHeaders(), key)
				if v != want || !overwrite {
					t.Errorf("header %s = %q (overwrite %v), want %q overwriting", key, v, overwrite, want)
				}
			}
		})
	}
}

func TestExtAuthzAnswers(t *testing.T) {
	connDenied := decision.Decision{Connection: decision.Connection{Reason: decision.ReasonNoConnectionPolicy}, Resource: decision.Resource{Reason: decision.ReasonNotEvaluated}}
	resDenied := decision.Decision{Connection: allowed.Connection, Resource: decision.Resource{Reason: decision.ReasonNoRuleMatched}}
	for _, tc := range []struct {
		answer   decision.Decision
		code     codes.Code
		httpCode int32
		reason   string
	}{
		{connDenied, codes.Unauthenticated, 401, "NoConnectionPolicy"},
		{resDenied, codes.PermissionDenied, 403, "NoRuleMatched"},
	} {
		ds, _, _ := newTestServer(t, tc.answer, true)
		s := NewExtAuthzServer(ExtAuthzOptions{}, ds, logr.Discard())
		resp, _ := s.Check(context.Background(), checkRequest("GET", "h", "/x", map[string]string{"authorization": "Bearer t"}, map[string]string{"namespace": "n", "service": "s"}))
		denied := resp.GetDeniedResponse()
		reason, _ := headerValue(denied.GetHeaders(), "X-Sallyport-Reason")
		if resp.GetStatus().GetCode() != int32(tc.code) || int32(denied.GetStatus().GetCode()) != tc.httpCode || reason != tc.reason {
			t.Errorf("%s: %v", tc.reason, resp)
		}
	}

	// Malformed: INVALID_ARGUMENT and 400, nothing decided.
	ds, d, _ := newTestServer(t, allowed, true)
	s := NewExtAuthzServer(ExtAuthzOptions{}, ds, logr.Discard())
	for _, in := range []*authv3.CheckRequest{
		{},
		checkRequest("GET", "h", "/a/../b", nil, nil),
		checkRequest("GET", "h", "/a%2Fb", nil, nil),
		checkRequest("GET", "h", "/", map[string]string{"authorization": "Bearer a,Bearer b"}, nil),
		checkRequest("GET", "h", "/", map[string]string{"authorization": "Basic dTpw"}, nil),
	} {
		resp, _ := s.Check(context.Background(), in)
		if resp.GetStatus().GetCode() != int32(codes.InvalidArgument) || resp.GetDeniedResponse().GetStatus().GetCode() != 400 {
			t.Errorf("%v: %v", in, resp)
		}
	}
	if d.count() != 0 {
		t.Error("a malformed request was decided")
	}
}

// Over the wire with a real gRPC client, plaintext on loopback.
func TestExtAuthzServes(t *testing.T) {
	ds, _, _ := newTestServer(t, allowed, true)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	s := NewExtAuthzServer(ExtAuthzOptions{BindAddress: addr, Insecure: true}, ds, logr.Discard())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Start(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Start: %v", err)
		}
	}()

	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close() }()
	client := authv3.NewAuthorizationClient(conn)
	var resp *authv3.CheckResponse
	deadline := time.Now().Add(10 * time.Second)
	for {
		callCtx, callCancel := context.WithTimeout(context.Background(), time.Second)
		resp, err = client.Check(callCtx, checkRequest("GET", "h", "/x", map[string]string{"authorization": "Bearer t"}, map[string]string{"namespace": "n", "service": "s"}))
		callCancel()
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil || resp.GetStatus().GetCode() != int32(codes.OK) {
		t.Fatalf("Check over gRPC = %v, %v", resp, err)
	}
}

func TestExtAuthzRefusesPlaintextOffLoopback(t *testing.T) {
	ds, _, _ := newTestServer(t, allowed, true)
	s := NewExtAuthzServer(ExtAuthzOptions{BindAddress: "0.0.0.0:0", Insecure: true}, ds, logr.Discard())
	if err := s.Start(context.Background()); err == nil {
		t.Fatal("plaintext gRPC served on every interface")
	}
}
