package webhook

import (
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"

	"github.com/sallyport/sallyport/internal/decision"
)

// A forwardProfile reads one gateway's subrequest. Each profile reads only
// the headers its gateway sets, with no fallback to another gateway's
// headers: a client must never supply the object it is judged on.
type forwardProfile struct {
	endpoint string
	// target fills the method, the object path and, for profiles that take
	// it from the Host, the host.
	target func(r *http.Request) (method, uri, host string, err error)
	// query says whether namespace, service and scopes come from the query
	// string the gateway is configured with. Envoy's HTTP ext_authz forwards
	// the client's own query, so that profile takes nothing from it.
	query bool
}

var (
	nginxProfile = forwardProfile{endpoint: "check/nginx", query: true, target: func(r *http.Request) (string, string, string, error) {
		return r.Header.Get("X-Original-Method"), r.Header.Get("X-Original-URI"), "", requireHeaders(r, "X-Original-Method", "X-Original-URI")
	}}
	traefikProfile = forwardProfile{endpoint: "check/traefik", query: true, target: func(r *http.Request) (string, string, string, error) {
		return r.Header.Get("X-Forwarded-Method"), r.Header.Get("X-Forwarded-Uri"), "", requireHeaders(r, "X-Forwarded-Method", "X-Forwarded-Uri")
	}}
	envoyProfile = forwardProfile{endpoint: "check/envoy", target: func(r *http.Request) (string, string, string, error) {
		// Envoy's HTTP ext_authz (path_prefix: /v1/check/envoy) sends the
		// original method, path and Host.
		uri := strings.TrimPrefix(r.URL.EscapedPath(), "/v1/check/envoy")
		if uri == "" {
			uri = "/"
		}
		host, _, err := net.SplitHostPort(r.Host)
		if err != nil {
			host = r.Host
		}
		if host == "" {
			return "", "", "", &badRequest{Field: "Host", Msg: "required: the target is found by host"}
		}
		return r.Method, uri, strings.ToLower(host), nil
	}}
)

func requireHeaders(r *http.Request, names ...string) error {
	for _, n := range names {
		if len(r.Header.Values(n)) != 1 || r.Header.Get(n) == "" {
			return &badRequest{Field: n, Msg: "exactly one non-empty header is required"}
		}
	}
	return nil
}

// forwardAuth answers a gateway's subrequest: 200 allowed, 401 when the
// connection is denied, 403 when the resource is denied, 400 when the
// subrequest is malformed. Every answer says which decision and why.
func (s *DecisionServer) forwardAuth(p forwardProfile) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		start := s.now()
		if !s.ready() {
			writeError(w, http.StatusServiceUnavailable, fmt.Errorf("not ready: the first policy snapshot is not built yet"))
			return
		}
		req, err := s.forwardRequest(p, r)
		if err != nil {
			writeError(w, http.StatusBadRequest, err)
			return
		}
		d := s.decide(r.Context(), req, start, p.endpoint)
		h := w.Header()
		h.Set("X-Sallyport-Decision-Id", d.ID)
		h.Set("Cache-Control", "no-store")
		switch {
		case d.Allowed:
			h.Set("X-Sallyport-Reason", d.Resource.Reason)
			h.Set("X-Sallyport-Identity", d.Connection.Identity)
			h.Set("X-Sallyport-Connection", d.Connection.Policy)
			w.WriteHeader(http.StatusOK)
		case !d.Connection.Allowed:
			h.Set("X-Sallyport-Reason", d.Connection.Reason)
			h.Set("WWW-Authenticate", `Bearer realm="sallyport", error="invalid_token"`)
			w.WriteHeader(http.StatusUnauthorized)
		default:
			h.Set("X-Sallyport-Reason", d.Resource.Reason)
			w.WriteHeader(http.StatusForbidden)
		}
	}
}

// forwardRequest maps a subrequest to a decision request.
func (s *DecisionServer) forwardRequest(p forwardProfile, r *http.Request) (*decision.Request, error) {
	if r.ContentLength > 0 {
		// Gateways send no body; refusing one keeps the limits simple.
		return nil, &badRequest{Field: "body", Msg: "a forward-auth request has no body"}
	}
	method, uri, host, err := p.target(r)
	if err != nil {
		return nil, err
	}
	req := &decision.Request{Action: method, Target: decision.Target{Host: host, Name: pathOf(uri)}}
	if p.query {
		q, err := url.ParseQuery(r.URL.RawQuery)
		if err != nil {
			return nil, &badRequest{Field: "query", Msg: err.Error()}
		}
		for _, k := range []string{"namespace", "service", "host", "scopes"} {
			if len(q[k]) > 1 {
				return nil, &badRequest{Field: k, Msg: "given more than once in the query"}
			}
		}
		req.Target.Namespace, req.Target.Service, req.Target.Host = q.Get("namespace"), q.Get("service"), q.Get("host")
		req.Scopes = strings.Fields(q.Get("scopes"))
	}
	token, err := bearerToken(r)
	if err != nil {
		return nil, err
	}
	req.Token = token
	if err := decision.Validate(req); err != nil {
		return nil, err
	}
	return req, nil
}

// pathOf strips the query from a request URI; the engine canonicalises the
// rest. A "#" stays: clients do not send fragments, and an upstream that
// keeps a raw "#" in the path must see the same path that was judged. An
// absolute URI (a proxy's request line) keeps only its path.
func pathOf(uri string) string {
	if i := strings.IndexByte(uri, '?'); i >= 0 {
		uri = uri[:i]
	}
	if !strings.HasPrefix(uri, "/") {
		if u, err := url.Parse(uri); err == nil && u.IsAbs() {
			uri = u.EscapedPath()
		}
	}
	return uri
}

// bearerToken reads the token of an Authorization: Bearer header. No header
// is no credential (the connection gate says MissingCredential); anything
// else than one well-formed Bearer header is malformed.
func bearerToken(r *http.Request) (string, error) {
	vals := r.Header.Values("Authorization")
	switch len(vals) {
	case 0:
		return "", nil
	case 1:
	default:
		return "", &badRequest{Field: "Authorization", Msg: "more than one header"}
	}
	scheme, token, ok := strings.Cut(vals[0], " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(token) == "" {
		return "", &badRequest{Field: "Authorization", Msg: "must be \"Bearer <token>\""}
	}
	return strings.TrimSpace(token), nil
}
