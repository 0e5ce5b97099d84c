// Package token holds the rules of Secret-mode token issuance, apart from the
// API calls: when a token is renewed, how long the token it replaces stays
// valid, how failed attempts back off, and what a token Secret holds. The
// clock and the random source are injected, so the schedule is tested
// without sleeping through real lifetimes.
package token

import (
	"math/rand/v2"
	"time"

	"k8s.io/utils/clock"
)

// Lifetimes of requested tokens, in seconds.
const (
	// DefaultExpirationSeconds is requested when spec.token sets none.
	DefaultExpirationSeconds int64 = 900
	// MinExpirationSeconds is the API server's floor for TokenRequests.
	MinExpirationSeconds int64 = 600
	// legacyExpirationSeconds is the value the API server takes as a request
	// from an old kubelet and may extend to a year; it is never requested.
	legacyExpirationSeconds int64 = 3607
)

// Defaults of Config.
const (
	DefaultRenewFraction   = 2.0 / 3.0
	DefaultJitterFraction  = 0.1
	DefaultMaxJitter       = 5 * time.Minute
	DefaultOverlap         = 2 * time.Minute
	DefaultBackoffBase     = 5 * time.Second
	DefaultBackoffMax      = 5 * time.Minute
	DefaultBackoffLifetime = 0.25
	DefaultBackoffJitter   = 0.2
)

// Config tunes the schedule; zero fields take the defaults above.
type Config struct {
	// RenewFraction of the granted lifetime (expiry minus issue time) after
	// which a token is renewed. Default 2/3.
	RenewFraction float64
	// JitterFraction: the renewal comes earlier by a random amount of up to
	// this fraction of the granted lifetime, bounded by MaxJitter, so that
	// policies created together do not renew together. Default 0.1, 5m.
	JitterFraction float64
	MaxJitter      time.Duration
	// Overlap is how long the replaced token stays valid after a rotation,
	// for the kubelet to sync the Secret into volumes (up to its one-minute
	// sync period) and for clients to re-read the file; never past the
	// replaced token's own expiry. Default 2m.
	Overlap time.Duration
	// BackoffBase doubles after every consecutive failure, up to BackoffMax
	// and, while a token is still valid, up to BackoffLifetime of its
	// remaining lifetime (never below BackoffBase), so several attempts fit
	// before it expires. Each wait is shortened by a random amount of up to
	// BackoffJitter of it. Defaults 5s, 5m, 1/4, 0.2.
	BackoffBase     time.Duration
	BackoffMax      time.Duration
	BackoffLifetime float64
	BackoffJitter   float64
}

// WithDefaults returns c with its zero fields set to the defaults.
func (c Config) WithDefaults() Config {
	if c.RenewFraction <= 0 || c.RenewFraction >= 1 {
		c.RenewFraction = DefaultRenewFraction
	}
	if c.JitterFraction <= 0 {
		c.JitterFraction = DefaultJitterFraction
	}
	if c.MaxJitter <= 0 {
		c.MaxJitter = DefaultMaxJitter
	}
	if c.Overlap <= 0 {
		c.Overlap = DefaultOverlap
	}
	if c.BackoffBase <= 0 {
		c.BackoffBase = DefaultBackoffBase
	}
	if c.BackoffMax <= 0 {
		c.BackoffMax = DefaultBackoffMax
	}
	if c.BackoffMax < c.BackoffBase {
		c.BackoffMax = c.BackoffBase
	}
	if c.BackoffLifetime <= 0 || c.BackoffLifetime > 1 {
		c.BackoffLifetime = DefaultBackoffLifetime
	}
	if c.BackoffJitter <= 0 || c.BackoffJitter >= 1 {
		c.BackoffJitter = DefaultBackoffJitter
	}
	return c
}

// ExpirationSeconds is the lifetime to request for spec.token's
// expirationSeconds: the default when unset, never below the API server's
// floor, and never 3607, which the CRD refuses but which is guarded here too:
// it becomes 3600, which stays within maxTokenLifetime.
func ExpirationSeconds(spec *int64) int64 {
	if spec == nil {
		return DefaultExpirationSeconds
	}
	s := *spec
	if s < MinExpirationSeconds {
		s = MinExpirationSeconds
	}
	if s == legacyExpirationSeconds {
		s = 3600
	}
	return s
}

