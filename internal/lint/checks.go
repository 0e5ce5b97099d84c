package lint

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"

	"github.com/sallyport/sallyport/api/v1alpha1"
	"github.com/sallyport/sallyport/internal/pathpattern"
	"github.com/sallyport/sallyport/internal/policy"
	"github.com/sallyport/sallyport/internal/store"
)

func connRef(cp *v1alpha1.ConnectionPolicy) store.Ref {
	return store.Ref{Kind: store.KindConnection, NamespacedName: types.NamespacedName{Namespace: cp.Namespace, Name: cp.Name}}
}

func resRef(rp *v1alpha1.ResourcePolicy) store.Ref {
	return store.Ref{Kind: store.KindResource, NamespacedName: types.NamespacedName{Namespace: rp.Namespace, Name: rp.Name}}
}

// where names a policy and where it was read, for messages.
func (l *linter) where(ref store.Ref) string {
	return fmt.Sprintf("%s %s (%s)", ref.Kind, ref.NamespacedName, l.set.Sources[ref])
}

// conflicts reports the claims the cluster would resolve against a policy:
// the snapshot resolves them exactly as every replica does (the older
// policy keeps the claim, the other serves nothing), so the finding names
// the policy that wins and sits on the one that is ignored.
func (l *linter) conflicts() {
	const older = "which is older (creationTimestamp; offline, in load order) and keeps it"
	for _, cp := range l.set.ConnectionPolicies {
		ref := connRef(cp)
		st, ok := l.set.Snapshot.Status(ref)
		if !ok || st.Conflict == nil {
			continue
		}
		holder := store.Ref{Kind: store.KindConnection, NamespacedName: st.Conflict.Holder}
		l.add(DuplicateAudience, ref, "spec.audience",
			"audience %q is also claimed by %s, %s; in the cluster this policy serves nothing (Ready=False, reason %s). Give one of them another audience",
			st.Conflict.Claim, l.where(holder), older, st.Conflict.Reason)
	}
	for _, rp := range l.set.ResourcePolicies {
		ref := resRef(rp)
		st, ok := l.set.Snapshot.Status(ref)
		if !ok || st.Conflict == nil {
			continue
		}
		holder := store.Ref{Kind: store.KindResource, NamespacedName: st.Conflict.Holder}
		switch st.Conflict.Reason {
		case v1alpha1.ReasonServiceConflict:
			l.add(DuplicateService, ref, "spec.service",
				"service %q in namespace %s is also claimed by %s, %s; in the cluster this policy serves nothing (Ready=False, reason %s). Merge the rules into one policy or rename the service",
				st.Conflict.Claim, rp.Namespace, l.where(holder), older, st.Conflict.Reason)
		default:
			fld := "spec.hosts"
			if i := slices.Index(rp.Spec.Hosts, st.Conflict.Claim); i >= 0 {
				fld = fmt.Sprintf("spec.hosts[%d]", i)
			}
			l.add(DuplicateHost, ref, fld,
				"host %q is also claimed by %s, %s; in the cluster this policy serves nothing (Ready=False, reason %s). A host may belong to one service only",
				st.Conflict.Claim, l.where(holder), older, st.Conflict.Reason)
		}
	}
}

// references reports rule entries that name a ConnectionPolicy by name
// that is not in the set.
func (l *linter) references() {
	if l.connsUnknown {
		return
	}
	for _, rp := range l.set.ResourcePolicies {
		for i, r := range rp.Spec.Rules {
			for j, e := range r.Connections {
				if e.Name == "" {
					continue
				}
				nn := types.NamespacedName{Namespace: e.Namespace, Name: e.Name}
				if nn.Namespace == "" {
					nn.Namespace = rp.Namespace
				}
				if l.conns[nn] != nil || l.brokenConns[nn] {
					continue
				}
				l.add(UnknownConnection, resRef(rp), fmt.Sprintf("spec.rules[%d].connections[%d]", i, j),
					"rule %q names ConnectionPolicy %s, which is not in the linted policies; check the namespace and name", r.Name, nn)
			}
		}
	}
}

