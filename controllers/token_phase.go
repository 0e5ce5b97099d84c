package controllers

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/recorder"

	"github.com/sallyport/sallyport/api/v1alpha1"
	"github.com/sallyport/sallyport/internal/policy"
	"github.com/sallyport/sallyport/internal/token"
)

// The operator's own rights for tokens, cluster-wide. It holds no right to
// mint tokens and none on Secrets here: those come with the
// sallyport-token-issuer ClusterRole, which a namespace admin binds to the
// operator in the namespace (config/rbac/token_issuer_role.yaml).
//
// Adding and removing the policy's finalizer (metadata only: the operator
// never changes a policy's spec):
// +kubebuilder:rbac:groups=policy.sallyport.dev,resources=connectionpolicies,verbs=update;patch
// Owner references with blockOwnerDeletion on the Secrets it creates, where
// the OwnerReferencesPermissionEnforcement admission plugin is enabled:
// +kubebuilder:rbac:groups=policy.sallyport.dev,resources=connectionpolicies/finalizers,verbs=update

// defaultTokenResync bounds how long a Secret-mode policy goes unchecked. The
// operator does not watch Secrets (it may not list them cluster-wide), so a
// token Secret or anchor deleted by someone else is noticed within this.
const defaultTokenResync = 5 * time.Minute

// TokenOptions tune token issuance; zero values take the defaults.
type TokenOptions struct {
	// Schedule tunes renewal, overlap and backoff (see token.Config).
	Schedule token.Config
	// Resync is the longest a Secret-mode policy goes unchecked. Default 5m.
	Resync time.Duration
	// Requester mints tokens. nil: the TokenRequest API, with the manager's
	// credentials.
	Requester token.Requester
	// Clock and Rand drive the schedule; nil: the real clock and math/rand.
	Clock clock.PassiveClock
	Rand  func() float64
	// Identity names the operator in NotDelegated messages (a user name such
	// as system:serviceaccount:sallyport-system:sallyport). Empty: asked of
	// the API server with a SelfSubjectReview, once.
	Identity string
}

// TokenIssuer is the token phase of the ConnectionPolicy reconcile. In Secret
// mode it keeps a Secret with a token from the TokenRequest API, bound to an
// anchor Secret, renews it on schedule and revokes the token it replaced by
// deleting that token's anchor; in Projected mode it reports what the pod
// webhook does. It never writes a Secret it does not own, and never puts a
// token in status, Events, logs or errors.
type TokenIssuer struct {
	// client writes; Secrets are never read through the cache.
	client client.Client
	// reader reads live from the API server.
	reader    client.Reader
	requester token.Requester
	sched     *token.Scheduler
	rec       recorder.EventRecorder
	resync    time.Duration

	identity     string
	identityOnce sync.Once
	whoAmI       func(context.Context) (string, error)

	// swept holds the policies whose stray anchors were cleaned up by this
	// process.
	sweptMu sync.Mutex
	swept   map[types.UID]bool
}

// NewTokenIssuer returns the token phase. cfg is the manager's REST config
// (for the TokenRequest API and SelfSubjectReviews), c its client (writes)
// and reader its uncached reader.
func NewTokenIssuer(cfg *rest.Config, c client.Client, reader client.Reader, o TokenOptions) (*TokenIssuer, error) {
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("create the token issuer's clientset: %w", err)
	}
	req := o.Requester
	if req == nil {
		req = token.ClientsetRequester{Clientset: cs}
	}
	resync := o.Resync
	if resync <= 0 {
		resync = defaultTokenResync
	}
	return &TokenIssuer{
		client:    c,
		reader:    reader,
		requester: req,
		sched:     token.NewScheduler(o.Schedule, o.Clock, o.Rand),
		resync:    resync,
		identity:  o.Identity,
		whoAmI: func(ctx context.Context) (string, error) {
			r, err := cs.AuthenticationV1().SelfSubjectReviews().Create(ctx, &authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{})
			if err != nil {
				return "", fmt.Errorf("ask who the operator is: %w", err)
			}
			return r.Status.UserInfo.Username, nil
		},
		swept: map[types.UID]bool{},
	}, nil
}

// tokenPredicate reconciles a ConnectionPolicy when its renew annotation
// changes or its deletion starts, which change no generation.
func tokenPredicate() predicate.Predicate {
	return predicate.Funcs{
		CreateFunc:  func(event.CreateEvent) bool { return false },
		DeleteFunc:  func(event.DeleteEvent) bool { return false },
		GenericFunc: func(event.GenericEvent) bool { return false },
		UpdateFunc: func(e event.UpdateEvent) bool {
			if e.ObjectOld == nil || e.ObjectNew == nil {
				return false
			}
			return e.ObjectOld.GetAnnotations()[v1alpha1.AnnotationRenew] != e.ObjectNew.GetAnnotations()[v1alpha1.AnnotationRenew] ||
				e.ObjectOld.GetDeletionTimestamp().IsZero() != e.ObjectNew.GetDeletionTimestamp().IsZero()
		},
	}
}

func secretMode(cp *v1alpha1.ConnectionPolicy) bool {
	return cp.Spec.Token != nil && cp.Spec.Token.Mode == v1alpha1.TokenModeSecret
}

// involved says whether the phase may act on cp's Secrets.
func involved(cp *v1alpha1.ConnectionPolicy) bool {
	return secretMode(cp) || cp.Status.Token != nil || controllerutil.ContainsFinalizer(cp, v1alpha1.FinalizerTokens)
}

