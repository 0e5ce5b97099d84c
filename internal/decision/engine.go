package decision

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"

	"github.com/sallyport/sallyport/api/v1alpha1"
	"github.com/sallyport/sallyport/internal/credential"
	"github.com/sallyport/sallyport/internal/expr"
	"github.com/sallyport/sallyport/internal/policy"
	"github.com/sallyport/sallyport/internal/store"
)

// Options configure an Engine. The zero value is what the operator runs
// with.
type Options struct {
	// Clock is the server's clock, read once per decision for request.time
	// and expiry checks. Default time.Now.
	Clock func() time.Time
	// NewID returns a decision ID, unique per decision. Default
	// NewDecisionID.
	NewID func() string
	// Logger receives internal errors, such as a recovered panic. Default:
	// discard.
	Logger logr.Logger
}

// Engine decides requests against the current snapshot of a store. It is
// safe for concurrent use and takes no lock: a decision loads the snapshot
// once (one atomic load), looks policies up by index, and evaluates
// compiled policies that never change.
type Engine struct {
	store *store.Store
	auth  credential.Authenticator
	clock func() time.Time
	newID func() string
	log   logr.Logger
}

// NewEngine returns an engine that decides with the policies of s and
// authenticates credentials with auth. It panics when either is nil, a
// programming error no decision could recover from.
func NewEngine(s *store.Store, auth credential.Authenticator, o Options) *Engine {
	if s == nil || auth == nil {
		panic("decision.NewEngine: store and authenticator are required")
	}
	e := &Engine{store: s, auth: auth, clock: o.Clock, newID: o.NewID, log: o.Logger}
	if e.clock == nil {
		e.clock = time.Now
	}
	if e.newID == nil {
		e.newID = NewDecisionID
	}
	return e
}

// enforced is the enforcement mode whose policies decide; DryRun policies
// are evaluated beside them (see shadow) and never change the answer.
const enforced = v1alpha1.EnforcementEnforce

// Messages of allowed gates, constant so the allowed path does not format.
const (
	msgConnMatched         = "credential reviewed as the policy's ServiceAccount; lifetime, reach, scopes, classification and condition allow the connection"
	msgConnMatchedNoTarget = "credential reviewed as the policy's ServiceAccount; lifetime and condition allow the connection (no ResourcePolicy for the target, so no reach check)"
	msgRuleMatched         = "the rule allows the request and no Deny rule matches it"
	msgNotEvaluated        = "not evaluated: the connection was denied"
	msgMalformed           = "not evaluated: the request is malformed"
)

// evalState is the CEL activation of one decision with the variables it
// points to, pooled so a decision allocates none of it.
type evalState struct {
	act  expr.Activation
	conn expr.Connection
	req  expr.Request
	res  expr.Resource
	// segs is the canonical path split into segments, once per decision
	// rather than once per pattern.
	segs []string
	// shadow is set while the DryRun policies are evaluated: their
	// decisions do not count as uses of the rules and reach entries.
	shadow bool
	// reach is the reach entry the connection gate checked the target's
	// class against, nil before; an allowed decision marks it used.
	reach *policy.Reach
}

var statePool = sync.Pool{New: func() any { return newEvalState() }}

func newEvalState() *evalState {
	st := &evalState{segs: make([]string, 0, 16)}
	st.act = expr.Activation{Connection: &st.conn, Request: &st.req, Resource: &st.res}
	return st
}

// maxPooledSegments bounds the segment buffer a pooled state keeps, so one
// deep path does not pin a large array.
const maxPooledSegments = 256

// release clears what the state refers to of the request, so the pool does
// not keep a request's data alive, and returns it to the pool.
func (st *evalState) release() {
	st.conn, st.req, st.res, st.reach = expr.Connection{}, expr.Request{}, expr.Resource{}, nil
	if cap(st.segs) > maxPooledSegments {
		st.segs = make([]string, 0, 16)
	} else {
		clear(st.segs)
		st.segs = st.segs[:0]
	}
	statePool.Put(st)
}

// splitPath splits a canonical path into its segments, as pathpattern.Split
// does, into the state's buffer.
func (st *evalState) splitPath(path string) {
	st.segs = st.segs[:0]
	if path = path[1:]; path == "" {
		return
	}
	for {
		seg, rest, more := strings.Cut(path, "/")
		st.segs = append(st.segs, seg)
		if !more {
			return
		}
		path = rest
	}
}

