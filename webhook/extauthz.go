package webhook

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/go-logr/logr"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/keepalive"

	"github.com/sallyport/sallyport/internal/decision"
)

// ExtAuthzOptions configure the Envoy ext_authz gRPC server.
type ExtAuthzOptions struct {
	// BindAddress is host:port to listen on.
	BindAddress string
	// CertDir holds tls.crt and tls.key, reloaded when they change.
	CertDir string
	// Insecure serves without TLS, on loopback only.
	Insecure bool
}

// ExtAuthzServer serves envoy.service.auth.v3.Authorization/Check for Envoy
// and Istio with the decision server's engine and log.
type ExtAuthzServer struct {
	authv3.UnimplementedAuthorizationServer
	opts   ExtAuthzOptions
	ds     *DecisionServer
	logger logr.Logger
}

// NewExtAuthzServer returns a gRPC server that decides through ds.
func NewExtAuthzServer(o ExtAuthzOptions, ds *DecisionServer, logger logr.Logger) *ExtAuthzServer {
	return &ExtAuthzServer{opts: o, ds: ds, logger: logger}
}

// NeedLeaderElection implements manager.LeaderElectionRunnable: every
// replica decides.
func (s *ExtAuthzServer) NeedLeaderElection() bool { return false }

// Start serves until ctx ends, then stops gracefully.
func (s *ExtAuthzServer) Start(ctx context.Context) error {
	ln, err := listen(ctx, "ext_authz", s.opts.BindAddress, s.opts.CertDir, s.opts.Insecure, []string{"h2"}, s.logger)
	if err != nil {
		return err
	}
	opts := []grpc.ServerOption{
		grpc.MaxRecvMsgSize(int(s.ds.opts.MaxBodyBytes)),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
	}
	srv := grpc.NewServer(opts...)
	authv3.RegisterAuthorizationServer(srv, s)
	s.logger.Info("Serving Envoy ext_authz", "address", ln.Addr().String(), "tls", !s.opts.Insecure)

	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("serve ext_authz: %w", err)
	case <-ctx.Done():
	}
	stopped := make(chan struct{})
	go func() { srv.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(25 * time.Second):
		srv.Stop()
	}
	if err := <-errc; err != nil && !errors.Is(err, grpc.ErrServerStopped) {
		return fmt.Errorf("serve ext_authz: %w", err)
	}
	return nil
}

// Check implements envoy.service.auth.v3.Authorization. Namespace, service
// and scopes come from the route's context extensions, which the client
// cannot set; without them the target is found by :authority.
func (s *ExtAuthzServer) Check(ctx context.Context, in *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	start := s.ds.now()
	if !s.ds.ready() {
		return deniedResponse(codes.Unavailable, typev3.StatusCode_ServiceUnavailable, "", "not ready: the first policy snapshot is not built yet", nil), nil
	}
	req, err := extAuthzRequest(in)
	if err != nil {
		return deniedResponse(codes.InvalidArgument, typev3.StatusCode_BadRequest, "", err.Error(), nil), nil
	}
	d := s.ds.decide(ctx, req, start, "grpc")
	switch {
	case d.Allowed:
		return allowedResponse(d), nil
	case !d.Connection.Allowed:
		return deniedResponse(codes.Unauthenticated, typev3.StatusCode_Unauthorized, d.ID, d.Connection.Reason, d), nil
	default:
		return deniedResponse(codes.PermissionDenied, typev3.StatusCode_Forbidden, d.ID, d.Resource.Reason, d), nil
	}
}

func deniedResponse(code codes.Code, httpCode typev3.StatusCode, id, reason string, d *decision.Decision) *authv3.CheckResponse {
	msg := reason
	if d == nil {
		// A malformed or early request: the reason is the message.
		reason = "BadRequest"
		if httpCode == typev3.StatusCode_ServiceUnavailable {
			reason = "NotReady"
		}
	}
	hs := headers("X-Sallyport-Reason", reason)
	if id != "" {
		hs = append(hs, headers("X-Sallyport-Decision-Id", id)...)
	}
	return &authv3.CheckResponse{
		Status: &rpcstatus.Status{Code: int32(code), Message: msg},
		HttpResponse: &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{
			Status:  &typev3.HttpStatus{Code: httpCode},
			Headers: hs,
		}},
	}
}