// tokenSecretName is spec.token.secretName or "<policy>-token".
func tokenSecretName(cp *v1alpha1.ConnectionPolicy) string {
	if cp.Spec.Token != nil && cp.Spec.Token.SecretName != "" {
		return cp.Spec.Token.SecretName
	}
	return cp.Name + "-token"
}

func serviceAccountUser(namespace, name string) string {
	return "system:serviceaccount:" + namespace + ":" + name
}

func (ti *TokenIssuer) fetch(ctx context.Context, cp *v1alpha1.ConnectionPolicy) (*v1alpha1.ConnectionPolicy, error) {
	if !involved(cp) {
		return cp, nil
	}
	// Status records which token consumers hold; a cached copy a moment old
	// would make the phase issue a second one.
	live := &v1alpha1.ConnectionPolicy{}
	if err := ti.reader.Get(ctx, client.ObjectKeyFromObject(cp), live); err != nil {
		return nil, fmt.Errorf("read ConnectionPolicy %s/%s: %w", cp.Namespace, cp.Name, err)
	}
	return live, nil
}

func (ti *TokenIssuer) forget(nn types.NamespacedName) {
	forgetTokenMetrics(nn.Namespace, nn.Name)
}

func (ti *TokenIssuer) prepare(ctx context.Context, cp *v1alpha1.ConnectionPolicy) error {
	has := controllerutil.ContainsFinalizer(cp, v1alpha1.FinalizerTokens)
	if secretMode(cp) {
		if has {
			return nil
		}
		return ti.patchFinalizer(ctx, cp, controllerutil.AddFinalizer)
	}
	if !has && cp.Status.Token == nil {
		return nil
	}
	// No longer Secret mode: revoke what it issued.
	if err := ti.release(ctx, cp, "the policy no longer asks for Secret mode"); err != nil {
		return err
	}
	if has {
		return ti.patchFinalizer(ctx, cp, controllerutil.RemoveFinalizer)
	}
	return nil
}

func (ti *TokenIssuer) finalize(ctx context.Context, cp *v1alpha1.ConnectionPolicy) error {
	if !controllerutil.ContainsFinalizer(cp, v1alpha1.FinalizerTokens) {
		return nil
	}
	if err := ti.release(ctx, cp, "the policy is being deleted"); err != nil {
		return err
	}
	forgetTokenMetrics(cp.Namespace, cp.Name)
	return ti.patchFinalizer(ctx, cp, controllerutil.RemoveFinalizer)
}

// release revokes every token cp issued and deletes its token Secrets. When
// the operator may no longer touch Secrets in the namespace (the delegation
// was withdrawn) it says so in an Event and gives up, so that deletion is
// never blocked: the garbage collector deletes the anchors through their
// owner references, and the tokens expire on their own.
func (ti *TokenIssuer) release(ctx context.Context, cp *v1alpha1.ConnectionPolicy, why string) error {
	names := []string{}
	if cp.Status.Token != nil && cp.Status.Token.SecretName != "" {
		names = append(names, cp.Status.Token.SecretName)
	}
	if n := tokenSecretName(cp); len(names) == 0 || names[0] != n {
		names = append(names, n)
	}
	n, err := ti.revokeAll(ctx, cp, names, "")
	switch {
	case apierrors.IsForbidden(err):
		ctrl.LoggerFrom(ctx).Info("Could not revoke the tokens of a policy: not delegated", "reason", why, "error", err.Error())
		ti.event(cp, corev1.EventTypeWarning, v1alpha1.ReasonNotDelegated, "RevokeToken",
			"Could not revoke the tokens this policy issued (%s): the operator may no longer delete Secrets in namespace %s. They expire on their own; a garbage collector deletes their anchors.", why, cp.Namespace)
		return nil
	case err != nil:
		return fmt.Errorf("revoke the tokens of ConnectionPolicy %s/%s: %w", cp.Namespace, cp.Name, err)
	}
	if n > 0 {
		ti.event(cp, corev1.EventTypeNormal, "TokenRevoked", "RevokeToken",
			"Revoked %d token(s) this policy issued and deleted its token Secret: %s.", n, why)
	}
	return nil
}

func (ti *TokenIssuer) patchFinalizer(ctx context.Context, cp *v1alpha1.ConnectionPolicy, change func(client.Object, string) bool) error {
	before := cp.DeepCopy()
	if !change(cp, v1alpha1.FinalizerTokens) {
		return nil
	}
	if err := ti.client.Patch(ctx, cp, client.MergeFromWithOptions(before, client.MergeFromWithOptimisticLock{})); err != nil {
		return fmt.Errorf("update the finalizers of ConnectionPolicy %s/%s: %w", cp.Namespace, cp.Name, err)
	}
	return nil
}