// Scheduler computes renewal, revocation and retry times.
type Scheduler struct {
	cfg   Config
	clock clock.PassiveClock
	rand  func() float64
}

// NewScheduler returns a scheduler reading time from clk (the real clock when
// nil) and randomness, uniform in [0, 1), from rnd (math/rand when nil).
func NewScheduler(cfg Config, clk clock.PassiveClock, rnd func() float64) *Scheduler {
	if clk == nil {
		clk = clock.RealClock{}
	}
	if rnd == nil {
		rnd = rand.Float64
	}
	return &Scheduler{cfg: cfg.WithDefaults(), clock: clk, rand: rnd}
}

// Config returns the effective configuration.
func (s *Scheduler) Config() Config { return s.cfg }

// Now returns the scheduler's current time.
func (s *Scheduler) Now() time.Time { return s.clock.Now() }

// RenewAt is when a token issued at issuedAt that expires at expiresAt (the
// granted lifetime, which may be shorter than the requested one) is renewed:
// RenewFraction into its lifetime, less a random jitter, and never so late
// that the overlap no longer fits before it expires.
func (s *Scheduler) RenewAt(issuedAt, expiresAt time.Time) time.Time {
	life := expiresAt.Sub(issuedAt)
	if life <= 0 {
		return issuedAt
	}
	jitter := time.Duration(float64(life) * s.cfg.JitterFraction)
	jitter = min(jitter, s.cfg.MaxJitter)
	at := issuedAt.Add(time.Duration(float64(life)*s.cfg.RenewFraction) - time.Duration(float64(jitter)*s.unit()))
	if latest := expiresAt.Add(-s.cfg.Overlap); at.After(latest) {
		at = latest
	}
	if !at.After(issuedAt) {
		// A lifetime shorter than the overlap: renew halfway.
		at = issuedAt.Add(life / 2)
	}
	return at.Truncate(time.Second)
}

// RevokeAt is when the anchor of a replaced token that expires at
// previousExpiresAt is deleted: Overlap from now, or at its expiry if that
// comes first. A zero previousExpiresAt means unknown: Overlap from now.
func (s *Scheduler) RevokeAt(previousExpiresAt time.Time) time.Time {
	at := s.clock.Now().Add(s.cfg.Overlap)
	if !previousExpiresAt.IsZero() && previousExpiresAt.Before(at) {
		at = previousExpiresAt
	}
	return at
}

// Backoff is the wait after the given number of consecutive failures (1 for
// the first): BackoffBase doubled per failure, capped at BackoffMax and,
// while the current token is valid (validUntil is after now), at
// BackoffLifetime of its remaining lifetime but never below BackoffBase;
// then shortened by up to BackoffJitter at random.
func (s *Scheduler) Backoff(failures int32, validUntil time.Time) time.Duration {
	if failures < 1 {
		failures = 1
	}
	limit := s.cfg.BackoffMax
	if remaining := validUntil.Sub(s.clock.Now()); !validUntil.IsZero() && remaining > 0 {
		limit = min(limit, time.Duration(float64(remaining)*s.cfg.BackoffLifetime))
	}
	limit = max(limit, s.cfg.BackoffBase)
	d := limit
	if failures <= 30 {
		d = min(limit, s.cfg.BackoffBase<<(failures-1))
	}
	d -= time.Duration(float64(d) * s.cfg.BackoffJitter * s.unit())
	return max(d, time.Second)
}

// unit is a random number in [0, 1].
func (s *Scheduler) unit() float64 {
	return min(max(s.rand(), 0), 1)
}

// Issued is a token that was handed out, identified by its anchor.
type Issued struct {
	// Anchor is the Secret the token is bound to.
	Anchor string
	// IssuedAt and ExpiresAt are the token's iat and exp.
	IssuedAt  time.Time
	ExpiresAt time.Time
}

// Reason says why a token is issued.
type Reason string