// Shared empty values for absent scopes and attributes: every CEL field is
// present. CEL never modifies them.
var (
	noScopes     = []string{}
	noAttributes = map[string]string{}
)

// Decide decides a request: the connection gate, then, when the connection
// is allowed and a ResourcePolicy serves the target, the resource gate. The
// decision is allowed only when both gates allow it. See DESIGN.md, "The
// decision".
//
// Decide validates req itself (see Validate) and never evaluates a request
// that fails: it denies it with connection reason EvaluationError, naming
// the field, and resource reason NotEvaluated. Servers should call Validate
// first to answer such a request with 400 instead.
//
// Decide never panics: a panic while deciding (in an expression, or in the
// authenticator) denies the request with EvaluationError on the gate being
// decided.
func (e *Engine) Decide(ctx context.Context, req *Request) *Decision {
	return e.decide(ctx, req, nil)
}

// decide is Decide, recording a trace when tr is not nil. Every use of tr
// is behind a nil check, so Decide costs what it did before tracing.
func (e *Engine) decide(ctx context.Context, req *Request, tr *Trace) (d *Decision) {
	now := e.clock()
	d = &Decision{ID: e.newID(), Time: now}
	defer e.recoverPanic(d)

	path, host, fe := validate(req)
	if fe != nil {
		d.Connection = Connection{Reason: ReasonEvaluationError, Message: "malformed request: " + fe.Error()}
		d.Resource = Resource{Reason: ReasonNotEvaluated, Message: msgMalformed}
		if tr != nil {
			tr.Connection.Checks = []Check{{Name: CheckCredential, Detail: d.Connection.Message}}
		}
		return d
	}
	d.Path = path

	snap := e.store.Snapshot()
	target := lookupTarget(snap, enforced, &req.Target, host)

	st, ok := statePool.Get().(*evalState)
	if !ok {
		st = newEvalState()
	}
	st.setRequest(req, now)
	st.setResource(target, path)

	conn, cp, g := e.connectionGate(ctx, snap, req, target, now, st)
	d.Connection = conn
	if tr != nil {
		tr.traceTarget(req, host, path, target)
		tr.traceConnection(req, &d.Connection, cp, target, st)
	}
	d.Resource = resourceGate(snap, conn.Allowed, target, cp, nil, req, host, path, st, tr)
	d.Allowed = d.Connection.Allowed && d.Resource.Allowed
	if d.Allowed {
		// A reach entry is used when it lets through a request that is
		// allowed: one the resource then denied needed no grant.
		st.reach.Usage.Mark(now)
	}

	if snap.HasDryRun() {
		d.DryRun = e.shadow(ctx, snap, req, host, path, now, st, cp, target, g, d.Allowed)
	}

	// Only on the normal path: after a panic the state is abandoned.
	st.release()
	return d
}

// gate is what the connection gate learnt of the credential, whatever the
// policy: for the shadow decision, which may judge it against another.
type gate struct {
	// early is the answer when the gate ended before any policy applied
	// (no token, an unreadable token); nil otherwise.
	early *Connection
	aud   string
	// reviewed says whether the authenticator was asked; rev is its review
	// when it succeeded, and failed the failure when it did not.
	reviewed bool
	rev      *credential.Review
	failed   Connection
}