func (ti *TokenIssuer) run(ctx context.Context, cp *v1alpha1.ConnectionPolicy, observedGeneration int64) ctrl.Result {
	switch {
	case cp.Spec.Token == nil:
		meta.RemoveStatusCondition(&cp.Status.Conditions, v1alpha1.ConditionTokenIssued)
		cp.Status.Token = nil
		forgetTokenMetrics(cp.Namespace, cp.Name)
		return ctrl.Result{}
	case cp.Spec.Token.Mode == v1alpha1.TokenModeProjected:
		msg := projectedMessage(cp)
		// The message names the audience and lifetime; when they change,
		// pods already running keep the volume they were admitted with.
		if prev := meta.FindStatusCondition(cp.Status.Conditions, v1alpha1.ConditionTokenIssued); prev != nil &&
			prev.Reason == v1alpha1.ReasonTokenProjected && prev.Message != msg {
			ti.event(cp, corev1.EventTypeWarning, v1alpha1.ReasonProjectedTokenChanged, "Project",
				"The projected token is now for audience %q, valid %d s; pods admitted before keep the previous token until they restart",
				policy.EffectiveAudience(cp), token.ExpirationSeconds(cp.Spec.Token.ExpirationSeconds))
		}
		ti.setCondition(cp, metav1.ConditionTrue, v1alpha1.ReasonTokenProjected, msg)
		cp.Status.Token = nil
		forgetTokenMetrics(cp.Namespace, cp.Name)
		return ctrl.Result{}
	}
	return ti.runSecret(ctx, cp, cp.Generation != observedGeneration)
}

func projectedMessage(cp *v1alpha1.ConnectionPolicy) string {
	return fmt.Sprintf("Pods of ServiceAccount %s annotated %s: %s get a projected token for audience %q, valid %d s and rotated by the kubelet, at /var/run/secrets/sallyport.dev/%s/token. "+
		"Running pods keep the volume they started with: restart them after changing the audience or expirationSeconds.",
		cp.Spec.ServiceAccountName, v1alpha1.AnnotationConnections, cp.Name, policy.EffectiveAudience(cp),
		token.ExpirationSeconds(cp.Spec.Token.ExpirationSeconds), cp.Name)
}

// wanted is what the current token must be.
type wanted struct {
	secretName     string
	serviceAccount string
	subject        string
	audience       string
	requested      int64
}

func wantedFor(cp *v1alpha1.ConnectionPolicy) wanted {
	return wanted{
		secretName:     tokenSecretName(cp),
		serviceAccount: cp.Spec.ServiceAccountName,
		subject:        serviceAccountUser(cp.Namespace, cp.Spec.ServiceAccountName),
		audience:       policy.EffectiveAudience(cp),
		requested:      token.ExpirationSeconds(cp.Spec.Token.ExpirationSeconds),
	}
}

// matches says whether the held token is what w asks for.
func (w wanted) matches(h *token.Held) bool {
	return h.Subject == w.subject && len(h.Audiences) == 1 && h.Audiences[0] == w.audience && h.Requested == w.requested
}

// attempt is one failed issuance, for status, condition and Event.
type attempt struct {
	reason  string
	message string
}