// classOf lists the loaded ResourcePolicies of each class. A policy that
// fails to compile counts: it has its own finding, and leaving it out
// would only add findings that stem from that one.
func (l *linter) classOf() map[string][]*v1alpha1.ResourcePolicy {
	out := map[string][]*v1alpha1.ResourcePolicy{}
	for _, rp := range l.set.ResourcePolicies {
		out[string(rp.Spec.Class)] = append(out[string(rp.Spec.Class)], rp)
	}
	return out
}

// maxClassification is a reach entry's ceiling with its default.
func maxClassification(r *v1alpha1.Reach) policy.Level {
	if r.MaxClassification == "" {
		return policy.LevelInternal
	}
	return policy.ParseLevel(r.MaxClassification)
}

// reach reports reach entries that reach nothing: a class no
// ResourcePolicy serves, or one whose every service is classified above
// the entry's ceiling (the connection gate then refuses every request with
// ClassificationNotReachable).
func (l *linter) reach() {
	if l.resourcesUnknown {
		return
	}
	byClass := l.classOf()
	for _, cp := range l.set.ConnectionPolicies {
		for i := range cp.Spec.Reach {
			r := &cp.Spec.Reach[i]
			served := byClass[string(r.Class)]
			if len(served) == 0 {
				l.add(UnservedClass, connRef(cp), fmt.Sprintf("spec.reach[%d].class", i),
					"class %q is served by no ResourcePolicy in the linted policies; this reach entry grants nothing (a typo, or a service not yet described?)", r.Class)
				continue
			}
			ceiling := maxClassification(r)
			var names []string
			for _, rp := range served {
				if policy.ParseLevel(rp.Spec.Classification) <= ceiling {
					names = nil
					break
				}
				names = append(names, fmt.Sprintf("%s/%s (%s)", rp.Namespace, rp.Name, rp.Spec.Classification))
			}
			if len(names) > 0 {
				l.add(ClassificationAbove, connRef(cp), fmt.Sprintf("spec.reach[%d].maxClassification", i),
					"class %q is reached up to %s, but every service of the class is classified higher: %s; every request is refused (ClassificationNotReachable). Raise maxClassification or drop the entry",
					r.Class, ceiling, strings.Join(names, ", "))
			}
		}
	}
}

// rules reports Allow and Deny rules that can never decide, and Allow
// rules no connection in the set can reach.
func (l *linter) rules() {
	for _, rp := range l.set.ResourcePolicies {
		ref := resRef(rp)
		res := l.set.Resources[ref.NamespacedName]
		if res == nil {
			continue // it has its compile findings
		}
		shadowed := map[int]bool{}
		// Deny rules are evaluated before every Allow rule, whatever their
		// position, so any Deny rule can shadow an Allow rule; among Deny
		// rules, the earlier one decides.
		for _, r := range res.Allow {
			for _, d := range res.Deny {
				if covers(d, r) {
					shadowed[r.Index] = true
					l.add(ShadowedRule, ref, fmt.Sprintf("spec.rules[%d]", r.Index),
						"Allow rule %q can never match: Deny rule %q (spec.rules[%d], line %d) has no condition and matches every request this rule matches; Deny rules are evaluated first. Narrow the Deny rule or remove this one",
						r.Name, d.Name, d.Index, l.set.FieldLine(ref, fmt.Sprintf("spec.rules[%d]", d.Index)))
					break
				}
			}
		}
		for k, r := range res.Deny {
			for _, d := range res.Deny[:k] {
				if covers(d, r) {
					l.add(RedundantDeny, ref, fmt.Sprintf("spec.rules[%d]", r.Index),
						"Deny rule %q can never decide: the earlier Deny rule %q (spec.rules[%d], line %d) has no condition and matches every request this rule matches. Remove this rule or narrow the earlier one",
						r.Name, d.Name, d.Index, l.set.FieldLine(ref, fmt.Sprintf("spec.rules[%d]", d.Index)))
					break
				}
			}
		}
		if l.connsUnknown {
			continue
		}
		for _, r := range res.Allow {
			if shadowed[r.Index] {
				continue
			}
			if why := l.unreachable(rp, res, r); why != "" {
				l.add(UnreachableRule, ref, fmt.Sprintf("spec.rules[%d].connections", r.Index),
					"no ConnectionPolicy in the linted policies can reach Allow rule %q: %s", r.Name, why)
			}
		}
	}
}