// shadow decides the request again with the DryRun policies of its
// audience and target in place of the enforced ones (an enforced policy
// without a DryRun counterpart stays), reusing the enforced gate's review.
// It returns nil when no DryRun policy concerns the request. It runs after
// the enforced decision (allowed) is complete and only reads it, and counts
// the shadow decision on each DryRun policy that took part.
func (e *Engine) shadow(ctx context.Context, snap *store.Snapshot, req *Request, host, path string, now time.Time, st *evalState,
	cp *policy.Connection, target *policy.Resource, g gate, allowed bool) *Shadow {
	var dryConn *policy.Connection
	if g.aud != "" {
		dryConn, _ = snap.ConnectionByAudience(v1alpha1.EnforcementDryRun, g.aud)
	}
	dryTarget := lookupTarget(snap, v1alpha1.EnforcementDryRun, &req.Target, host)
	if dryConn == nil && dryTarget == nil {
		return nil
	}
	// A DryRun ConnectionPolicy stands in for the enforced one of its
	// audience: rules that name the enforced policy still admit it, so a
	// tightened reach is judged on its own, not on its new name.
	var alias *policy.Connection
	if dryConn != nil {
		cp, alias = dryConn, cp
	}
	if dryTarget != nil {
		target = dryTarget
	}
	sh := &Shadow{}
	st.shadow = true
	defer func() { st.shadow = false }()
	st.setRequest(req, now)
	st.setResource(target, path)
	switch {
	case g.early != nil:
		sh.Connection = *g.early
	case cp == nil:
		sh.Connection = noConnectionPolicy(g.aud)
	default:
		c := Connection{Policy: policyName(&cp.Meta), Generation: cp.Generation}
		if !g.reviewed {
			// The enforced gate found no policy for the audience and made
			// no review; the DryRun policy needs one.
			g.rev, g.failed = e.review(ctx, req.Token, g.aud)
		}
		if g.rev == nil {
			c.Reason, c.Message = g.failed.Reason, g.failed.Message
			sh.Connection = c
		} else {
			sh.Connection = checkConnection(c, cp, g.rev, g.aud, target, now, st)
		}
	}
	sh.Resource = resourceGate(snap, sh.Connection.Allowed, target, cp, alias, req, host, path, st, nil)
	sh.Allowed = sh.Connection.Allowed && sh.Resource.Allowed
	if dryConn != nil {
		dryConn.Shadowed.Mark(now, allowed, sh.Allowed)
	}
	if dryTarget != nil {
		dryTarget.Shadowed.Mark(now, allowed, sh.Allowed)
	}
	return sh
}

// recoverPanic turns a panic into a denial on the gate being decided: the
// connection gate when it has no reason yet, else the resource gate.
func (e *Engine) recoverPanic(d *Decision) {
	r := recover()
	if r == nil {
		return
	}
	e.log.Error(fmt.Errorf("panic: %v", r), "Decision failed; denying", "decisionID", d.ID, "stack", string(debug.Stack()))
	d.Allowed = false
	const msg = "internal error while deciding; denied (see the operator log for this decision ID)"
	if d.Connection.Reason == "" {
		d.Connection = Connection{Reason: ReasonEvaluationError, Message: msg}
		d.Resource = Resource{Reason: ReasonNotEvaluated, Message: msgNotEvaluated}
		return
	}
	d.Resource.Allowed, d.Resource.Reason, d.Resource.Message = false, ReasonEvaluationError, msg
}

// lookupTarget finds the ResourcePolicy of a target: by namespace and
// service when the request names them, else by host (host:port first, then
// the host alone). A request that names a service is never judged by a
// host's policy: the gateway chose the service.
func lookupTarget(snap *store.Snapshot, mode v1alpha1.Enforcement, t *Target, host string) *policy.Resource {
	if t.Service != "" {
		rp, _ := snap.ResourceByService(mode, t.Namespace, t.Service)
		return rp
	}
	if host == "" {
		return nil
	}
	if rp, ok := snap.ResourceByHost(mode, host); ok {
		return rp
	}
	if h, _, ok := splitPort(host); ok {
		rp, _ := snap.ResourceByHost(mode, h)
		return rp
	}
	return nil
}

func noTargetMessage(t *Target, host string) string {
	if t.Service != "" {
		return fmt.Sprintf("no ResourcePolicy serves service %q in namespace %q", t.Service, t.Namespace)
	}
	return fmt.Sprintf("no ResourcePolicy holds host %q", host)
}

func policyName(m *policy.Meta) string {
	if m.Name != "" {
		return m.Name
	}
	return m.Ref.Namespace + "/" + m.Ref.Name
}

// setRequest fills the request variable.
func (st *evalState) setRequest(req *Request, now time.Time) {
	st.req = expr.Request{Action: req.Action, Scopes: req.Scopes, Time: now, Attributes: req.Attributes}
	if st.req.Scopes == nil {
		st.req.Scopes = noScopes
	}
	if st.req.Attributes == nil {
		st.req.Attributes = noAttributes
	}
	// Cleared until a credential is reviewed, so nothing of an earlier
	// decision is ever visible.
	st.conn = expr.Connection{}
	st.reach = nil
}