// runSecret is the Secret-mode phase. State comes from live reads of the
// token Secret and the anchor, and from status; what to do from the
// scheduler.
func (ti *TokenIssuer) runSecret(ctx context.Context, cp *v1alpha1.ConnectionPolicy, specChanged bool) ctrl.Result {
	log := ctrl.LoggerFrom(ctx)
	now := ti.sched.Now()
	w := wantedFor(cp)
	ts := cp.Status.Token.DeepCopy()
	if ts == nil {
		ts = &v1alpha1.TokenStatus{}
	}
	defer func() { cp.Status.Token = ts }()

	if len(w.secretName) > 253 {
		return ti.failed(ctx, cp, ts, nil, attempt{v1alpha1.ReasonIssuanceFailed,
			fmt.Sprintf("The default token Secret name %s-token is longer than 253 characters; set spec.token.secretName.", cp.Name)})
	}
	// A renamed token Secret: the old one, and the tokens in it, go.
	if ts.SecretName != "" && ts.SecretName != w.secretName {
		if _, err := ti.revokeAll(ctx, cp, []string{ts.SecretName}, ""); err != nil {
			return ti.failed(ctx, cp, ts, nil, ti.classify(ctx, cp, err))
		}
		ti.event(cp, corev1.EventTypeNormal, "TokenRevoked", "RevokeToken",
			"Revoked the tokens of the previous token Secret %s and deleted it: spec.token.secretName changed.", ts.SecretName)
		*ts = v1alpha1.TokenStatus{Failures: ts.Failures, LastFailure: ts.LastFailure, LastFailureTime: ts.LastFailureTime, RenewRequest: ts.RenewRequest}
	}
	ts.SecretName = w.secretName

	sec, err := ti.getSecret(ctx, cp.Namespace, w.secretName)
	if err != nil {
		return ti.failed(ctx, cp, ts, nil, ti.classify(ctx, cp, fmt.Errorf("read Secret %s: %w", w.secretName, err)))
	}
	if sec != nil && !ownsSecret(cp, sec, v1alpha1.SecretRoleToken) {
		// Someone else's Secret: never touched. The tokens this policy
		// issued before are unreachable now; revoke them.
		if _, err := ti.revokeAll(ctx, cp, nil, ""); err != nil && !apierrors.IsForbidden(err) {
			log.Error(err, "Could not revoke the tokens of a policy whose Secret name is taken")
		}
		ts.Anchor, ts.PreviousAnchor, ts.RevokePreviousAt, ts.CredentialID = "", "", nil, ""
		ts.IssuedAt, ts.ExpiresAt = nil, nil
		return ti.failed(ctx, cp, ts, nil, attempt{v1alpha1.ReasonSecretConflict, fmt.Sprintf(
			"Secret %s/%s exists and is not this policy's (it lacks the %s label or this policy's controller reference): it is left untouched. Delete it, or set spec.token.secretName to a free name.",
			cp.Namespace, w.secretName, v1alpha1.LabelSecretRole)})
	}

	held := ti.inspect(ctx, sec)
	// Status and Secret disagree when a status patch was lost after a
	// rotation, or status was restored: the Secret is what consumers hold.
	if held != nil && held.Anchor != ts.Anchor {
		if ts.Anchor != "" {
			if ts.PreviousAnchor != "" && ts.PreviousAnchor != held.Anchor {
				ti.revokeAnchor(ctx, cp, ts.PreviousAnchor, "a newer token replaced it")
			}
			ts.PreviousAnchor, ts.RevokePreviousAt = ts.Anchor, timePtr(ti.sched.RevokeAt(timeOf(ts.ExpiresAt)))
		}
		adopt(ts, held)
		log.Info("Rebuilt the token schedule from the token Secret", "secret", w.secretName, "anchor", held.Anchor)
	}
	if held == nil && ts.Anchor != "" {
		// The token is gone from the Secret: nobody can use it any more.
		ti.revokeAnchor(ctx, cp, ts.Anchor, "the token Secret no longer holds its token")
		ts.Anchor, ts.CredentialID, ts.IssuedAt, ts.ExpiresAt = "", "", nil, nil
	}
	if held != nil {
		ok, err := ti.anchorExists(ctx, cp, held.Anchor)
		if err != nil {
			return ti.failed(ctx, cp, ts, held, ti.classify(ctx, cp, fmt.Errorf("read anchor Secret %s: %w", held.Anchor, err)))
		}
		if !ok {
			log.Info("The anchor of the current token is gone: the token is revoked", "anchor", held.Anchor)
			ti.event(cp, corev1.EventTypeWarning, "TokenRevoked", "RevokeToken",
				"The anchor Secret %s of the current token was deleted, which revoked the token; issuing a new one.", held.Anchor)
			held = nil
			ts.Anchor, ts.CredentialID, ts.IssuedAt, ts.ExpiresAt = "", "", nil, nil
		}
	}

	renewValue := cp.Annotations[v1alpha1.AnnotationRenew]
	st := token.State{
		RenewAt:          timeOf(ts.RenewAt),
		RenewRequested:   renewValue != "" && renewValue != ts.RenewRequest,
		SpecChanged:      specChanged,
		Failures:         ts.Failures,
		PreviousAnchor:   ts.PreviousAnchor,
		RevokePreviousAt: timeOf(ts.RevokePreviousAt),
	}
	if held != nil {
		st.Current = &held.Issued
		st.Stale = !w.matches(held)
	}
	plan := ti.sched.Plan(st)
	log.V(1).Info("Planned token work", "issue", plan.Issue, "why", plan.Why, "revokePrevious", plan.RevokePrevious, "next", plan.Next)

	if plan.RevokePrevious {
		if ti.revokeAnchor(ctx, cp, ts.PreviousAnchor, "its replacement has had time to reach consumers") {
			ts.PreviousAnchor, ts.RevokePreviousAt = "", nil
		}
	}
	if !plan.Issue {
		ts.RenewAt = timePtr(plan.RenewAt)
		if ts.Failures == 0 && held != nil {
			ti.setCondition(cp, metav1.ConditionTrue, v1alpha1.ReasonTokenIssued, issuedMessage(cp, w, ts))
		} else {
			ti.keepCondition(cp)
		}
		ti.sweepOnce(ctx, cp, ts)
		observeToken(cp, ts)
		return ti.requeue(plan.Next)
	}

	ts.RenewRequest = renewValue
	minted, err := ti.issue(ctx, cp, w, sec)
	if err != nil {
		return ti.failed(ctx, cp, ts, held, ti.classify(ctx, cp, err))
	}

	first := cp.Status.Token == nil || (cp.Status.Token.Anchor == "" && cp.Status.Token.PreviousAnchor == "")
	if held != nil {
		if ts.PreviousAnchor != "" && ts.PreviousAnchor != held.Anchor {
			// Two rotations within one overlap: the oldest goes now.
			ti.revokeAnchor(ctx, cp, ts.PreviousAnchor, "a second rotation replaced it within the overlap")
		}
		ts.PreviousAnchor = held.Anchor
		if plan.Why == token.ReasonChanged || plan.Why == token.ReasonExpired {
			// A token for what the policy no longer asks for, or an expired
			// one, gets no overlap.
			ts.RevokePreviousAt = timePtr(now)
		} else {
			ts.RevokePreviousAt = timePtr(ti.sched.RevokeAt(held.ExpiresAt))
		}
	}
	requested := w.requested
	granted := int64(minted.ExpiresAt.Sub(minted.IssuedAt) / time.Second)
	ts.Anchor, ts.CredentialID = minted.Anchor, minted.CredentialID
	ts.IssuedAt, ts.ExpiresAt = timePtr(minted.IssuedAt), timePtr(minted.ExpiresAt)
	ts.RequestedExpirationSeconds, ts.GrantedExpirationSeconds = requested, granted
	ts.RenewAt = timePtr(ti.sched.RenewAt(minted.IssuedAt, minted.ExpiresAt))
	ts.Failures, ts.LastFailure, ts.LastFailureTime = 0, "", nil

	log.Info("Issued a token", "secret", w.secretName, "anchor", minted.Anchor, "credentialID", minted.CredentialID,
		"why", plan.Why, "expiresAt", minted.ExpiresAt, "renewAt", ts.RenewAt.Time)
	if first {
		ti.event(cp, corev1.EventTypeNormal, "TokenIssued", "IssueToken",
			"Issued a token (%s) for ServiceAccount %s, audience %q, into Secret %s; it expires at %s and is renewed at %s.",
			minted.CredentialID, w.serviceAccount, w.audience, w.secretName, rfc3339(minted.ExpiresAt), rfc3339(ts.RenewAt.Time))
	} else {
		revoke := "no previous token to revoke"
		if ts.PreviousAnchor != "" {
			revoke = "the previous token is revoked at " + rfc3339(ts.RevokePreviousAt.Time)
		}
		ti.event(cp, corev1.EventTypeNormal, "TokenRotated", "RotateToken",
			"Rotated the token in Secret %s (%s): new token %s expires at %s and is renewed at %s; %s.",
			w.secretName, rotationWhy(plan.Why), minted.CredentialID, rfc3339(minted.ExpiresAt), rfc3339(ts.RenewAt.Time), revoke)
	}
	if granted < requested {
		ti.event(cp, corev1.EventTypeWarning, "LifetimeShortened", "IssueToken",
			"The API server granted %d s of the %d s requested (its --service-account-max-token-expiration, say); the token is renewed at two thirds of the granted lifetime.",
			granted, requested)
	}
	if ts.PreviousAnchor != "" && !now.Before(ts.RevokePreviousAt.Time) {
		if ti.revokeAnchor(ctx, cp, ts.PreviousAnchor, rotationWhy(plan.Why)) {
			ts.PreviousAnchor, ts.RevokePreviousAt = "", nil
		}
	}
	ti.setCondition(cp, metav1.ConditionTrue, v1alpha1.ReasonTokenIssued, issuedMessage(cp, w, ts))
	ti.sweep(ctx, cp, ts)
	observeToken(cp, ts)
	next := ts.RenewAt.Time
	if ts.RevokePreviousAt != nil && ts.RevokePreviousAt.Before(ts.RenewAt) {
		next = ts.RevokePreviousAt.Time
	}
	return ti.requeue(next)
}