// unreachable says why no loaded connection can pass the connection gate
// towards rule r and be named by it; empty when one may.
//
// A connection reaches the rule only if one of the rule's entries names it
// and its reach has the resource's class with a ceiling at or above the
// resource's classification: the connection gate refuses everything else
// (ClassNotReachable, ClassificationNotReachable) before the resource gate
// is asked. Scopes cannot make an Allow rule unreachable: a request without
// scopes passes every reach and matches every Allow rule's scopes. Nor can
// conditions be judged offline, so they are taken to be true. A namespace
// selector over a namespace the set does not declare (no Namespace
// document) is taken to match, since its labels in the cluster are
// unknown. What is reported is therefore true of every cluster that holds
// exactly the linted policies.
func (l *linter) unreachable(rp *v1alpha1.ResourcePolicy, res *policy.Resource, r *policy.Rule) string {
	var named, blocked []string
	for i := range r.Connections {
		sel := &r.Connections[i]
		matched := false
		for _, cp := range l.set.ConnectionPolicies {
			if !l.mayName(sel, cp) {
				continue
			}
			matched = true
			reach := findReach(cp, res.Class)
			switch {
			case reach == nil:
				blocked = append(blocked, fmt.Sprintf("%s/%s does not reach class %q", cp.Namespace, cp.Name, res.Class))
			case maxClassification(reach) < res.Classification:
				blocked = append(blocked, fmt.Sprintf("%s/%s reaches class %q only up to %s, below %s",
					cp.Namespace, cp.Name, res.Class, maxClassification(reach), rp.Spec.Classification))
			default:
				return ""
			}
		}
		if !matched {
			if sel.Name.Name != "" {
				named = append(named, fmt.Sprintf("%s is not in the linted policies", sel.Name))
			} else {
				named = append(named, fmt.Sprintf("connections[%d] selects no ConnectionPolicy", i))
			}
		}
	}
	return joinReasons(append(named, blocked...))
}

// maxReasons bounds the reasons a message lists: a selector over every
// namespace may name hundreds of connections.
const maxReasons = 5

// joinReasons joins distinct reasons, at most maxReasons of them.
func joinReasons(rs []string) string {
	seen := map[string]bool{}
	var out []string
	for _, r := range rs {
		if !seen[r] {
			seen[r] = true
			out = append(out, r)
		}
	}
	if len(out) > maxReasons {
		out = append(out[:maxReasons], fmt.Sprintf("and %d more", len(out)-maxReasons))
	}
	return strings.Join(out, "; ")
}

func findReach(cp *v1alpha1.ConnectionPolicy, class string) *v1alpha1.Reach {
	for i := range cp.Spec.Reach {
		if string(cp.Spec.Reach[i].Class) == class {
			return &cp.Spec.Reach[i]
		}
	}
	return nil
}

// mayName reports whether a rule's connection entry may name cp in a
// cluster holding the linted policies. It is ConnectionSelector.Matches,
// except that a namespace the set does not declare may carry any labels.
func (l *linter) mayName(sel *policy.ConnectionSelector, cp *v1alpha1.ConnectionPolicy) bool {
	ref := types.NamespacedName{Namespace: cp.Namespace, Name: cp.Name}
	if sel.Name.Name != "" {
		return sel.Name == ref
	}
	switch {
	case sel.NamespaceSelector == nil:
		if cp.Namespace != sel.OwnNamespace {
			return false
		}
	case !sel.NamespaceSelector.Empty():
		if _, declared := l.set.NamespaceSources[cp.Namespace]; declared && !sel.NamespaceSelector.Matches(labels.Set(l.set.Namespaces[cp.Namespace])) {
			return false
		}
	}
	return sel.PolicySelector == nil || sel.PolicySelector.Matches(labels.Set(cp.Labels))
}

