package decision

import (
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/sallyport/sallyport/internal/expr"
)

// Field names as the decision API spells them, for FieldError.Field. A scope
// or attribute is named with its index or key: `scopes[2]`,
// `attributes["sourceIP"]`.
const (
	FieldRequest           = "request"
	FieldResource          = "resource"
	FieldResourceNamespace = "resource.namespace"
	FieldResourceService   = "resource.service"
	FieldResourceHost      = "resource.host"
	FieldResourceName      = "resource.name"
	FieldAction            = "action"
	FieldScopes            = "scopes"
	FieldAttributes        = "attributes"
)

// Bounds on target fields. Namespace and service are Kubernetes names (the
// CRD allows 63 bytes for a service); a host is a DNS name with an optional
// port.
const (
	maxNamespaceLength = 63
	maxServiceLength   = 63
	maxHostLength      = 253 + len(":65535")
)

// FieldError is a malformed request: the decision API answers it with 400
// and nothing is evaluated.
type FieldError struct {
	// Field names the offending field as the decision API spells it, see
	// the Field constants.
	Field string
	// Detail says what is wrong with it.
	Detail string
	// Err is the underlying error, if any (ErrMalformedPath for a path).
	Err error
}

// Error is "<field>: <detail>".
func (e *FieldError) Error() string { return e.Field + ": " + e.Detail }

// Unwrap returns the underlying error.
func (e *FieldError) Unwrap() error { return e.Err }

func fieldErr(field, format string, args ...any) *FieldError {
	return &FieldError{Field: field, Detail: fmt.Sprintf(format, args...)}
}

// Validate checks that a request is well formed: a target (namespace and
// service, or host), a canonicalisable object path (see CanonicalPath), an
// action, and scopes and attributes within the bounds the static cost
// estimates of expressions rely on (expr.MaxScopes and the rest). It does
// not look at the token: a missing or malformed credential is a decision
// (MissingCredential, InvalidCredential), not a malformed request.
//
// The error, when there is one, is a *FieldError. Servers call Validate
// first and answer 400 with it; Engine.Decide validates again and never
// evaluates a request that fails.
func Validate(req *Request) error {
	if _, _, fe := validate(req); fe != nil {
		return fe
	}
	return nil
}

// validate checks req and returns its canonical path and normalised host.
func validate(req *Request) (path, host string, _ *FieldError) {
	if req == nil {
		return "", "", fieldErr(FieldRequest, "missing")
	}
	t := &req.Target
	switch {
	case t.Namespace == "" && t.Service == "" && t.Host == "":
		return "", "", fieldErr(FieldResource, "namespace and service, or host, are required")
	case t.Namespace != "" && t.Service == "":
		return "", "", fieldErr(FieldResourceService, "required with %s", FieldResourceNamespace)
	case t.Service != "" && t.Namespace == "":
		return "", "", fieldErr(FieldResourceNamespace, "required with %s", FieldResourceService)
	}
	if d := checkToken(t.Namespace, maxNamespaceLength); d != "" {
		return "", "", fieldErr(FieldResourceNamespace, "%s", d)
	}
	if d := checkToken(t.Service, maxServiceLength); d != "" {
		return "", "", fieldErr(FieldResourceService, "%s", d)
	}
	if d := checkToken(t.Host, maxHostLength); d != "" {
		return "", "", fieldErr(FieldResourceHost, "%s", d)
	}
	host = normalizeHost(t.Host)

	path, err := CanonicalPath(t.Name)
	if err != nil {
		return "", "", &FieldError{Field: FieldResourceName, Detail: err.Error(), Err: err}
	}

	if req.Action == "" {
		return "", "", fieldErr(FieldAction, "required")
	}
	if d := checkToken(req.Action, expr.MaxActionLength); d != "" {
		return "", "", fieldErr(FieldAction, "%s", d)
	}

	if len(req.Scopes) > expr.MaxScopes {
		return "", "", fieldErr(FieldScopes, "%d scopes, more than the %d allowed", len(req.Scopes), expr.MaxScopes)
	}
	for i, s := range req.Scopes {
		d := checkToken(s, expr.MaxScopeLength)
		switch s {
		case "":
			d = "empty"
		case "*":
			// Policies read "*" as any scope; a request may not claim it.
			d = `"*" is not a scope`
		}
		if d != "" {
			return "", "", fieldErr(FieldScopes+"["+strconv.Itoa(i)+"]", "%s", d)
		}
	}

	if len(req.Attributes) > expr.MaxAttributes {
		return "", "", fieldErr(FieldAttributes, "%d attributes, more than the %d allowed", len(req.Attributes), expr.MaxAttributes)
	}
	for k, v := range req.Attributes {
		if k == "" {
			return "", "", fieldErr(FieldAttributes, "empty attribute name")
		}
		if d := checkToken(k, expr.MaxAttributeKeyLength); d != "" {
			return "", "", fieldErr(FieldAttributes, "name %s: %s", strconv.Quote(truncate(k, 64)), d)
		}
		if len(v) > expr.MaxAttributeValueLength {
			return "", "", fieldErr(attrField(k), "%d bytes long, more than the %d allowed", len(v), expr.MaxAttributeValueLength)
		}
		if !utf8.ValidString(v) {
			return "", "", fieldErr(attrField(k), "not valid UTF-8")
		}
	}
	return path, host, nil
}

func attrField(k string) string { return FieldAttributes + "[" + strconv.Quote(k) + "]" }

// checkToken checks a name-like value: at most maxLen bytes of valid UTF-8,
// without spaces or control characters. It returns what is wrong, or "".
// These values reach the decision log and, for action and scopes, CEL.
func checkToken(s string, maxLen int) string {
	if len(s) > maxLen {
		return fmt.Sprintf("%d bytes long, more than the %d allowed", len(s), maxLen)
	}
	ascii := true
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c == 0x7f {
			return fmt.Sprintf("space or control character at byte %d", i)
		}
		if c >= utf8.RuneSelf {
			ascii = false
		}
	}
	if !ascii && !utf8.ValidString(s) {
		return "not valid UTF-8"
	}
	return ""
}

// normalizeHost lower-cases a host and drops one trailing dot ("Ledger.
// Example." is "ledger.example"): host names are case-insensitive, and
// policies spell them in lower case. The port, if any, is kept; lookup
// tries host:port first, then the host alone.
func normalizeHost(h string) string {
	if h == "" {
		return ""
	}
	for i := 0; i < len(h); i++ {
		if c := h[i]; 'A' <= c && c <= 'Z' {
			h = strings.ToLower(h)
			break
		}
	}
	if host, port, ok := splitPort(h); ok && strings.HasSuffix(host, ".") {
		return strings.TrimSuffix(host, ".") + ":" + port
	}
	return strings.TrimSuffix(h, ".")
}

// splitPort splits "host:port" where port is 1 to 5 digits and host has no
// other ":" (IPv6 literals, which policies cannot name, are left alone).
func splitPort(h string) (host, port string, ok bool) {
	i := strings.LastIndexByte(h, ':')
	if i <= 0 || strings.IndexByte(h[:i], ':') >= 0 {
		return "", "", false
	}
	port = h[i+1:]
	if len(port) == 0 || len(port) > 5 {
		return "", "", false
	}
	for j := 0; j < len(port); j++ {
		if port[j] < '0' || port[j] > '9' {
			return "", "", false
		}
	}
	return h[:i], port, true
}

// truncate shortens s to at most n bytes at a rune boundary, marking the cut.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}