func rotationWhy(r token.Reason) string {
	switch r {
	case token.ReasonRequested:
		return "renewal requested with the " + v1alpha1.AnnotationRenew + " annotation"
	case token.ReasonChanged:
		return "the policy now asks for another ServiceAccount, audience or lifetime"
	case token.ReasonExpired:
		return "the token had expired"
	case token.ReasonInitial:
		return "consumers held no token"
	case token.ReasonRetry:
		return "renewal retried after failed attempts"
	}
	return "scheduled renewal"
}

func issuedMessage(cp *v1alpha1.ConnectionPolicy, w wanted, ts *v1alpha1.TokenStatus) string {
	return fmt.Sprintf("Secret %s holds a token (%s) for ServiceAccount %s, audience %q, issued %s, expiring %s (%d s granted of %d s requested); renewal at %s.",
		w.secretName, ts.CredentialID, cp.Spec.ServiceAccountName, w.audience,
		rfc3339(ts.IssuedAt.Time), rfc3339(ts.ExpiresAt.Time), ts.GrantedExpirationSeconds, ts.RequestedExpirationSeconds, rfc3339(ts.RenewAt.Time))
}

// failed records a failed attempt: status, condition, an Event when the
// failure is new, metrics, and the retry time. A token that is still valid
// stays in the Secret.
func (ti *TokenIssuer) failed(ctx context.Context, cp *v1alpha1.ConnectionPolicy, ts *v1alpha1.TokenStatus, held *token.Held, a attempt) ctrl.Result {
	now := ti.sched.Now()
	msg := truncate(a.message, 1024)
	isNew := ts.Failures == 0 || ts.LastFailure != msg
	ts.Failures++
	ts.LastFailure, ts.LastFailureTime = msg, timePtr(now)
	var validUntil time.Time
	if held != nil {
		validUntil = held.ExpiresAt
	} else if ts.ExpiresAt != nil && ts.Anchor != "" {
		validUntil = ts.ExpiresAt.Time
	}
	retry := now.Add(ti.sched.Backoff(ts.Failures, validUntil))
	ts.RenewAt = timePtr(retry)
	tokenIssuance.WithLabelValues(resultOf(a.reason)).Inc()

	current := "No valid token is in the Secret."
	if validUntil.After(now) {
		current = "The current token stays in the Secret until it expires at " + rfc3339(validUntil) + "."
	}
	ti.setCondition(cp, metav1.ConditionFalse, a.reason, fmt.Sprintf("%s Attempt %d failed; next attempt at %s. %s",
		msg, ts.Failures, rfc3339(ts.RenewAt.Time), current))
	ctrl.LoggerFrom(ctx).Info("Token issuance failed", "reason", a.reason, "failures", ts.Failures, "retryAt", ts.RenewAt.Time, "message", msg)
	if isNew {
		ti.event(cp, corev1.EventTypeWarning, "IssuanceFailed", "IssueToken", "%s: %s %s", a.reason, msg, current)
	}
	observeToken(cp, ts)
	return ti.requeue(retry)
}

