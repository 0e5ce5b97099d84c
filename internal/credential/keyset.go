package credential

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// Paths the API server serves its service-account issuer discovery on.
const (
	OpenIDConfigPath = "/.well-known/openid-configuration"
	JWKSPath         = "/openid/v1/jwks"
)

// Verifier checks a token locally, without asking the API server about the
// token itself.
type Verifier interface {
	// Verify checks the token's signature against the issuer's keys, its
	// issuer, and its validity period, and returns its claims. The error
	// wraps ErrInvalid when the token is rejected and ErrReviewFailed when
	// the keys could not be had; it never quotes the token.
	Verify(ctx context.Context, token string) (*Claims, error)
}

// KeySource fetches the service-account issuer and its keys.
type KeySource interface {
	// FetchKeys returns the issuer (the iss tokens carry) and its JSON Web
	// Key Set document.
	FetchKeys(ctx context.Context) (issuer string, jwks []byte, err error)
}

// NewAPIServerKeySource returns a KeySource that reads the API server's
// service-account issuer discovery: the issuer from
// /.well-known/openid-configuration and the keys from /openid/v1/jwks, both
// on the API server itself. The keys are always fetched from the API
// server's own path rather than the discovery document's jwks_uri, which
// may point at an external copy (--service-account-jwks-uri). Kubernetes
// lets every ServiceAccount read both (ClusterRole
// system:service-account-issuer-discovery).
func NewAPIServerKeySource(cfg *rest.Config) (KeySource, error) {
	return newAPIServerKeySource(cfg)
}

func newAPIServerKeySource(cfg *rest.Config) (*apiServerKeySource, error) {
	cfg = rest.CopyConfig(cfg)
	// sallyport rate-limits its own calls; client-go's default of 5 QPS
	// would only delay a key refresh behind unrelated requests.
	cfg.QPS, cfg.Burst, cfg.RateLimiter = -1, 0, nil
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("create client for issuer discovery: %w", err)
	}
	return &apiServerKeySource{rc: cs.Discovery().RESTClient()}, nil
}

type apiServerKeySource struct {
	rc rest.Interface
}

// FetchKeys implements KeySource.
func (s *apiServerKeySource) FetchKeys(ctx context.Context) (string, []byte, error) {
	issuer, err := s.issuer(ctx)
	if err != nil {
		return "", nil, err
	}
	jwks, err := s.get(ctx, JWKSPath, "application/jwk-set+json, application/json")
	if err != nil {
		return "", nil, err
	}
	return issuer, jwks, nil
}

// issuer reads the issuer from the discovery document.
func (s *apiServerKeySource) issuer(ctx context.Context) (string, error) {
	doc, err := s.get(ctx, OpenIDConfigPath, "application/json")
	if err != nil {
		return "", err
	}
	var cfg struct {
		Issuer string `json:"issuer"`
	}
	if err := json.Unmarshal(doc, &cfg); err != nil {
		return "", fmt.Errorf("decode %s: %w", OpenIDConfigPath, err)
	}
	if cfg.Issuer == "" {
		return "", fmt.Errorf("%s names no issuer", OpenIDConfigPath)
	}
	return cfg.Issuer, nil
}

// DiscoverIssuer returns the API server's service-account issuer, as its
// discovery document names it. The API server accepts tokens for its issuer
// by default, which is why policies may not claim it as an audience.
func DiscoverIssuer(ctx context.Context, cfg *rest.Config) (string, error) {
	src, err := newAPIServerKeySource(cfg)
	if err != nil {
		return "", err
	}
	return src.issuer(ctx)
}