// setResource fills the resource variable; empty without a target.
func (st *evalState) setResource(rp *policy.Resource, path string) {
	if rp == nil {
		st.res = expr.Resource{Name: path}
		return
	}
	st.res = expr.Resource{
		Namespace:      rp.Ref.Namespace,
		Service:        rp.Service,
		Name:           path,
		Class:          rp.Class,
		Classification: rp.Classification.String(),
	}
}

// connectionGate decides the outer gate: the token's audience picks the
// ConnectionPolicy, the authenticator reviews the token for it, and
// checkConnection checks the review against the policy. It returns the
// policy too, for the resource gate's connection entries, and what it learnt
// of the credential, for the shadow decision.
func (e *Engine) connectionGate(ctx context.Context, snap *store.Snapshot, req *Request, target *policy.Resource, now time.Time, st *evalState) (Connection, *policy.Connection, gate) {
	if req.Token == "" {
		c := Connection{Reason: ReasonMissingCredential, Message: "no bearer token"}
		return c, nil, gate{early: &c}
	}
	aud, err := peekAudienceIn(req.Token, snap)
	if err != nil {
		c := Connection{Reason: ReasonInvalidCredential, Message: "token is " + err.Error()}
		return c, nil, gate{early: &c}
	}
	g := gate{aud: aud}
	// A token whose audience no policy holds is refused without a review:
	// it costs no API call, however many a caller sends.
	cp, ok := snap.ConnectionByAudience(enforced, aud)
	if !ok {
		return noConnectionPolicy(aud), nil, g
	}
	c := Connection{Policy: policyName(&cp.Meta), Generation: cp.Generation}
	g.reviewed = true
	g.rev, g.failed = e.review(ctx, req.Token, aud)
	if g.rev == nil {
		c.Reason, c.Message = g.failed.Reason, g.failed.Message
		return c, cp, g
	}
	return checkConnection(c, cp, g.rev, aud, target, now, st), cp, g
}

func noConnectionPolicy(aud string) Connection {
	return Connection{Reason: ReasonNoConnectionPolicy, Message: fmt.Sprintf("no ConnectionPolicy holds audience %q", aud)}
}

// review asks the authenticator about a token for an audience. It returns
// the review, or nil and the connection reason and message of the failure.
func (e *Engine) review(ctx context.Context, token, aud string) (*credential.Review, Connection) {
	rev, err := e.auth.Authenticate(ctx, token, aud)
	switch {
	case err != nil && (errors.Is(err, credential.ErrReviewFailed) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)):
		// Could not be checked: an outage, not a verdict on the credential.
		return nil, Connection{Reason: ReasonCredentialReviewFailed, Message: "credential could not be reviewed: " + errMessage(err)}
	case err != nil:
		// ErrInvalid, or an error the authenticator did not classify:
		// either way the credential is not accepted.
		return nil, Connection{Reason: ReasonInvalidCredential, Message: "credential rejected: " + errMessage(err)}
	case rev == nil:
		return nil, Connection{Reason: ReasonCredentialReviewFailed, Message: "credential could not be reviewed: the authenticator returned no review"}
	}
	return rev, Connection{}
}