// classify turns an error into a condition reason and message.
func (ti *TokenIssuer) classify(ctx context.Context, cp *v1alpha1.ConnectionPolicy, err error) attempt {
	var conflict *secretConflictError
	switch {
	case errors.As(err, &conflict):
		return attempt{v1alpha1.ReasonSecretConflict, conflict.Error()}
	case apierrors.IsForbidden(err):
		who := ti.whoIsOperator(ctx)
		return attempt{v1alpha1.ReasonNotDelegated, fmt.Sprintf(
			"The operator (%s) may not mint tokens for ServiceAccount %s or keep Secrets in namespace %s: %v. "+
				"A namespace admin delegates Secret mode by binding the ClusterRole %s to the operator in this namespace: kubectl create rolebinding %s --namespace %s --clusterrole %s %s.",
			who, cp.Spec.ServiceAccountName, cp.Namespace, err,
			v1alpha1.TokenIssuerClusterRole, v1alpha1.TokenIssuerClusterRole, cp.Namespace, v1alpha1.TokenIssuerClusterRole, bindingSubject(who))}
	case apierrors.IsNotFound(err) && strings.Contains(err.Error(), "serviceaccounts"):
		return attempt{v1alpha1.ReasonIssuanceFailed, fmt.Sprintf("ServiceAccount %s/%s does not exist: %v.", cp.Namespace, cp.Spec.ServiceAccountName, err)}
	}
	return attempt{v1alpha1.ReasonIssuanceFailed, fmt.Sprintf("Could not issue a token: %v.", err)}
}

// whoIsOperator names the operator for NotDelegated messages.
func (ti *TokenIssuer) whoIsOperator(ctx context.Context) string {
	ti.identityOnce.Do(func() {
		if ti.identity != "" {
			return
		}
		name, err := ti.whoAmI(ctx)
		if err != nil {
			ctrl.LoggerFrom(ctx).Info("Could not learn the operator's user name", "error", err.Error())
			return
		}
		ti.identity = name
	})
	if ti.identity == "" {
		return "its ServiceAccount"
	}
	return ti.identity
}

// bindingSubject is the kubectl create rolebinding flag for a user name.
func bindingSubject(user string) string {
	if rest, ok := strings.CutPrefix(user, "system:serviceaccount:"); ok {
		return "--serviceaccount " + rest
	}
	if user == "" || user == "its ServiceAccount" {
		return "--serviceaccount <operator-namespace>:<operator-serviceaccount>"
	}
	return "--user " + user
}

// secretConflictError says the token Secret's name is taken.
type secretConflictError struct{ namespace, name string }

func (e *secretConflictError) Error() string {
	return fmt.Sprintf("Secret %s/%s was created by someone else while the operator issued a token: it is left untouched. Delete it, or set spec.token.secretName to a free name.", e.namespace, e.name)
}

// issue mints a token bound to a new anchor and writes it into the token
// Secret (existing, or a new one when nil). On failure nothing is left
// behind: the new anchor is deleted, which revokes the new token.
func (ti *TokenIssuer) issue(ctx context.Context, cp *v1alpha1.ConnectionPolicy, w wanted, existing *corev1.Secret) (*token.Minted, error) {
	start := time.Now()
	defer func() { tokenIssuanceDuration.Observe(time.Since(start).Seconds()) }()

	anchor := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{
			GenerateName: anchorPrefix(cp.Name),
			Namespace:    cp.Namespace,
			Labels:       secretLabels(cp, v1alpha1.SecretRoleAnchor),
			Annotations:  map[string]string{v1alpha1.AnnotationPolicy: cp.Name},
		},
		Type: v1alpha1.SecretTypeTokenAnchor,
	}
	if err := controllerutil.SetControllerReference(cp, anchor, ti.client.Scheme()); err != nil {
		return nil, fmt.Errorf("own the anchor Secret: %w", err)
	}
	if err := ti.client.Create(ctx, anchor); err != nil {
		return nil, fmt.Errorf("create an anchor Secret: %w", err)
	}
	tr, err := ti.requester.CreateToken(ctx, cp.Namespace, w.serviceAccount, token.NewRequest(w.audience, w.requested, anchor))
	if err != nil {
		ti.dropAnchor(ctx, anchor)
		return nil, err
	}
	minted, err := token.Describe(tr, anchor.Name, ti.sched.Now())
	if err == nil {
		err = ti.writeSecret(ctx, cp, w, existing, tr.Status.Token, minted)
	}
	if err != nil {
		ti.dropAnchor(ctx, anchor)
		return nil, err
	}
	tokenIssuance.WithLabelValues("issued").Inc()
	return minted, nil
}

// writeSecret puts the token into the token Secret, in place when it exists.
func (ti *TokenIssuer) writeSecret(ctx context.Context, cp *v1alpha1.ConnectionPolicy, w wanted, existing *corev1.Secret, tok string, m *token.Minted) error {
	annotations := map[string]string{
		v1alpha1.AnnotationPolicy:                     cp.Name,
		v1alpha1.AnnotationAnchor:                     m.Anchor,
		v1alpha1.AnnotationRequestedExpirationSeconds: strconv.FormatInt(w.requested, 10),
	}
	if existing == nil {
		s := &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{
				Name: w.secretName, Namespace: cp.Namespace,
				Labels: secretLabels(cp, v1alpha1.SecretRoleToken), Annotations: annotations,
			},
			Type: v1alpha1.SecretTypeToken,
			Data: token.SecretData(tok, m.ExpiresAt),
		}
		if err := controllerutil.SetControllerReference(cp, s, ti.client.Scheme()); err != nil {
			return fmt.Errorf("own the token Secret: %w", err)
		}
		if err := ti.client.Create(ctx, s); err != nil {
			if apierrors.IsAlreadyExists(err) {
				return &secretConflictError{cp.Namespace, w.secretName}
			}
			return fmt.Errorf("create token Secret %s: %w", w.secretName, err)
		}
		return nil
	}
	s := existing.DeepCopy()
	if s.Annotations == nil {
		s.Annotations = map[string]string{}
	}
	for k, v := range annotations {
		s.Annotations[k] = v
	}
	for k, v := range secretLabels(cp, v1alpha1.SecretRoleToken) {
		s.Labels[k] = v
	}
	s.Data = token.SecretData(tok, m.ExpiresAt)
	s.StringData = nil
	// Update carries the resourceVersion read: a concurrent change fails it
	// rather than being overwritten.
	if err := ti.client.Update(ctx, s); err != nil {
		return fmt.Errorf("update token Secret %s: %w", w.secretName, err)
	}
	return nil
}

