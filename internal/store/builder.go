package store

import (
	"fmt"
	"maps"
	"slices"

	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"

	"github.com/sallyport/sallyport/api/v1alpha1"
	"github.com/sallyport/sallyport/internal/policy"
)

// entry is the builder's memory of one policy object.
type entry[T any] struct {
	uid        types.UID
	generation int64
	labels     labels.Set
	err        error
	// served is the last good compiled generation; it survives a newer
	// generation that fails to compile.
	served *T
}

// Builder turns policy objects into snapshots. It keeps the last good
// compiled generation of every policy. It is not safe for concurrent use:
// one goroutine feeds it and builds.
type Builder struct {
	compiler    *policy.Compiler
	connections map[types.NamespacedName]*entry[policy.Connection]
	resources   map[types.NamespacedName]*entry[policy.Resource]
	namespaces  map[string]labels.Set
	version     uint64
}

// NewBuilder returns an empty builder.
func NewBuilder(c *policy.Compiler) *Builder {
	return &Builder{
		compiler:    c,
		connections: map[types.NamespacedName]*entry[policy.Connection]{},
		resources:   map[types.NamespacedName]*entry[policy.Resource]{},
		namespaces:  map[string]labels.Set{},
	}
}

// upsert compiles obj unless the entry already holds this UID, generation
// and labels. A new UID (the policy was deleted and recreated) starts over:
// the old object's last good version must not serve for the new one.
func upsert[T any, O interface {
	GetUID() types.UID
	GetGeneration() int64
	GetLabels() map[string]string
}](m map[types.NamespacedName]*entry[T], key types.NamespacedName, obj O, compile func() (*T, error), carry func(prev, next *T)) error {
	e := m[key]
	if e != nil && e.uid == obj.GetUID() && e.generation == obj.GetGeneration() && maps.Equal(e.labels, labels.Set(obj.GetLabels())) {
		return nil
	}
	if e == nil || e.uid != obj.GetUID() {
		e = &entry[T]{}
		m[key] = e
	}
	e.uid, e.generation, e.labels = obj.GetUID(), obj.GetGeneration(), labels.Set(obj.GetLabels())
	compiled, err := safeCompile(compile)
	e.err = err
	if err == nil {
		if e.served != nil {
			carry(e.served, compiled)
		}
		e.served = compiled
	}
	return err
}

// carryConnection hands the usage counters of a policy's served generation
// on to its next one: a reach entry keeps counting under its class, and a
// DryRun policy's shadow counts survive a recompile of the same generation
// (a label change), not a new one.
func carryConnection(prev, next *policy.Connection) {
	for class, r := range next.Reach {
		if p := prev.Reach[class]; p != nil {
			r.Usage = p.Usage
		}
	}
	carryShadow(&prev.Meta, &next.Meta)
}

// carryResource is carryConnection for ResourcePolicies: a rule keeps its
// counters under its name and effect.
func carryResource(prev, next *policy.Resource) {
	old := make(map[string]*policy.Rule, len(prev.Deny)+len(prev.Allow))
	for r := range prev.Rules() {
		old[r.Name] = r
	}
	for r := range next.Rules() {
		if p := old[r.Name]; p != nil && p.Effect == r.Effect {
			r.Usage = p.Usage
		}
	}
	carryShadow(&prev.Meta, &next.Meta)
}

func carryShadow(prev, next *policy.Meta) {
	if prev.Shadowed != nil && next.Shadowed != nil && prev.Generation == next.Generation {
		next.Shadowed = prev.Shadowed
	}
}

// safeCompile turns a panic in compilation into an error, so one hostile
// policy cannot stop the loader that serves all the others.
func safeCompile[T any](compile func() (*T, error)) (out *T, err error) {
	defer func() {
		if r := recover(); r != nil {
			out, err = nil, fmt.Errorf("internal error while compiling: %v", r)
		}
	}()
	return compile()
}

// UpsertConnection records the current version of a ConnectionPolicy. It
// returns the compile error when this call compiled a new version that
// failed; an unchanged version is not compiled again.
func (b *Builder) UpsertConnection(cp *v1alpha1.ConnectionPolicy) error {
	key := types.NamespacedName{Namespace: cp.Namespace, Name: cp.Name}
	return upsert(b.connections, key, cp, func() (*policy.Connection, error) { return b.compiler.CompileConnection(cp) }, carryConnection)
}