// checkConnection checks a review against a ConnectionPolicy, in the order
// of DESIGN.md: audience, expiry and identity (the credential is rejected,
// InvalidCredential), lifetime, then, with a target, its class, the
// requested scopes and its classification against the reach, and last the
// policy's condition. c carries the policy's name and generation.
func checkConnection(c Connection, cp *policy.Connection, rev *credential.Review, aud string, target *policy.Resource, now time.Time, st *evalState) Connection {
	c.Identity, c.CredentialID = rev.Identity, rev.CredentialID
	if rev.Audience != "" && rev.Audience != aud {
		// The authenticator answered for another audience: a bug there
		// must not let a token through here.
		c.Reason, c.Message = ReasonInvalidCredential, fmt.Sprintf("credential was reviewed for audience %q, not %q", rev.Audience, aud)
		return c
	}
	if !rev.ExpiresAt.IsZero() && !now.Before(rev.ExpiresAt) {
		c.Reason, c.Message = ReasonInvalidCredential, "credential expired at "+rev.ExpiresAt.UTC().Format(time.RFC3339)
		return c
	}
	// A valid token for this audience held by another workload: any
	// ServiceAccount can mint a token for any audience, so this is a
	// credential the policy rejects, not a missing policy.
	if rev.Identity != cp.Identity {
		c.Reason, c.Message = ReasonInvalidCredential, fmt.Sprintf("credential identity %q is not the policy's ServiceAccount %q", rev.Identity, cp.Identity)
		return c
	}

	if rev.IssuedAt.IsZero() || rev.ExpiresAt.IsZero() {
		c.Reason, c.Message = ReasonTokenLifetimeExceeded, "token has no iat or exp, so its lifetime is unbounded; maxTokenLifetime is "+cp.MaxTokenLifetime.String()
		return c
	}
	lifetime := rev.ExpiresAt.Sub(rev.IssuedAt)
	if lifetime > cp.MaxTokenLifetime {
		c.Reason, c.Message = ReasonTokenLifetimeExceeded, fmt.Sprintf("token lifetime %s exceeds maxTokenLifetime %s", lifetime, cp.MaxTokenLifetime)
		return c
	}

	if target != nil {
		reach := cp.Reach[target.Class]
		st.reach = reach
		if reach == nil {
			c.Reason, c.Message = ReasonClassNotReachable, fmt.Sprintf("class %q of %s is not in the connection's reach", target.Class, policyName(&target.Meta))
			return c
		}
		if !reach.AllowsScopes(st.req.Scopes) {
			c.Reason, c.Message = ReasonScopeNotReachable, fmt.Sprintf("scope %q is not within the reach of class %q", firstScopeOutside(reach, st.req.Scopes), reach.Class)
			return c
		}
		if target.Classification > reach.MaxClassification {
			c.Reason, c.Message = ReasonClassificationNotReachable, fmt.Sprintf("%s is %s, above the reach's maxClassification %s",
				policyName(&target.Meta), target.Classification, reach.MaxClassification)
			return c
		}
	}

	st.conn = expr.Connection{
		Identity: rev.Identity,
		// From the policy: the identity equals the policy's, and the
		// authenticator need not split it.
		Namespace:      cp.Ref.Namespace,
		ServiceAccount: cp.ServiceAccount,
		Audience:       cp.Audience,
		Policy:         c.Policy,
		CredentialID:   rev.CredentialID,
		IssuedAt:       rev.IssuedAt,
		ExpiresAt:      rev.ExpiresAt,
		Lifetime:       lifetime,
		Age:            now.Sub(rev.IssuedAt),
		Pod:            rev.Pod,
	}
	if cp.When != nil {
		ok, err := evalWhen(cp.When, &st.act)
		switch {
		case err != nil:
			c.Reason, c.Message = ReasonEvaluationError, "condition could not be evaluated, so it denies: "+errMessage(err)
			return c
		case !ok:
			c.Reason, c.Message = ReasonConditionFalse, "condition is false: "+truncate(cp.When.Source(), maxSourceInMessage)
			return c
		}
	}
	c.Allowed, c.Reason = true, ReasonMatched
	if target != nil {
		c.Message = msgConnMatched
	} else {
		c.Message = msgConnMatchedNoTarget
	}
	return c
}

func firstScopeOutside(r *policy.Reach, scopes []string) string {
	for _, s := range scopes {
		if !r.AllowsScopes([]string{s}) {
			return s
		}
	}
	return ""
}

// resourceGate decides the inner gate after the outer one: not evaluated
// when the connection was denied, NoResourcePolicy without a target, else
// checkResource.
func resourceGate(snap *store.Snapshot, connAllowed bool, target *policy.Resource, cp, alias *policy.Connection,
	req *Request, host, path string, st *evalState, tr *Trace) Resource {
	switch {
	case !connAllowed:
		r := Resource{Reason: ReasonNotEvaluated, Message: msgNotEvaluated}
		if target != nil {
			r.Policy, r.Generation = policyName(&target.Meta), target.Generation
		}
		return r
	case target == nil:
		return Resource{Reason: ReasonNoResourcePolicy, Message: noTargetMessage(&req.Target, host)}
	}
	return checkResource(snap, target, cp, alias, req, path, st, tr)
}