func anchorPrefix(policyName string) string {
	const suffix = "-anchor-"
	// generateName adds 5 characters; names are at most 253.
	if limit := 253 - 5 - len(suffix); len(policyName) > limit {
		policyName = strings.TrimRight(policyName[:limit], "-.")
	}
	return policyName + suffix
}

func secretLabels(cp *v1alpha1.ConnectionPolicy, role string) map[string]string {
	return map[string]string{
		v1alpha1.LabelSecretRole:       role,
		v1alpha1.LabelPolicyUID:        string(cp.UID),
		"app.kubernetes.io/managed-by": "sallyport",
	}
}

// ownsSecret says whether s is cp's Secret of the role: labelled so, and
// controlled by cp (this very object, by UID).
func ownsSecret(cp *v1alpha1.ConnectionPolicy, s *corev1.Secret, role string) bool {
	return s.Labels[v1alpha1.LabelSecretRole] == role &&
		s.Labels[v1alpha1.LabelPolicyUID] == string(cp.UID) &&
		metav1.IsControlledBy(s, cp)
}

// getSecret reads a Secret live; nil when there is none.
func (ti *TokenIssuer) getSecret(ctx context.Context, namespace, name string) (*corev1.Secret, error) {
	s := &corev1.Secret{}
	if err := ti.reader.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, s); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, nil
		}
		return nil, err
	}
	return s, nil
}

// inspect reads the token Secret's token; nil when it holds none.
func (ti *TokenIssuer) inspect(ctx context.Context, s *corev1.Secret) *token.Held {
	if s == nil {
		return nil
	}
	h, err := token.Inspect(s)
	if err != nil {
		ctrl.LoggerFrom(ctx).Info("The token Secret holds no usable token", "secret", s.Name, "error", err.Error())
		return nil
	}
	return h
}

func (ti *TokenIssuer) anchorExists(ctx context.Context, cp *v1alpha1.ConnectionPolicy, name string) (bool, error) {
	s, err := ti.getSecret(ctx, cp.Namespace, name)
	if err != nil {
		return false, err
	}
	return s != nil && ownsSecret(cp, s, v1alpha1.SecretRoleAnchor), nil
}

// dropAnchor deletes an anchor whose token was never handed out.
func (ti *TokenIssuer) dropAnchor(ctx context.Context, anchor *corev1.Secret) {
	if err := ti.client.Delete(ctx, anchor, client.Preconditions{UID: &anchor.UID}); err != nil && !apierrors.IsNotFound(err) {
		ctrl.LoggerFrom(ctx).Error(err, "Could not delete an unused anchor Secret; a later reconcile removes it", "anchor", anchor.Name)
	}
}

// revokeAnchor deletes one of cp's anchors, which revokes the token bound to
// it, and reports it. It says whether the anchor is gone.
func (ti *TokenIssuer) revokeAnchor(ctx context.Context, cp *v1alpha1.ConnectionPolicy, name, why string) bool {
	s, err := ti.getSecret(ctx, cp.Namespace, name)
	if err == nil && s != nil {
		if !ownsSecret(cp, s, v1alpha1.SecretRoleAnchor) {
			ctrl.LoggerFrom(ctx).Info("Not deleting an anchor Secret that is not this policy's", "anchor", name)
			return true
		}
		err = ti.client.Delete(ctx, s, client.Preconditions{UID: &s.UID})
		if apierrors.IsNotFound(err) {
			err = nil
		} else if err == nil {
			tokenRevocations.Inc()
			ti.event(cp, corev1.EventTypeNormal, "TokenRevoked", "RevokeToken", "Revoked the token bound to anchor Secret %s: %s.", name, why)
		}
	}
	if err != nil {
		ctrl.LoggerFrom(ctx).Error(err, "Could not revoke a token; retrying later", "anchor", name)
		return false
	}
	return true
}

// revokeAll deletes cp's anchors except keep, which revokes their tokens,
// and the named token Secrets if they are cp's. It returns how many anchors
// it deleted.
func (ti *TokenIssuer) revokeAll(ctx context.Context, cp *v1alpha1.ConnectionPolicy, secretNames []string, keep string) (int, error) {
	anchors := &corev1.SecretList{}
	if err := ti.reader.List(ctx, anchors, client.InNamespace(cp.Namespace), client.MatchingLabels{
		v1alpha1.LabelSecretRole: v1alpha1.SecretRoleAnchor,
		v1alpha1.LabelPolicyUID:  string(cp.UID),
	}); err != nil {
		return 0, fmt.Errorf("list anchor Secrets: %w", err)
	}
	n := 0
	for i := range anchors.Items {
		s := &anchors.Items[i]
		if s.Name == keep || !ownsSecret(cp, s, v1alpha1.SecretRoleAnchor) {
			continue
		}
		if err := ti.client.Delete(ctx, s, client.Preconditions{UID: &s.UID}); err != nil && !apierrors.IsNotFound(err) {
			return n, fmt.Errorf("delete anchor Secret %s: %w", s.Name, err)
		}
		tokenRevocations.Inc()
		n++
	}
	for _, name := range secretNames {
		s, err := ti.getSecret(ctx, cp.Namespace, name)
		if err != nil {
			return n, fmt.Errorf("read Secret %s: %w", name, err)
		}
		if s == nil || !ownsSecret(cp, s, v1alpha1.SecretRoleToken) {
			continue
		}
		if err := ti.client.Delete(ctx, s, client.Preconditions{UID: &s.UID}); err != nil && !apierrors.IsNotFound(err) {
			return n, fmt.Errorf("delete token Secret %s: %w", name, err)
		}
	}
	return n, nil
}