// riskyLifetime mirrors the admission webhook's warning threshold
// (internal/policy): a credential that outlives a typical task is worth
// stealing.
const riskyLifetime = time.Hour

// fmtDuration writes a duration as people do: 2h, 1h30m, 90s.
func fmtDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// grants reports grants wider than they need be.
func (l *linter) grants() {
	for _, cp := range l.set.ConnectionPolicies {
		ref := connRef(cp)
		for i, r := range cp.Spec.Reach {
			if j := slices.Index(r.Scopes, "*"); j >= 0 {
				l.add(NoScopeCeiling, ref, fmt.Sprintf("spec.reach[%d].scopes[%d]", i, j),
					`scope "*" sets no scope ceiling on class %q: the connection may exercise any scope a rule grants there; list the scopes it needs`, r.Class)
			}
		}
		if d := cp.Spec.MaxTokenLifetime.Duration; d > riskyLifetime {
			l.add(LongTokenLifetime, ref, "spec.maxTokenLifetime",
				"tokens of up to %s are accepted; more than %s makes a stolen token worth more. Shorten it", fmtDuration(d), fmtDuration(riskyLifetime))
		}
		if t := cp.Spec.Token; t != nil && t.ExpirationSeconds != nil && *t.ExpirationSeconds > int64(riskyLifetime/time.Second) {
			l.add(LongTokenLifetime, ref, "spec.token.expirationSeconds",
				"issued tokens live %s; more than %s makes a stolen token worth more. Shorten it", fmtDuration(time.Duration(*t.ExpirationSeconds)*time.Second), fmtDuration(riskyLifetime))
		}
	}
	for _, rp := range l.set.ResourcePolicies {
		ref := resRef(rp)
		level := policy.ParseLevel(rp.Spec.Classification)
		for i, r := range rp.Spec.Rules {
			if r.Effect != v1alpha1.EffectAllow {
				continue
			}
			if level == policy.LevelRestricted {
				if j := slices.Index(r.Actions, "*"); j >= 0 {
					l.add(RestrictedAction, ref, fmt.Sprintf("spec.rules[%d].actions[%d]", i, j),
						`Allow rule %q allows every action ("*") on a restricted service; list the actions`, r.Name)
				}
				for j, p := range r.Resources {
					if slices.Contains(pathpattern.Split(p), "**") {
						l.add(RestrictedResource, ref, fmt.Sprintf("spec.rules[%d].resources[%d]", i, j),
							`Allow rule %q allows objects at any depth (%q) on a restricted service; name the objects, using "*" for one segment`, r.Name, p)
					}
				}
			}
			if level >= policy.LevelConfidential {
				for j, e := range r.Connections {
					if e.Name == "" {
						l.add(BroadSelector, ref, fmt.Sprintf("spec.rules[%d].connections[%d]", i, j),
							"Allow rule %q on a %s service admits connections by selector: whoever may label ConnectionPolicies (or namespaces) can join; prefer entries by name",
							r.Name, rp.Spec.Classification)
					}
				}
			}
		}
	}
}

// admissionWarnings reports the admission webhook's warnings that no
// finding above already covers (a finding on the warning's field or below
// it), so a warning added to the webhook is never lost here.
func (l *linter) admissionWarnings() {
	for _, w := range l.set.Warnings {
		covered := slices.ContainsFunc(l.out, func(f Finding) bool {
			return f.Kind == w.Kind && f.Namespace == w.Namespace && f.Name == w.Name && within(f.Field, w.Field)
		})
		if covered {
			continue
		}
		f := l.finding(AdmissionWarning, w.Location, w.Kind, w.Namespace, w.Name, w.Field, w.Message)
		if w.FieldLine > 0 {
			f.Line = w.FieldLine
		}
		l.out = append(l.out, f)
	}
}

// within reports whether field path f is p or below it.
func within(f, p string) bool {
	if !strings.HasPrefix(f, p) {
		return false
	}
	rest := f[len(p):]
	return rest == "" || rest[0] == '.' || rest[0] == '['
}