// checkResource decides the inner gate: Deny rules first, then Allow rules
// in order. A Deny rule whose condition errors denies (fail closed); an
// Allow rule whose condition errors does not match, and the message names
// it if nothing else matches.
func checkResource(snap *store.Snapshot, rp *policy.Resource, cp, alias *policy.Connection, req *Request, path string, st *evalState, tr *Trace) Resource {
	r := Resource{Policy: policyName(&rp.Meta), Generation: rp.Generation}
	st.splitPath(path)
	if tr != nil {
		tr.Resource.Evaluated = true
	}
	for _, rule := range rp.Deny {
		if !ruleApplies(snap, rule, cp, alias, req, st.segs) {
			if tr != nil {
				tr.traceRule(snap, rule, cp, req, st.segs, path)
			}
			continue
		}
		if rule.When != nil {
			ok, err := evalWhen(rule.When, &st.act)
			if tr != nil {
				tr.traceWhen(rule, ok, err)
			}
			if err != nil {
				r.Rule, r.Reason = rule.Name, ReasonEvaluationError
				r.Message = fmt.Sprintf("Deny rule %q could not be evaluated, so it denies: %s", rule.Name, errMessage(err))
				return r
			}
			if !ok {
				continue
			}
		} else if tr != nil {
			tr.traceWhen(rule, true, nil)
		}
		if !st.shadow {
			rule.Usage.Mark(st.req.Time)
		}
		r.Rule, r.Reason = rule.Name, ReasonDeniedByRule
		r.Message = fmt.Sprintf("Deny rule %q matches %s %s", rule.Name, req.Action, truncate(path, maxPathInMessage))
		return r
	}

	var failed *policy.Rule
	var failure error
	for _, rule := range rp.Allow {
		if !ruleApplies(snap, rule, cp, alias, req, st.segs) {
			if tr != nil {
				tr.traceRule(snap, rule, cp, req, st.segs, path)
			}
			continue
		}
		if rule.When != nil {
			ok, err := evalWhen(rule.When, &st.act)
			if tr != nil {
				tr.traceWhen(rule, ok, err)
			}
			if err != nil {
				if failed == nil {
					failed, failure = rule, err
				}
				continue
			}
			if !ok {
				continue
			}
		} else if tr != nil {
			tr.traceWhen(rule, true, nil)
		}
		if !st.shadow {
			rule.Usage.Mark(st.req.Time)
		}
		r.Allowed, r.Rule, r.Reason, r.Message = true, rule.Name, ReasonMatched, msgRuleMatched
		return r
	}
	r.Reason = ReasonNoRuleMatched
	r.Message = fmt.Sprintf("no Allow rule matches %s %s for connection %s", req.Action, truncate(path, maxPathInMessage), policyName(&cp.Meta))
	if failed != nil {
		r.Message += fmt.Sprintf("; Allow rule %q could not be evaluated: %s", failed.Name, errMessage(failure))
	}
	return r
}

// ruleApplies reports whether a rule's action, scopes, resource patterns
// and connection entries match, cheapest first; its condition is left to
// the caller. segs is the canonical path split once: Rule.MatchesPath would
// split it again for every pattern.
func ruleApplies(snap *store.Snapshot, rule *policy.Rule, cp, alias *policy.Connection, req *Request, segs []string) bool {
	if !rule.MatchesAction(req.Action) || !rule.MatchesScopes(req.Scopes) {
		return false
	}
	matched := false
	for i := range rule.Resources {
		if rule.Resources[i].Match(segs) {
			matched = true
			break
		}
	}
	return matched && (rule.MatchesConnection(cp, snap.NamespaceLabels) || (alias != nil && rule.MatchesConnection(alias, snap.NamespaceLabels)))
}

// evalWhen evaluates a condition; a panic is an error, so it fails closed.
func evalWhen(p *expr.Program, a *expr.Activation) (ok bool, err error) {
	defer func() {
		if r := recover(); r != nil {
			ok, err = false, fmt.Errorf("evaluation panicked: %v", r)
		}
	}()
	return p.Eval(a)
}

// Bounds on what messages quote, so a decision log line stays small.
const (
	maxErrorInMessage  = 256
	maxSourceInMessage = 256
	maxPathInMessage   = 256
)

func errMessage(err error) string { return truncate(err.Error(), maxErrorInMessage) }
