// Package usage carries what the decisions of every replica used across the
// replicas: each replica publishes its counts in a report ConfigMap in the
// operator's namespace (Reporter), and the leader merges the reports into
// one view (Merger) that the policy controllers write into status.
//
// Counts must neither be lost nor counted twice when replicas restart or
// go away. A replica's report is cumulative: a restarted process in the same
// pod, or on the same host out of a cluster, adopts its predecessor's report
// and counts on from it. The report of a replica whose pod is gone is folded
// by the leader into the archive ConfigMap, which records the folded
// report's UID in the same write, so a fold interrupted before the report
// is deleted is never added twice.
package usage

import (
	"maps"
	"math"
	"time"

	"k8s.io/apimachinery/pkg/types"
)

// SchemaVersion is the version of the report format.
const SchemaVersion = 1

// Kinds a report names.
const (
	KindConnection = "ConnectionPolicy"
	KindResource   = "ResourcePolicy"
)

// Report is what one replica, or the archive, holds: per policy, the use of
// each grant and the shadow counts of a DryRun generation.
type Report struct {
	SchemaVersion int `json:"schemaVersion"`
	// Replica names the process that wrote it; empty in the archive.
	Replica string `json:"replica,omitempty"`
	// Pod is the pod the replica runs in, when it runs in one: the leader
	// folds the report once that pod is gone.
	Pod *Pod `json:"pod,omitempty"`
	// Written is when the report was written.
	Written time.Time `json:"written"`
	// Policies are keyed by policy UID.
	Policies map[types.UID]*Policy `json:"policies"`
	// Folded lists the UIDs of the report ConfigMaps folded into the
	// archive; only the archive has it.
	Folded []types.UID `json:"folded,omitempty"`
}

// Pod identifies the pod a replica runs in.
type Pod struct {
	Name string    `json:"name"`
	UID  types.UID `json:"uid"`
}

// Policy is the use of one policy's grants.
type Policy struct {
	Kind      string `json:"kind"`
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	// Grants are keyed by rule name (ResourcePolicy) or class
	// (ConnectionPolicy).
	Grants map[string]Grant `json:"grants,omitempty"`
	// Shadow is the shadow counts of a DryRun policy's generation.
	Shadow *Shadow `json:"shadow,omitempty"`
}

// Grant is the use of one rule or reach entry. Times are Unix seconds.
type Grant struct {
	// Decisions is the count of decisions the grant made.
	Decisions uint64 `json:"n"`
	// Last is the latest use; 0 never.
	Last int64 `json:"last,omitempty"`
	// Since is when the grant was first served; 0 unknown.
	Since int64 `json:"since,omitempty"`
}

// Shadow is the shadow counts of one generation of a DryRun policy. Times
// are Unix seconds.
type Shadow struct {
	Generation       int64  `json:"generation"`
	Decisions        uint64 `json:"n"`
	WouldDeny        uint64 `json:"wouldDeny,omitempty"`
	WouldAllow       uint64 `json:"wouldAllow,omitempty"`
	LastDisagreement int64  `json:"lastDisagreement,omitempty"`
}

// newReport returns an empty report.
func newReport() *Report {
	return &Report{SchemaVersion: SchemaVersion, Policies: map[types.UID]*Policy{}}
}

// Add merges o into r: counts add up, the latest use and the earliest
// tracking start win, and of shadow counts only the newest generation
// stays. o is not changed or retained.
func (r *Report) Add(o *Report) {
	for uid, op := range o.Policies {
		p := r.Policies[uid]
		if p == nil {
			p = &Policy{Kind: op.Kind, Namespace: op.Namespace, Name: op.Name}
			r.Policies[uid] = p
		}
		p.add(op)
	}
}

func (p *Policy) add(o *Policy) {
	if len(o.Grants) > 0 && p.Grants == nil {
		p.Grants = make(map[string]Grant, len(o.Grants))
	}
	for k, g := range o.Grants {
		p.Grants[k] = p.Grants[k].plus(g)
	}
	switch s := o.Shadow; {
	case s == nil:
	case p.Shadow == nil || s.Generation > p.Shadow.Generation:
		c := *s
		p.Shadow = &c
	case s.Generation == p.Shadow.Generation:
		p.Shadow.Decisions = addSat(p.Shadow.Decisions, s.Decisions)
		p.Shadow.WouldDeny = addSat(p.Shadow.WouldDeny, s.WouldDeny)
		p.Shadow.WouldAllow = addSat(p.Shadow.WouldAllow, s.WouldAllow)
		p.Shadow.LastDisagreement = max(p.Shadow.LastDisagreement, s.LastDisagreement)
	}
}

func (g Grant) plus(o Grant) Grant {
	g.Decisions = addSat(g.Decisions, o.Decisions)
	g.Last = max(g.Last, o.Last)
	if g.Since == 0 || (o.Since != 0 && o.Since < g.Since) {
		g.Since = o.Since
	}
	return g
}

// addSat adds without wrapping around: a count read from a ConfigMap may be
// anything.
func addSat(a, b uint64) uint64 {
	if a+b < a {
		return math.MaxUint64
	}
	return a + b
}

// samePolicies reports whether two sets of policies have the same usage.
func samePolicies(a, b map[types.UID]*Policy) bool {
	if len(a) != len(b) {
		return false
	}
	for uid, p := range a {
		if !p.equal(b[uid]) {
			return false
		}
	}
	return true
}

// equal reports whether two policies' usage is the same.
func (p *Policy) equal(o *Policy) bool {
	if p == nil || o == nil {
		return p == o
	}
	if !maps.Equal(p.Grants, o.Grants) {
		return false
	}
	if p.Shadow == nil || o.Shadow == nil {
		return p.Shadow == o.Shadow
	}
	return *p.Shadow == *o.Shadow
}

// unix turns a time into Unix seconds, 0 for the zero time.
func unix(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.Unix()
}