// allowedHeaderNames are the headers an allowed answer sets on the request
// to the upstream, in allowedResponse's order.
var allowedHeaderNames = [...]string{"X-Sallyport-Decision-Id", "X-Sallyport-Reason", "X-Sallyport-Identity", "X-Sallyport-Connection"}

// okResponse is every message of an allowed answer, allocated together:
// answering the hot path's most common case with one allocation instead of
// thirteen. The messages are built in place and never copied.
type okResponse struct {
	resp    authv3.CheckResponse
	ok      authv3.CheckResponse_OkResponse
	http    authv3.OkHttpResponse
	status  rpcstatus.Status
	values  [len(allowedHeaderNames)]corev3.HeaderValue
	options [len(allowedHeaderNames)]corev3.HeaderValueOption
	ptrs    [len(allowedHeaderNames)]*corev3.HeaderValueOption
}

// allowedResponse is the answer to an allowed decision. Its headers
// overwrite, so a client-sent X-Sallyport-* header never reaches the
// upstream as if sallyport had set it.
func allowedResponse(d *decision.Decision) *authv3.CheckResponse {
	r := new(okResponse)
	values := [len(allowedHeaderNames)]string{d.ID, d.Resource.Reason, d.Connection.Identity, d.Connection.Policy}
	for i, name := range allowedHeaderNames {
		r.values[i].Key, r.values[i].Value = name, values[i]
		r.options[i].Header = &r.values[i]
		r.options[i].AppendAction = corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD
		r.ptrs[i] = &r.options[i]
	}
	r.http.Headers = r.ptrs[:]
	r.ok.OkResponse = &r.http
	r.status.Code = int32(codes.OK)
	r.resp.Status, r.resp.HttpResponse = &r.status, &r.ok
	return &r.resp
}

func headers(kv ...string) []*corev3.HeaderValueOption {
	out := make([]*corev3.HeaderValueOption, 0, len(kv)/2)
	for i := 0; i+1 < len(kv); i += 2 {
		out = append(out, &corev3.HeaderValueOption{
			Header:       &corev3.HeaderValue{Key: kv[i], Value: kv[i+1]},
			AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD,
		})
	}
	return out
}

// extAuthzRequest maps an ext_authz CheckRequest to a decision request.
func extAuthzRequest(in *authv3.CheckRequest) (*decision.Request, error) {
	attrs := in.GetAttributes()
	h := attrs.GetRequest().GetHttp()
	if h == nil {
		return nil, &badRequest{Field: "attributes.request.http", Msg: "required"}
	}
	req := &decision.Request{Action: h.GetMethod(), Target: decision.Target{Name: pathOf(h.GetPath())}}
	ext := attrs.GetContextExtensions()
	req.Target.Namespace, req.Target.Service = ext["namespace"], ext["service"]
	req.Scopes = strings.Fields(ext["scopes"])
	if req.Target.Namespace == "" && req.Target.Service == "" {
		host, _, err := net.SplitHostPort(h.GetHost())
		if err != nil {
			host = h.GetHost()
		}
		req.Target.Host = strings.ToLower(host)
	}
	auth, err := authorizationHeader(h)
	if err != nil {
		return nil, err
	}
	if auth != "" {
		scheme, token, ok := strings.Cut(auth, " ")
		if !ok || !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(token) == "" {
			return nil, &badRequest{Field: "authorization", Msg: "must be \"Bearer <token>\""}
		}
		req.Token = strings.TrimSpace(token)
	}
	if err := decision.Validate(req); err != nil {
		return nil, err
	}
	return req, nil
}

// authorizationHeader reads the Authorization header from either form Envoy
// sends headers in. Envoy joins repeated headers with commas; a bearer token
// has none, so a comma means more than one header.
func authorizationHeader(h *authv3.AttributeContext_HttpRequest) (string, error) {
	var vals []string
	if v, ok := h.GetHeaders()["authorization"]; ok {
		vals = append(vals, v)
	}
	for _, hv := range h.GetHeaderMap().GetHeaders() {
		if strings.EqualFold(hv.GetKey(), "authorization") {
			v := hv.GetValue()
			if v == "" {
				v = string(hv.GetRawValue())
			}
			vals = append(vals, v)
		}
	}
	switch {
	case len(vals) == 0:
		return "", nil
	case len(vals) > 1 || strings.Contains(vals[0], ","):
		return "", &badRequest{Field: "authorization", Msg: "more than one header"}
	}
	return vals[0], nil
}
