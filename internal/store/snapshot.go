// Package store holds the compiled policies every replica decides with: an
// immutable Snapshot with the indexes the decision path needs, built from the
// policy objects by a Builder and swapped atomically in a Store. A policy
// whose new generation does not compile keeps its last good generation in
// every later snapshot.
package store

import (
	"iter"

	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"

	"github.com/sallyport/sallyport/api/v1alpha1"
	"github.com/sallyport/sallyport/internal/policy"
)

// Kind is the kind of a policy object.
type Kind string

// The two policy kinds.
const (
	KindConnection Kind = "ConnectionPolicy"
	KindResource   Kind = "ResourcePolicy"
)

// Ref names one policy object.
type Ref struct {
	Kind Kind
	types.NamespacedName
}

// Conflict says which older policy holds a claim this one makes.
type Conflict struct {
	// Reason is v1alpha1.ReasonAudienceConflict, ReasonHostConflict or
	// ReasonServiceConflict.
	Reason string
	// Claim is the contested audience, host or service.
	Claim string
	// Holder is the older policy that keeps it.
	Holder types.NamespacedName
}

// Status is what the store made of one policy object: the generation it last
// saw, whether that compiled, and which generation serves.
type Status struct {
	// UID and Generation identify the object version last seen.
	UID        types.UID
	Generation int64
	// Err is why Generation did not compile; nil when it did.
	Err error
	// Served is the generation that serves decisions, 0 when none.
	Served int64
	// Summary counts what the served generation compiled to.
	Summary policy.Summary
	// Audience is the audience of the served generation (ConnectionPolicy),
	// empty when none serves: the one tokens must carry now.
	Audience string
	// Conflict is set when an older policy holds a claim of the served
	// generation; the policy then serves nothing.
	Conflict *Conflict
}

func (s *Status) equal(o *Status) bool {
	if s == nil || o == nil {
		return s == o
	}
	errText := func(e error) string {
		if e == nil {
			return ""
		}
		return e.Error()
	}
	sameConflict := (s.Conflict == nil && o.Conflict == nil) ||
		(s.Conflict != nil && o.Conflict != nil && *s.Conflict == *o.Conflict)
	return s.UID == o.UID && s.Generation == o.Generation && errText(s.Err) == errText(o.Err) &&
		s.Served == o.Served && s.Summary == o.Summary && s.Audience == o.Audience && sameConflict
}

// serviceKey finds a ResourcePolicy by the name gateways use.
type serviceKey struct {
	namespace, service string
}

// index holds the lookups of one enforcement mode.
type index struct {
	byAudience map[string]*policy.Connection
	byService  map[serviceKey]*policy.Resource
	byHost     map[string]*policy.Resource
	byClass    map[string][]*policy.Resource
}

func newIndex() index {
	return index{
		byAudience: map[string]*policy.Connection{},
		byService:  map[serviceKey]*policy.Resource{},
		byHost:     map[string]*policy.Resource{},
		byClass:    map[string][]*policy.Resource{},
	}
}

// Snapshot is an immutable view of every serving policy. Readers share it
// without locks; nothing in it changes after it is published.
type Snapshot struct {
	// Version increases with every published snapshot.
	Version uint64

	enforced   index
	dryRun     index
	status     map[Ref]*Status
	namespaces map[string]labels.Set
}

func (s *Snapshot) index(e v1alpha1.Enforcement) *index {
	if e == v1alpha1.EnforcementDryRun {
		return &s.dryRun
	}
	return &s.enforced
}

// ConnectionByAudience returns the connection that holds an audience.
func (s *Snapshot) ConnectionByAudience(e v1alpha1.Enforcement, audience string) (*policy.Connection, bool) {
	c, ok := s.index(e).byAudience[audience]
	return c, ok
}

// ConnectionByAudienceBytes is ConnectionByAudience for an audience held in
// bytes, without converting them to a string.
func (s *Snapshot) ConnectionByAudienceBytes(e v1alpha1.Enforcement, audience []byte) (*policy.Connection, bool) {
	c, ok := s.index(e).byAudience[string(audience)]
	return c, ok
}

// ResourceByService returns the ResourcePolicy of a service in a namespace.
func (s *Snapshot) ResourceByService(e v1alpha1.Enforcement, namespace, service string) (*policy.Resource, bool) {
	r, ok := s.index(e).byService[serviceKey{namespace, service}]
	return r, ok
}

// ResourceByHost returns the ResourcePolicy that holds a host.
func (s *Snapshot) ResourceByHost(e v1alpha1.Enforcement, host string) (*policy.Resource, bool) {
	r, ok := s.index(e).byHost[host]
	return r, ok
}

// ResourcesByClass returns the serving ResourcePolicies of a class, oldest
// first. The slice is shared: callers must not modify it.
func (s *Snapshot) ResourcesByClass(e v1alpha1.Enforcement, class string) []*policy.Resource {
	return s.index(e).byClass[class]
}

// NamespaceLabels returns the labels of a namespace, for namespace
// selectors.
func (s *Snapshot) NamespaceLabels(namespace string) (labels.Set, bool) {
	l, ok := s.namespaces[namespace]
	return l, ok
}

// Status returns what the store made of a policy object.
func (s *Snapshot) Status(ref Ref) (Status, bool) {
	st, ok := s.status[ref]
	if !ok {
		return Status{}, false
	}
	return *st, true
}

// Len returns the number of policy objects the snapshot knows, serving or
// not.
func (s *Snapshot) Len() int { return len(s.status) }

// Serving returns the policies of one enforcement mode that serve, each
// once, in no particular order.
func (s *Snapshot) Serving(e v1alpha1.Enforcement) ([]*policy.Connection, []*policy.Resource) {
	ix := s.index(e)
	conns := make([]*policy.Connection, 0, len(ix.byAudience))
	for _, c := range ix.byAudience {
		conns = append(conns, c)
	}
	seen := make(map[*policy.Resource]bool, len(ix.byService))
	var res []*policy.Resource
	add := func(r *policy.Resource) {
		if !seen[r] {
			seen[r] = true
			res = append(res, r)
		}
	}
	for _, r := range ix.byService {
		add(r)
	}
	for _, r := range ix.byHost {
		add(r)
	}
	return conns, res
}

// HasDryRun reports whether any DryRun policy serves, so that the decision
// path skips shadow evaluation without a lookup when none does.
func (s *Snapshot) HasDryRun() bool {
	return len(s.dryRun.byAudience) > 0 || len(s.dryRun.byService) > 0 || len(s.dryRun.byHost) > 0
}

// Statuses yields what the store made of every policy object it knows.
func (s *Snapshot) Statuses() iter.Seq2[Ref, Status] {
	return func(yield func(Ref, Status) bool) {
		for ref, st := range s.status {
			if !yield(ref, *st) {
				return
			}
		}
	}
}