// UpsertResource records the current version of a ResourcePolicy, like
// UpsertConnection.
func (b *Builder) UpsertResource(rp *v1alpha1.ResourcePolicy) error {
	key := types.NamespacedName{Namespace: rp.Namespace, Name: rp.Name}
	return upsert(b.resources, key, rp, func() (*policy.Resource, error) { return b.compiler.CompileResource(rp) }, carryResource)
}

// Delete forgets a policy: its served version stops serving.
func (b *Builder) Delete(ref Ref) {
	switch ref.Kind {
	case KindConnection:
		delete(b.connections, ref.NamespacedName)
	case KindResource:
		delete(b.resources, ref.NamespacedName)
	}
}

// SetNamespace records the labels of a namespace; nil labels with gone set
// forget it.
func (b *Builder) SetNamespace(name string, l map[string]string, gone bool) {
	if gone {
		delete(b.namespaces, name)
		return
	}
	b.namespaces[name] = labels.Set(maps.Clone(l))
}

// Build returns a snapshot of everything recorded so far. Conflicting claims
// are resolved by age (policy.Older), so every replica resolves them the same
// way: the policies of each enforcement mode claim in age order, and a policy
// that finds one of its claims held serves nothing.
func (b *Builder) Build() *Snapshot {
	b.version++
	s := &Snapshot{
		Version:    b.version,
		enforced:   newIndex(),
		dryRun:     newIndex(),
		status:     make(map[Ref]*Status, len(b.connections)+len(b.resources)),
		namespaces: maps.Clone(b.namespaces),
	}

	conns := make([]*policy.Connection, 0, len(b.connections))
	for key, e := range b.connections {
		st := &Status{UID: e.uid, Generation: e.generation, Err: e.err}
		if e.served != nil {
			st.Served, st.Summary, st.Audience = e.served.Generation, e.served.Summary, e.served.Audience
			conns = append(conns, e.served)
		}
		s.status[Ref{KindConnection, key}] = st
	}
	slices.SortFunc(conns, byAge(func(c *policy.Connection) *policy.Meta { return &c.Meta }))
	for _, c := range conns {
		idx := s.index(c.Enforcement)
		if holder, taken := idx.byAudience[c.Audience]; taken {
			s.status[Ref{KindConnection, c.Ref}].Conflict = &Conflict{Reason: v1alpha1.ReasonAudienceConflict, Claim: c.Audience, Holder: holder.Ref}
			continue
		}
		idx.byAudience[c.Audience] = c
	}

	res := make([]*policy.Resource, 0, len(b.resources))
	for key, e := range b.resources {
		st := &Status{UID: e.uid, Generation: e.generation, Err: e.err}
		if e.served != nil {
			st.Served, st.Summary = e.served.Generation, e.served.Summary
			res = append(res, e.served)
		}
		s.status[Ref{KindResource, key}] = st
	}
	slices.SortFunc(res, byAge(func(r *policy.Resource) *policy.Meta { return &r.Meta }))
	for _, r := range res {
		idx := s.index(r.Enforcement)
		if c := resourceConflict(idx, r); c != nil {
			s.status[Ref{KindResource, r.Ref}].Conflict = c
			continue
		}
		idx.byService[serviceKey{r.Ref.Namespace, r.Service}] = r
		for _, h := range r.Hosts {
			idx.byHost[h] = r
		}
		idx.byClass[r.Class] = append(idx.byClass[r.Class], r)
	}
	return s
}

func resourceConflict(idx *index, r *policy.Resource) *Conflict {
	if holder, taken := idx.byService[serviceKey{r.Ref.Namespace, r.Service}]; taken {
		return &Conflict{Reason: v1alpha1.ReasonServiceConflict, Claim: r.Service, Holder: holder.Ref}
	}
	for _, h := range r.Hosts {
		if holder, taken := idx.byHost[h]; taken {
			return &Conflict{Reason: v1alpha1.ReasonHostConflict, Claim: h, Holder: holder.Ref}
		}
	}
	return nil
}

func byAge[T any](meta func(T) *policy.Meta) func(a, b T) int {
	return func(a, b T) int {
		switch ma, mb := meta(a), meta(b); {
		case policy.Older(ma, mb):
			return -1
		case policy.Older(mb, ma):
			return 1
		}
		return 0
	}
}
