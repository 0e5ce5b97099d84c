package main

import (
	"cmp"
	"net/http"
	"slices"
	"strings"
	"sync"
)

// call is one kind of API call: a verb as the API server's audit log names
// it (get, list, watch, create, update, patch, delete) and the resource with
// its group and subresource ("resourcepolicies.policy.sallyport.dev/status").
type call struct {
	Verb, Resource string
}

// callCounter counts the requests a rest.Config's clients send, by verb and
// resource. It wraps the transport (rest.Config.Wrap), so it sees every
// client built from that config: the manager's cached and direct clients,
// its informers, the event recorder and the credential reviewer. A watch is
// counted once, when it is opened.
type callCounter struct {
	mu     sync.Mutex
	counts map[call]int
}

func newCallCounter() *callCounter { return &callCounter{counts: map[call]int{}} }

// wrap is a rest.Config.WrapTransport function.
func (c *callCounter) wrap(rt http.RoundTripper) http.RoundTripper {
	return roundTripperFunc(func(r *http.Request) (*http.Response, error) {
		k := classify(r)
		c.mu.Lock()
		c.counts[k]++
		c.mu.Unlock()
		return rt.RoundTrip(r)
	})
}

// snapshot returns a copy of the counts so far.
func (c *callCounter) snapshot() map[call]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[call]int, len(c.counts))
	for k, v := range c.counts {
		out[k] = v
	}
	return out
}

type roundTripperFunc func(*http.Request) (*http.Response, error)

func (f roundTripperFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// callCount is one row of a call table.
type callCount struct {
	call
	N int
}

// diffCalls returns the calls made between two snapshots, most frequent
// first.
func diffCalls(before, after map[call]int) []callCount {
	var out []callCount
	for k, v := range after {
		if d := v - before[k]; d > 0 {
			out = append(out, callCount{k, d})
		}
	}
	slices.SortFunc(out, func(a, b callCount) int {
		return cmp.Or(cmp.Compare(b.N, a.N), cmp.Compare(a.Resource, b.Resource), cmp.Compare(a.Verb, b.Verb))
	})
	return out
}

// totalCalls sums calls, optionally only those of one verb.
func totalCalls(cs []callCount, verb string) int {
	n := 0
	for _, c := range cs {
		if verb == "" || c.Verb == verb {
			n += c.N
		}
	}
	return n
}

// classify names a request as the API server would: /api/v1/... is the
// core group, /apis/<group>/<version>/... any other; anything else (discovery,
// /version) is a non-resource URL counted under its path.
func classify(r *http.Request) call {
	parts := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
	var group string
	var rest []string
	switch {
	case len(parts) >= 2 && parts[0] == "api":
		rest = parts[2:]
	case len(parts) >= 3 && parts[0] == "apis":
		group, rest = parts[1], parts[3:]
	}
	if len(rest) == 0 {
		return call{Verb: strings.ToLower(r.Method), Resource: r.URL.Path}
	}
	// /namespaces/<ns>/<resource>/... is namespaced; /namespaces/<name> and
	// its status and finalize subresources are the namespace itself.
	if rest[0] == "namespaces" && len(rest) >= 3 && rest[2] != "status" && rest[2] != "finalize" {
		rest = rest[2:]
	}
	resource, name := rest[0], ""
	if len(rest) >= 2 {
		name = rest[1]
	}
	if len(rest) >= 3 {
		resource += "/" + rest[2]
	}
	if group != "" {
		if i := strings.IndexByte(resource, '/'); i >= 0 {
			resource = resource[:i] + "." + group + resource[i:]
		} else {
			resource += "." + group
		}
	}
	return call{Verb: verbOf(r, name), Resource: resource}
}

func verbOf(r *http.Request, name string) string {
	switch r.Method {
	case http.MethodGet:
		switch {
		case r.URL.Query().Get("watch") == "true" || r.URL.Query().Get("watch") == "1":
			return "watch"
		case name == "":
			return "list"
		}
		return "get"
	case http.MethodPost:
		return "create"
	case http.MethodPut:
		return "update"
	case http.MethodPatch:
		return "patch"
	case http.MethodDelete:
		if name == "" {
			return "deletecollection"
		}
		return "delete"
	}
	return strings.ToLower(r.Method)
}