func (s *apiServerKeySource) get(ctx context.Context, path, accept string) ([]byte, error) {
	body, err := s.rc.Get().AbsPath(path).SetHeader("Accept", accept).Stream(ctx)
	if err != nil {
		return nil, fmt.Errorf("get %s: %w", path, err)
	}
	defer func() { _ = body.Close() }()
	b, err := io.ReadAll(io.LimitReader(body, MaxJWKSSize+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if len(b) > MaxJWKSSize {
		return nil, fmt.Errorf("%s is larger than %d bytes", path, MaxJWKSSize)
	}
	return b, nil
}

// KeySetOptions tune a KeySet. Zero values take the defaults.
type KeySetOptions struct {
	// RefreshInterval is how old the keys may get before they are fetched
	// again (on the next verification). Default 5m.
	RefreshInterval time.Duration
	// MinRefreshInterval is the least time between two fetches, however
	// many tokens name a key that is not in the set, so forged key IDs
	// cannot turn into a stream of API calls. Default 5s.
	MinRefreshInterval time.Duration
	// FetchTimeout bounds one fetch. Default 10s.
	FetchTimeout time.Duration
	// Leeway is the clock skew tolerated on nbf and iat. exp gets none: a
	// token is never accepted at or after its expiry. Default 30s.
	Leeway time.Duration
	// ExtraIssuers are issuers accepted besides the discovered one, for an
	// API server with several --service-account-issuer values (it signs
	// with the first, which discovery reports, and accepts all).
	ExtraIssuers []string
	// Now is the clock; default time.Now.
	Now func() time.Time
	// Log receives key refresh failures; default discard.
	Log logr.Logger
}

func (o *KeySetOptions) defaults() {
	if o.RefreshInterval <= 0 {
		o.RefreshInterval = 5 * time.Minute
	}
	if o.MinRefreshInterval <= 0 {
		o.MinRefreshInterval = 5 * time.Second
	}
	if o.FetchTimeout <= 0 {
		o.FetchTimeout = 10 * time.Second
	}
	if o.Leeway <= 0 {
		o.Leeway = 30 * time.Second
	}
	if o.Now == nil {
		o.Now = time.Now
	}
}

// KeySet verifies tokens against the service-account issuer's keys, which
// it fetches from a KeySource when first needed, again when they are older
// than RefreshInterval, and when a token names a key ID the set does not
// hold, never more often than MinRefreshInterval. A failed refresh keeps
// the keys it had. It is safe for concurrent use.
type KeySet struct {
	src  KeySource
	opts KeySetOptions

	keys atomic.Pointer[keyState]

	mu sync.Mutex
	// call is the fetch under way, if any.
	call        *fetchCall
	lastAttempt time.Time
	lastErr     error
}

// keyState is one fetched key set; never modified once published.
type keyState struct {
	issuer    string
	keys      []*publicKey
	byID      map[string][]*publicKey
	fetchedAt time.Time
}

var _ Verifier = (*KeySet)(nil)

// NewKeySet returns a KeySet reading keys from src. It fetches nothing
// until the first verification or Refresh.
func NewKeySet(src KeySource, opts KeySetOptions) *KeySet {
	opts.defaults()
	opts.ExtraIssuers = slices.Clone(opts.ExtraIssuers)
	return &KeySet{src: src, opts: opts}
}

// errRefreshThrottled says a refresh was skipped because the last attempt
// was less than MinRefreshInterval ago.
var errRefreshThrottled = errors.New("key refresh throttled")

// Refresh fetches the keys now, unless a fetch was attempted less than
// MinRefreshInterval ago. Its error wraps ErrReviewFailed.
func (k *KeySet) Refresh(ctx context.Context) error {
	_, err := k.refresh(ctx)
	if errors.Is(err, errRefreshThrottled) {
		return nil
	}
	return err
}

// fetchCall is one fetch of the keys, which callers wait on together.
type fetchCall struct {
	done chan struct{}
	// err is set before done is closed.
	err error
}

// startRefresh starts a fetch of the keys in the background, or returns
// the one under way. When a fetch was attempted less than
// MinRefreshInterval ago it starts none and returns nil with that attempt's
// error, or errRefreshThrottled when it succeeded.
func (k *KeySet) startRefresh(ctx context.Context) (*fetchCall, error) {
	now := k.opts.Now()
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.call != nil {
		return k.call, nil
	}
	if !k.lastAttempt.IsZero() && now.Sub(k.lastAttempt) < k.opts.MinRefreshInterval {
		if k.lastErr != nil {
			return nil, k.lastErr
		}
		return nil, errRefreshThrottled
	}
	c := &fetchCall{done: make(chan struct{})}
	k.call, k.lastAttempt = c, now
	// The fetch is shared by every caller waiting on it, and may outlive
	// the one that started it: no caller's cancellation may end it.
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), k.opts.FetchTimeout)
	go func() {
		defer cancel()
		err := k.fetch(fctx, now)
		if err != nil {
			jwksRefreshes.error.Inc()
			k.opts.Log.Error(err, "Could not fetch the service account issuer keys")
			err = fmt.Errorf("%w: service account issuer keys unavailable: %w", ErrReviewFailed, err)
		} else {
			jwksRefreshes.success.Inc()
		}
		k.mu.Lock()
		k.lastErr, k.call = err, nil
		k.mu.Unlock()
		c.err = err
		close(c.done)
	}()
	return c, nil
}