// sweep deletes anchors of cp that status no longer names: left by an
// operator that stopped between creating an anchor and recording it. Their
// tokens never reached a consumer.
func (ti *TokenIssuer) sweep(ctx context.Context, cp *v1alpha1.ConnectionPolicy, ts *v1alpha1.TokenStatus) {
	anchors := &corev1.SecretList{}
	if err := ti.reader.List(ctx, anchors, client.InNamespace(cp.Namespace), client.MatchingLabels{
		v1alpha1.LabelSecretRole: v1alpha1.SecretRoleAnchor,
		v1alpha1.LabelPolicyUID:  string(cp.UID),
	}); err != nil {
		ctrl.LoggerFrom(ctx).Info("Could not list anchor Secrets to remove strays", "error", err.Error())
		return
	}
	for i := range anchors.Items {
		s := &anchors.Items[i]
		if s.Name == ts.Anchor || s.Name == ts.PreviousAnchor || !ownsSecret(cp, s, v1alpha1.SecretRoleAnchor) {
			continue
		}
		if err := ti.client.Delete(ctx, s, client.Preconditions{UID: &s.UID}); err != nil && !apierrors.IsNotFound(err) {
			ctrl.LoggerFrom(ctx).Error(err, "Could not delete a stray anchor Secret", "anchor", s.Name)
			continue
		}
		tokenRevocations.Inc()
		ctrl.LoggerFrom(ctx).Info("Deleted a stray anchor Secret", "anchor", s.Name)
	}
	ti.sweptMu.Lock()
	ti.swept[cp.UID] = true
	ti.sweptMu.Unlock()
}

// sweepOnce sweeps cp's stray anchors once per process.
func (ti *TokenIssuer) sweepOnce(ctx context.Context, cp *v1alpha1.ConnectionPolicy, ts *v1alpha1.TokenStatus) {
	ti.sweptMu.Lock()
	done := ti.swept[cp.UID]
	ti.sweptMu.Unlock()
	if !done {
		ti.sweep(ctx, cp, ts)
	}
}

func (ti *TokenIssuer) requeue(next time.Time) ctrl.Result {
	d := ti.resync
	if !next.IsZero() {
		d = min(d, next.Sub(ti.sched.Now()))
	}
	return ctrl.Result{RequeueAfter: max(d, time.Second)}
}

func (ti *TokenIssuer) setCondition(cp *v1alpha1.ConnectionPolicy, status metav1.ConditionStatus, reason, msg string) {
	meta.SetStatusCondition(&cp.Status.Conditions, metav1.Condition{
		Type: v1alpha1.ConditionTokenIssued, Status: status, Reason: reason,
		Message: truncate(msg, maxConditionMessage), ObservedGeneration: cp.Generation,
	})
}

// keepCondition leaves TokenIssued as the last attempt set it, for the
// current generation.
func (ti *TokenIssuer) keepCondition(cp *v1alpha1.ConnectionPolicy) {
	if c := meta.FindStatusCondition(cp.Status.Conditions, v1alpha1.ConditionTokenIssued); c != nil {
		c.ObservedGeneration = cp.Generation
		return
	}
	ti.setCondition(cp, metav1.ConditionUnknown, v1alpha1.ReasonIssuanceFailed, "No token has been issued yet.")
}

func (ti *TokenIssuer) event(cp *v1alpha1.ConnectionPolicy, eventType, reason, action, note string, args ...any) {
	if ti.rec == nil {
		return
	}
	ti.rec.Eventf(cp, nil, eventType, reason, action, "%s", truncate(fmt.Sprintf(note, args...), maxEventNote))
}

// adopt records in ts the token the Secret holds.
func adopt(ts *v1alpha1.TokenStatus, h *token.Held) {
	ts.Anchor, ts.CredentialID = h.Anchor, h.CredentialID
	ts.IssuedAt, ts.ExpiresAt = timePtr(h.IssuedAt), timePtr(h.ExpiresAt)
	ts.GrantedExpirationSeconds = int64(h.ExpiresAt.Sub(h.IssuedAt) / time.Second)
	ts.RequestedExpirationSeconds = h.Requested
	// Derived again from the token's times.
	ts.RenewAt = nil
}

// timePtr is t to the second, as status stores it.
func timePtr(t time.Time) *metav1.Time {
	if t.IsZero() {
		return nil
	}
	mt := metav1.NewTime(t.Truncate(time.Second))
	return &mt
}

func timeOf(t *metav1.Time) time.Time {
	if t == nil {
		return time.Time{}
	}
	return t.Time
}

func rfc3339(t time.Time) string { return t.UTC().Format(time.RFC3339) }
