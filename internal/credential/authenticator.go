package credential

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/go-logr/logr"
	"golang.org/x/sync/singleflight"
	"golang.org/x/time/rate"
	"k8s.io/client-go/rest"
)

// Defaults of Options.
const (
	DefaultCacheTTL                = 10 * time.Second
	DefaultNegativeCacheTTL        = 2 * time.Second
	DefaultMaxCacheEntries         = 100_000
	DefaultMaxNegativeCacheEntries = 10_000
	DefaultReviewQPS               = 50
	DefaultReviewBurst             = 100
	DefaultReviewTimeout           = 10 * time.Second
)

// Options tune a CachingAuthenticator. Zero values take the defaults.
type Options struct {
	// CacheTTL bounds how long an authenticated review is reused; it is
	// never reused at or past the token's exp either. Default 10s; negative
	// disables the cache.
	CacheTTL time.Duration
	// NegativeCacheTTL is how long a rejection (ErrInvalid) is reused.
	// Failed reviews (ErrReviewFailed) are never cached. Default 2s;
	// negative disables the negative cache.
	NegativeCacheTTL time.Duration
	// MaxCacheEntries and MaxNegativeCacheEntries bound the two caches.
	// Rejections have their own, smaller bound so that a flood of bad
	// tokens cannot push good reviews out. Defaults 100000 and 10000.
	MaxCacheEntries         int
	MaxNegativeCacheEntries int
	// ReviewQPS and ReviewBurst are the token bucket every TokenReview
	// draws from; a review the bucket cannot admit before its deadline
	// fails with ErrReviewFailed. Cache hits and tokens rejected locally
	// draw nothing. Defaults 50 and 100; a negative ReviewQPS lifts the
	// limit.
	ReviewQPS   float64
	ReviewBurst int
	// ReviewTimeout bounds one review (key refresh, rate-limit wait and
	// TokenReview), on top of the caller's deadline. Default 10s.
	ReviewTimeout time.Duration
	// KeySet tunes the KeySet NewCachingAuthenticator builds; its Now and
	// Log default to the ones here.
	KeySet KeySetOptions
	// Now is the clock; default time.Now.
	Now func() time.Time
	// Log receives what an operator should know about; default discard.
	// Tokens are never logged.
	Log logr.Logger
}

func (o *Options) defaults() {
	if o.CacheTTL == 0 {
		o.CacheTTL = DefaultCacheTTL
	}
	if o.NegativeCacheTTL == 0 {
		o.NegativeCacheTTL = DefaultNegativeCacheTTL
	}
	if o.MaxCacheEntries <= 0 {
		o.MaxCacheEntries = DefaultMaxCacheEntries
	}
	if o.MaxNegativeCacheEntries <= 0 {
		o.MaxNegativeCacheEntries = DefaultMaxNegativeCacheEntries
	}
	if o.ReviewQPS == 0 {
		o.ReviewQPS = DefaultReviewQPS
	}
	if o.ReviewBurst <= 0 {
		o.ReviewBurst = DefaultReviewBurst
	}
	if o.ReviewTimeout <= 0 {
		o.ReviewTimeout = DefaultReviewTimeout
	}
	if o.Now == nil {
		o.Now = time.Now
	}
}

// CachingAuthenticator authenticates service-account tokens for an
// audience: the token must carry exactly that one audience and verify
// locally (signature against the issuer's keys, issuer, validity period),
// so that a forged token never costs an API call; then a TokenReview for
// the audience decides. Outcomes are cached under the SHA-256 of token and
// audience: a review for at most CacheTTL and never past the token's exp,
// re-checked on every hit; a rejection for NegativeCacheTTL. Identical
// concurrent authentications share one review, and reviews are
// rate-limited. It is safe for concurrent use.
type CachingAuthenticator struct {
	verifier Verifier
	reviewer TokenReviewer
	opts     Options
	// pos and neg are nil when disabled.
	pos, neg *cache
	limiter  *rate.Limiter
	sf       singleflight.Group
}

var _ Authenticator = (*CachingAuthenticator)(nil)

// NewCachingAuthenticator returns a CachingAuthenticator that verifies
// tokens against the service-account issuer keys of the API server cfg
// points at, and reviews them there. cfg needs create on tokenreviews and
// get on the non-resource URLs /.well-known/openid-configuration and
// /openid/v1/jwks (granted to every ServiceAccount by default). Nothing is
// fetched until the first token arrives.
func NewCachingAuthenticator(cfg *rest.Config, opts Options) (*CachingAuthenticator, error) {
	src, err := NewAPIServerKeySource(cfg)
	if err != nil {
		return nil, err
	}
	reviewer, err := NewTokenReviewer(cfg)
	if err != nil {
		return nil, err
	}
	ks := opts.KeySet
	if ks.Now == nil {
		ks.Now = opts.Now
	}
	if ks.Log.GetSink() == nil {
		ks.Log = opts.Log
	}
	return NewCachingAuthenticatorWith(NewKeySet(src, ks), reviewer, opts), nil
}

// NewCachingAuthenticatorWith returns a CachingAuthenticator built on
// verifier and reviewer; opts.KeySet is not used.
func NewCachingAuthenticatorWith(verifier Verifier, reviewer TokenReviewer, opts Options) *CachingAuthenticator {
	opts.defaults()
	a := &CachingAuthenticator{verifier: verifier, reviewer: reviewer, opts: opts}
	if opts.CacheTTL > 0 {
		a.pos = newCache(opts.MaxCacheEntries)
	}
	if opts.NegativeCacheTTL > 0 {
		a.neg = newCache(opts.MaxNegativeCacheEntries)
	}
	limit := rate.Limit(opts.ReviewQPS)
	if opts.ReviewQPS < 0 {
		limit = rate.Inf
	}
	a.limiter = rate.NewLimiter(limit, opts.ReviewBurst)
	return a
}