// Reasons to issue a token.
const (
	// ReasonInitial: consumers hold no token (none issued yet, or it is gone
	// from the Secret, or its anchor was deleted and it is revoked).
	ReasonInitial Reason = "Initial"
	// ReasonChanged: the token was issued for another ServiceAccount,
	// audience or lifetime than the policy now asks for.
	ReasonChanged Reason = "PolicyChanged"
	// ReasonExpired: the token has expired.
	ReasonExpired Reason = "Expired"
	// ReasonRequested: the renew annotation has a new value.
	ReasonRequested Reason = "RenewRequested"
	// ReasonScheduled: the renewal time has come.
	ReasonScheduled Reason = "Scheduled"
	// ReasonRetry: the backoff after failed attempts is over, and the token
	// is still due.
	ReasonRetry Reason = "Retry"
)

// State is what the operator knows about a policy's token when it
// reconciles: rebuilt from the policy's status and the token Secret, so a
// restarted operator continues the schedule instead of issuing anew.
type State struct {
	// Current is the token consumers hold; nil when there is none.
	Current *Issued
	// Stale says Current was issued for another ServiceAccount, audience or
	// requested lifetime than the policy asks for now.
	Stale bool
	// RenewAt is the recorded time of the next attempt (status.token.renewAt):
	// the renewal time, or after failures the retry time. When zero it is
	// derived from Current.
	RenewAt time.Time
	// RenewRequested says the renew annotation holds a value not acted on.
	RenewRequested bool
	// SpecChanged says the policy changed since it was last reconciled; like
	// RenewRequested it cuts a backoff short.
	SpecChanged bool
	// Failures counts consecutive failed attempts.
	Failures int32
	// PreviousAnchor is the anchor of the replaced token, to be deleted at
	// RevokePreviousAt.
	PreviousAnchor   string
	RevokePreviousAt time.Time
}

// Plan is what to do now.
type Plan struct {
	// Issue says to request a new token now, and Why.
	Issue bool
	Why   Reason
	// RevokePrevious says the replaced token's overlap is over: delete its
	// anchor.
	RevokePrevious bool
	// RenewAt is the renewal (or retry) time to record when nothing is
	// issued now.
	RenewAt time.Time
	// Next is when to reconcile again for what is planned; zero when
	// nothing is scheduled (a token is issued now, and then its own
	// schedule applies).
	Next time.Time
}

// Plan decides what to do about st now. A token is issued when consumers
// hold none, when it is stale, expired or due, or on request; after failures
// only once the backoff (recorded in RenewAt) is over, unless the renew
// annotation or the policy changed.
func (s *Scheduler) Plan(st State) Plan {
	now := s.clock.Now()
	var p Plan
	if st.PreviousAnchor != "" {
		if !now.Before(st.RevokePreviousAt) {
			p.RevokePrevious = true
		} else {
			p.Next = st.RevokePreviousAt
		}
	}
	p.RenewAt = st.RenewAt
	if p.RenewAt.IsZero() && st.Current != nil {
		p.RenewAt = s.RenewAt(st.Current.IssuedAt, st.Current.ExpiresAt)
	}

	var why Reason
	switch {
	case st.Current == nil:
		why = ReasonInitial
	case st.Stale:
		why = ReasonChanged
	case !now.Before(st.Current.ExpiresAt):
		why = ReasonExpired
	case st.RenewRequested:
		why = ReasonRequested
	case !now.Before(p.RenewAt):
		why = ReasonScheduled
	}
	if why == "" {
		p.Next = earliest(p.Next, p.RenewAt)
		return p
	}
	if st.Failures > 0 && !st.RenewRequested && !st.SpecChanged && now.Before(p.RenewAt) {
		// Backing off.
		p.Next = earliest(p.Next, p.RenewAt)
		return p
	}
	if st.Failures > 0 && why == ReasonScheduled {
		why = ReasonRetry
	}
	p.Issue, p.Why = true, why
	return p
}

// earliest is the earlier of two times, ignoring zero ones.
func earliest(a, b time.Time) time.Time {
	switch {
	case a.IsZero():
		return b
	case b.IsZero() || a.Before(b):
		return a
	}
	return b
}