// refresh fetches the keys, or joins a fetch under way, and returns the key
// set it left (possibly the previous one, possibly nil) and the fetch's
// error: errRefreshThrottled, or the last attempt's error, when none was
// attempted.
func (k *KeySet) refresh(ctx context.Context) (*keyState, error) {
	c, err := k.startRefresh(ctx)
	if c == nil {
		return k.keys.Load(), err
	}
	select {
	case <-c.done:
		return k.keys.Load(), c.err
	case <-ctx.Done():
		return k.keys.Load(), fmt.Errorf("%w: waiting for the service account issuer keys: %w", ErrReviewFailed, ctx.Err())
	}
}

func (k *KeySet) fetch(ctx context.Context, now time.Time) error {
	issuer, doc, err := k.src.FetchKeys(ctx)
	if err != nil {
		return err
	}
	if issuer == "" {
		return errors.New("no issuer")
	}
	keys, err := parseJWKS(doc)
	if err != nil {
		return err
	}
	st := &keyState{issuer: issuer, keys: keys, byID: make(map[string][]*publicKey, len(keys)), fetchedAt: now}
	for _, key := range keys {
		st.byID[key.kid] = append(st.byID[key.kid], key)
	}
	k.keys.Store(st)
	return nil
}

// Verify implements Verifier.
func (k *KeySet) Verify(ctx context.Context, token string) (*Claims, error) {
	t, err := parseJWT(token)
	if err != nil {
		return nil, err
	}
	c := &t.claims
	alg, ok := signingAlgs[c.Algorithm]
	if !ok {
		return nil, invalid("token signing algorithm is not one of RS256, RS384, RS512, ES256, ES384, ES512")
	}

	st := k.keys.Load()
	switch {
	case st == nil:
		var rerr error
		if st, rerr = k.refresh(ctx); st == nil {
			if rerr == nil || errors.Is(rerr, errRefreshThrottled) {
				rerr = fmt.Errorf("%w: service account issuer keys unavailable", ErrReviewFailed)
			}
			return nil, rerr
		}
	case k.opts.Now().Sub(st.fetchedAt) >= k.opts.RefreshInterval:
		// Periodic refresh, in the background: this token is checked with
		// the keys at hand, and a failed refresh keeps them.
		_, _ = k.startRefresh(ctx)
	}

	candidates := st.keys
	if c.KeyID != "" {
		candidates = st.byID[c.KeyID]
		if len(candidates) == 0 {
			// A key the set does not hold: rotated in since the last
			// fetch, or made up. Refresh, at most once per
			// MinRefreshInterval whatever the tokens say.
			fresh, rerr := k.refresh(ctx)
			if fresh != nil {
				st = fresh
				candidates = st.byID[c.KeyID]
			}
			if len(candidates) == 0 {
				if rerr != nil && !errors.Is(rerr, errRefreshThrottled) {
					return nil, rerr
				}
				return nil, invalid("token is signed by a key the issuer does not have")
			}
		}
	}
	verified := false
	for _, key := range candidates {
		if key.verify(c.Algorithm, alg, t.signingInput, t.signature) {
			verified = true
			break
		}
	}
	if !verified {
		return nil, invalid("token signature does not verify with the issuer's keys")
	}

	if c.Issuer != st.issuer && !slices.Contains(k.opts.ExtraIssuers, c.Issuer) {
		return nil, invalid("token is not from the service account issuer")
	}
	if err := checkTimes(c, k.opts.Now(), k.opts.Leeway); err != nil {
		return nil, err
	}
	return c, nil
}

// checkTimes checks the token's validity period at now: exp is required and
// must be after now; iat is required and nbf optional, both may be up to
// leeway in the future.
func checkTimes(c *Claims, now time.Time, leeway time.Duration) error {
	switch {
	case c.ExpiresAt.IsZero():
		return invalid("token has no expiry")
	case c.IssuedAt.IsZero():
		return invalid("token has no issue time")
	case !now.Before(c.ExpiresAt):
		return invalid("token has expired")
	case c.IssuedAt.After(now.Add(leeway)):
		return invalid("token is issued in the future")
	case !c.NotBefore.IsZero() && c.NotBefore.After(now.Add(leeway)):
		return invalid("token is not valid yet")
	case !c.ExpiresAt.After(c.IssuedAt):
		return invalid("token expires before it is issued")
	}
	return nil
}