// Authenticate implements Authenticator. The Review returned is the
// caller's own copy.
func (a *CachingAuthenticator) Authenticate(ctx context.Context, token, audience string) (*Review, error) {
	if token == "" {
		return nil, invalid("no token")
	}
	if audience == "" {
		return nil, invalid("no audience to authenticate the token for")
	}
	if len(token) > MaxTokenSize {
		tokenVerifications.invalid.Inc()
		return nil, invalid("token is larger than %d bytes", MaxTokenSize)
	}
	key := keyFor(token, audience)
	if r, ok, err := a.lookup(&key); ok {
		if err != nil {
			credentialCache.negativeHit.Inc()
			return nil, err
		}
		credentialCache.hit.Inc()
		return r, nil
	}
	credentialCache.miss.Inc()

	shared := key // only a miss moves the key to the heap, for the flight
	ch := a.sf.DoChan(string(key[:]), func() (any, error) {
		return a.authenticate(ctx, token, audience, &shared)
	})
	select {
	case res := <-ch:
		if res.Err != nil {
			return nil, res.Err
		}
		shared, ok := res.Val.(*Review)
		if !ok || shared == nil {
			return nil, fmt.Errorf("%w: no review", ErrReviewFailed)
		}
		r := *shared
		return &r, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("%w: %w", ErrReviewFailed, ctx.Err())
	}
}

// lookup returns the cached outcome for key: a copy of the review, or the
// rejection; ok is false when nothing current is cached.
func (a *CachingAuthenticator) lookup(key *cacheKey) (r *Review, ok bool, err error) {
	now := a.opts.Now()
	if a.pos != nil {
		if e, found := a.pos.get(key); found && now.Before(e.expires) && now.Before(e.review.ExpiresAt) {
			c := *e.review
			return &c, true, nil
		}
	}
	if a.neg != nil {
		if e, found := a.neg.get(key); found && now.Before(e.expires) {
			return nil, true, e.err
		}
	}
	return nil, false, nil
}

// authenticate is one shared review of token for audience. It runs for
// every caller waiting on it, so the first caller's cancellation does not
// end it; its deadline (and ReviewTimeout) does.
func (a *CachingAuthenticator) authenticate(ctx context.Context, token, audience string, key *cacheKey) (*Review, error) {
	// A review of this key may have ended between the caller's lookup and
	// this flight.
	if r, ok, err := a.lookup(key); ok {
		return r, err
	}

	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), a.opts.ReviewTimeout)
	defer cancel()
	if deadline, ok := ctx.Deadline(); ok {
		var cancelDeadline context.CancelFunc
		fctx, cancelDeadline = context.WithDeadline(fctx, deadline)
		defer cancelDeadline()
	}

	claims, err := a.verifier.Verify(fctx, token)
	if err != nil {
		if errors.Is(err, ErrInvalid) {
			tokenVerifications.invalid.Inc()
			a.reject(key, err)
			return nil, err
		}
		tokenVerifications.error.Inc()
		if !errors.Is(err, ErrReviewFailed) {
			err = fmt.Errorf("%w: %w", ErrReviewFailed, redact(err, token))
		}
		return nil, err
	}
	if len(claims.Audiences) != 1 || claims.Audiences[0] != audience {
		tokenVerifications.invalid.Inc()
		err := invalid("token does not carry exactly the one audience it is presented for")
		a.reject(key, err)
		return nil, err
	}
	tokenVerifications.valid.Inc()

	if err := a.wait(fctx); err != nil {
		tokenReviews.throttled.Inc()
		return nil, fmt.Errorf("%w: token review rate limit: %w", ErrReviewFailed, err)
	}
	status, err := a.reviewer.Review(fctx, token, audience)
	if err == nil && status == nil {
		err = errors.New("no status")
	}
	if err != nil {
		tokenReviews.error.Inc()
		return nil, fmt.Errorf("%w: token review: %w", ErrReviewFailed, redact(err, token))
	}
	r, err := reviewFromStatus(status, audience, claims)
	if err != nil {
		tokenReviews.rejected.Inc()
		a.reject(key, err)
		return nil, err
	}
	tokenReviews.authenticated.Inc()
	if a.pos != nil {
		now := a.opts.Now()
		expires := now.Add(a.opts.CacheTTL)
		if r.ExpiresAt.Before(expires) {
			expires = r.ExpiresAt
		}
		a.pos.put(key, entry{review: r, expires: expires}, now)
	}
	return r, nil
}

// errWouldExceedDeadline says the rate limiter could not admit a review
// before the review's deadline.
var errWouldExceedDeadline = errors.New("no review admitted before the deadline")

// wait waits until the rate limiter admits one review, or fails at once
// when that would be after ctx's deadline.
func (a *CachingAuthenticator) wait(ctx context.Context) error {
	now := a.opts.Now()
	res := a.limiter.ReserveN(now, 1)
	if !res.OK() {
		return errWouldExceedDeadline
	}
	delay := res.DelayFrom(now)
	if delay <= 0 {
		return nil
	}
	if deadline, ok := ctx.Deadline(); ok && time.Until(deadline) < delay {
		res.CancelAt(now)
		return errWouldExceedDeadline
	}
	t := time.NewTimer(delay)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		res.CancelAt(a.opts.Now())
		return ctx.Err()
	}
}

// reject caches a rejection.
func (a *CachingAuthenticator) reject(key *cacheKey, err error) {
	if a.neg == nil {
		return
	}
	now := a.opts.Now()
	a.neg.put(key, entry{err: err, expires: now.Add(a.opts.NegativeCacheTTL)}, now)
}
