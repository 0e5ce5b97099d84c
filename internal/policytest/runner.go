package policytest

import (
	"context"
	"fmt"
	"regexp"
	"strconv"
	"time"

	"github.com/sallyport/sallyport/internal/decision"
	"github.com/sallyport/sallyport/internal/loader"
	"github.com/sallyport/sallyport/internal/store"
)

// Options configure a Runner.
type Options struct {
	// Loader loads the suites' policies; nil means loader.New with its
	// defaults, the cluster's.
	Loader *loader.Loader
	// Run, when set, selects the cases whose "suite/case" it matches, as
	// `go test -run` selects tests.
	Run *regexp.Regexp
	// Trace records every decision's trace in its CaseResult.
	Trace bool
}

// Runner runs suites. It runs one case at a time.
type Runner struct {
	opts Options
}

// NewRunner returns a runner.
func NewRunner(o Options) (*Runner, error) {
	if o.Loader == nil {
		l, err := loader.New(loader.Options{})
		if err != nil {
			return nil, err
		}
		o.Loader = l
	}
	return &Runner{opts: o}, nil
}

// Prepared is a suite with its policies loaded into an engine.
type Prepared struct {
	Suite *Suite
	// Policies is what the loader loaded.
	Policies *loader.Set
	engine   *decision.Engine
	auth     *Authenticator
	// now is the clock of the case being decided; cases run one at a time.
	now time.Time
}

// Prepare loads a suite's policies. Its error is the loader's
// (*loader.LoadError, listing every problem with file and line) when they
// do not load: the suite cannot be run.
func (r *Runner) Prepare(ctx context.Context, s *Suite) (*Prepared, error) {
	set, err := r.opts.Loader.Load(ctx, s.Policies...)
	if err != nil {
		return nil, err
	}
	return NewPrepared(s, set.Snapshot, set), nil
}

// NewPrepared decides a suite's cases against a snapshot, with the offline
// authenticator. set may be nil.
func NewPrepared(s *Suite, snap *store.Snapshot, set *loader.Set) *Prepared {
	st := store.New()
	st.Publish(snap, true)
	p := &Prepared{Suite: s, Policies: set, auth: NewAuthenticator(false)}
	n := 0
	p.engine = decision.NewEngine(st, p.auth, decision.Options{
		Clock: func() time.Time { return p.now },
		// Deterministic, so output can be compared between runs.
		NewID: func() string { n++; return "offline-" + strconv.Itoa(n) },
	})
	return p
}

// Selected reports whether the runner's --run filter selects a case.
func (r *Runner) Selected(s *Suite, c *Case) bool {
	return r.opts.Run == nil || r.opts.Run.MatchString(s.Name+"/"+c.Name)
}

// Decide decides one case of the suite offline, returning the decision and,
// when trace is set, its trace.
func (p *Prepared) Decide(ctx context.Context, c *Case, trace bool) (*decision.Decision, *decision.Trace) {
	p.now = p.Suite.CaseNow(c)
	req := p.Suite.Request(c, p.now, p.auth)
	if trace {
		return p.engine.DecideTrace(ctx, req)
	}
	return p.engine.Decide(ctx, req), nil
}

// SuiteResult is the outcome of one suite.
type SuiteResult struct {
	Suite *Suite
	// Cases are the selected cases, in file order.
	Cases    []*CaseResult
	Duration time.Duration
}

// Counts returns how many cases passed and failed.
func (r *SuiteResult) Counts() (passed, failed int) {
	for _, c := range r.Cases {
		if c.Passed() {
			passed++
		} else {
			failed++
		}
	}
	return passed, failed
}

// CaseResult is the outcome of one case.
type CaseResult struct {
	Case     *Case
	Decision *decision.Decision
	// Trace is set when the runner traces.
	Trace      *decision.Trace
	Mismatches []Mismatch
	Duration   time.Duration
}

// Passed reports whether the decision met every expectation.
func (c *CaseResult) Passed() bool { return len(c.Mismatches) == 0 }

// Run decides every selected case of a prepared suite and compares the
// answers with the expectations.
func (r *Runner) Run(ctx context.Context, p *Prepared) *SuiteResult {
	res := &SuiteResult{Suite: p.Suite}
	start := time.Now()
	for _, c := range p.Suite.Cases {
		if !r.Selected(p.Suite, c) {
			continue
		}
		t0 := time.Now()
		d, tr := p.Decide(ctx, c, r.opts.Trace)
		res.Cases = append(res.Cases, &CaseResult{
			Case: c, Decision: d, Trace: tr,
			Mismatches: Compare(c.Expect, d),
			Duration:   time.Since(t0),
		})
	}
	res.Duration = time.Since(start)
	return res
}

// Gates a mismatch names.
const (
	GateOverall    = "overall"
	GateConnection = "connection"
	GateResource   = "resource"
)

// Mismatch is one expected field that the decision did not meet.
type Mismatch struct {
	// Gate is GateOverall, GateConnection or GateResource.
	Gate string
	// Field is allowed, reason, policy, rule or identity.
	Field     string
	Want, Got string
}

// String renders "connection gate: reason: want X, got Y".
func (m Mismatch) String() string {
	gate := m.Gate + " gate"
	if m.Gate == GateOverall {
		gate = "decision"
	}
	return fmt.Sprintf("%s: %s: want %s, got %s", gate, m.Field, m.Want, m.Got)
}

// Compare returns the expectations d does not meet, overall first, then the
// connection gate, then the resource gate.
func Compare(e Expect, d *decision.Decision) []Mismatch {
	var out []Mismatch
	boolean := func(gate, field string, want *bool, got bool) {
		if want != nil && *want != got {
			out = append(out, Mismatch{Gate: gate, Field: field, Want: strconv.FormatBool(*want), Got: strconv.FormatBool(got)})
		}
	}
	str := func(gate, field string, want *string, got string) {
		if want != nil && *want != got {
			out = append(out, Mismatch{Gate: gate, Field: field, Want: strconv.Quote(*want), Got: strconv.Quote(got)})
		}
	}
	boolean(GateOverall, "allowed", e.Allowed, d.Allowed)
	c, r := &e.Connection, &e.Resource
	boolean(GateConnection, "allowed", c.Allowed, d.Connection.Allowed)
	str(GateConnection, "reason", c.Reason, d.Connection.Reason)
	str(GateConnection, "policy", c.Policy, d.Connection.Policy)
	str(GateConnection, "identity", c.Identity, d.Connection.Identity)
	boolean(GateResource, "allowed", r.Allowed, d.Resource.Allowed)
	str(GateResource, "reason", r.Reason, d.Resource.Reason)
	str(GateResource, "policy", r.Policy, d.Resource.Policy)
	str(GateResource, "rule", r.Rule, d.Resource.Rule)
	return out
}
