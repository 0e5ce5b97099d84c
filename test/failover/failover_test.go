// Package failover_test kills the leader in the middle of a token rotation
// and checks that the next leader finishes it safely: two operators with
// leader election in one process, on a real API server.
package failover_test

import (
	"context"
	"fmt"
	"io"
	"os"
	"sync"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/sallyport/sallyport/api/v1alpha1"
	"github.com/sallyport/sallyport/controllers"
	"github.com/sallyport/sallyport/internal/controlplane"
	"github.com/sallyport/sallyport/internal/manager"
	"github.com/sallyport/sallyport/internal/testenv"
	"github.com/sallyport/sallyport/internal/token"
)

var (
	env       *testenv.Env
	clientset *kubernetes.Clientset
)

func TestMain(m *testing.M) {
	testenv.Main(m, controlplane.Options{}, func(e *testenv.Env) (func(), error) {
		env, clientset = e, e.Clientset
		return nil, nil
	})
}

// overlap is how long a replaced token stays valid: long enough that "not
// revoked before the overlap" is observable, short enough to wait for.
const overlap = 20 * time.Second

// recordingRequester mints real tokens and keeps them, for the leak scan.
type recordingRequester struct {
	next   token.Requester
	mu     sync.Mutex
	tokens []string
}

func (r *recordingRequester) CreateToken(ctx context.Context, ns, sa string, req *authenticationv1.TokenRequest) (*authenticationv1.TokenRequest, error) {
	out, err := r.next.CreateToken(ctx, ns, sa, req)
	if err == nil {
		r.mu.Lock()
		r.tokens = append(r.tokens, out.Status.Token)
		r.mu.Unlock()
	}
	return out, err
}

func (r *recordingRequester) all() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.tokens...)
}

// stallingRequester mints real tokens; once armed for a namespace, it mints
// the next one and then holds on to it, as a leader that dies between
// minting a token and storing it would, until its context ends.
type stallingRequester struct {
	next    token.Requester
	mu      sync.Mutex
	armed   map[string]bool
	stalled chan string
}

func (s *stallingRequester) CreateToken(ctx context.Context, ns, sa string, req *authenticationv1.TokenRequest) (*authenticationv1.TokenRequest, error) {
	out, err := s.next.CreateToken(ctx, ns, sa, req)
	s.mu.Lock()
	armed := s.armed[ns]
	delete(s.armed, ns)
	s.mu.Unlock()
	if err != nil || !armed {
		return out, err
	}
	s.stalled <- ns
	<-ctx.Done()
	return nil, ctx.Err()
}

func (s *stallingRequester) arm(ns string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.armed[ns] = true
}

// TestLeaderDiesDuringRotation: a rotation is asked for; the leader mints
// the new token and dies before storing it. The next leader finishes the
// rotation. Throughout, the token Secret never holds an expired token; the
// replaced token is not revoked before the overlap, and is revoked after
// it; the token the dead leader minted and never handed out is revoked
// too.
func TestLeaderDiesDuringRotation(t *testing.T) {
	ctx := context.Background()
	ns := env.Namespace(t, nil)
	if err := env.Client.Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "worker"}}); err != nil {
		t.Fatal(err)
	}
	leaseNS := env.Namespace(t, nil)
	minter := &recordingRequester{next: token.ClientsetRequester{Clientset: clientset}}
	var operatorLog testenv.LockedBuffer
	env.OperatorLog = io.MultiWriter(os.Stderr, &operatorLog)
	defer func() { env.OperatorLog = nil }()
	stalling := &stallingRequester{next: minter, armed: map[string]bool{}, stalled: make(chan string, 1)}
	start := func(req token.Requester) (*manager.Operator, func()) {
		op, stop, err := env.StartOperator(manager.Options{
			LeaderElect: true, LeaderElectionNamespace: leaseNS, ReplicaOfAnother: true,
			DecisionBindAddress: "0", GRPCBindAddress: "0",
			Tokens: controllers.TokenOptions{
				Schedule:  token.Config{Overlap: overlap, BackoffBase: 500 * time.Millisecond, BackoffMax: 2 * time.Second},
				Resync:    5 * time.Second,
				Requester: req,
			},
		})
		if err != nil {
			t.Fatal(err)
		}
		return op, stop
	}
	// The first operator starts alone and leads; the second waits.
	_, stopFirst := start(stalling)
	firstStopped := false
	defer func() {
		if !firstStopped {
			stopFirst()
		}
	}()
	waitLease(t, leaseNS)
	_, stopSecond := start(minter)
	defer stopSecond()

	cp := &v1alpha1.ConnectionPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "batch"},
		Spec: v1alpha1.ConnectionPolicySpec{
			ServiceAccountName: "worker",
			Reach:              []v1alpha1.Reach{{Class: "ledger", Scopes: []v1alpha1.Scope{"ledger.read"}}},
			Token:              &v1alpha1.TokenSpec{Mode: v1alpha1.TokenModeSecret},
		},
	}
	if err := env.Client.Create(ctx, cp); err != nil {
		t.Fatal(err)
	}
	first := waitToken(t, cp, func(ts *v1alpha1.TokenStatus) bool { return ts.CredentialID != "" })

	// From now on, sample the token Secret: it must never hold an expired
	// token.
	watch := watchSecret(t, ns, first.SecretName)
	defer watch.stop()

	// Ask for a rotation; the leader mints and dies before storing.
	stalling.arm(ns)
	stamp := testenv.AskRenewal(t, env.Client, cp, 30*time.Second)
	select {
	case <-stalling.stalled:
	case <-time.After(time.Minute):
		t.Fatal("the leader never started the rotation")
	}
	stopFirst()
	firstStopped = true

	// The next leader finishes it.
	rotated := waitToken(t, cp, func(ts *v1alpha1.TokenStatus) bool {
		return ts.RenewRequest == stamp && ts.CredentialID != "" && ts.CredentialID != first.CredentialID
	})
	t.Logf("Rotated from %s to %s after the leader died", first.CredentialID, rotated.CredentialID)
	if !authenticated(t, watch.current(), policyAudience(cp)) {
		t.Error("the token in the Secret after the rotation is not accepted")
	}
	// The replaced token stays valid for the overlap: its anchor is still
	// there right after the rotation.
	if !anchorExists(t, ns, first.Anchor) {
		t.Errorf("the replaced token's anchor %s is gone right after the rotation: revoked before the overlap", first.Anchor)
	}
	// After the overlap the replaced token, and the one the dead leader
	// minted and never handed out, are revoked: only the current anchor
	// remains.
	testenv.Eventually(t, overlap+time.Minute, func() error {
		names := anchorNames(t, ns, cp.UID)
		if len(names) != 1 || names[0] != rotated.Anchor {
			return fmt.Errorf("anchors %v, want only the current %s", names, rotated.Anchor)
		}
		return nil
	})
	if err := watch.stop(); err != nil {
		t.Error(err)
	}

	// No token minted in the run, the dead leader's included, appears in
	// the operators' log, an Event or a status.
	sources, err := testenv.ClusterText(ctx, env.Client)
	if err != nil {
		t.Fatal(err)
	}
	sources["operator log"] = operatorLog.String()
	if len(minter.all()) < 3 {
		t.Errorf("%d tokens minted; want the first, the dead leader's and the rotated one", len(minter.all()))
	}
	for _, leak := range testenv.Leaks(minter.all(), sources) {
		t.Error(leak)
	}
}

func policyAudience(cp *v1alpha1.ConnectionPolicy) string {
	if cp.Status.Audience != "" {
		return cp.Status.Audience
	}
	return cp.Spec.Audience
}

func waitLease(t *testing.T, ns string) {
	t.Helper()
	testenv.Eventually(t, time.Minute, func() error {
		l, err := clientset.CoordinationV1().Leases(ns).Get(context.Background(), manager.LeaderElectionID, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if l.Spec.HolderIdentity == nil || *l.Spec.HolderIdentity == "" {
			return fmt.Errorf("no holder yet")
		}
		return nil
	})
}

func waitToken(t *testing.T, cp *v1alpha1.ConnectionPolicy, ok func(*v1alpha1.TokenStatus) bool) v1alpha1.TokenStatus {
	t.Helper()
	var out v1alpha1.TokenStatus
	testenv.Eventually(t, 2*time.Minute, func() error {
		if err := env.Client.Get(context.Background(), client.ObjectKeyFromObject(cp), cp); err != nil {
			return err
		}
		if cp.Status.Token == nil || !ok(cp.Status.Token) {
			return fmt.Errorf("token status %+v", cp.Status.Token)
		}
		out = *cp.Status.Token
		return nil
	})
	return out
}

func authenticated(t *testing.T, tok, audience string) bool {
	t.Helper()
	tr, err := clientset.AuthenticationV1().TokenReviews().Create(context.Background(), &authenticationv1.TokenReview{
		Spec: authenticationv1.TokenReviewSpec{Token: tok, Audiences: []string{audience}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return tr.Status.Authenticated
}

func anchorExists(t *testing.T, ns, name string) bool {
	t.Helper()
	_, err := clientset.CoreV1().Secrets(ns).Get(context.Background(), name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return false
	}
	if err != nil {
		t.Fatal(err)
	}
	return true
}

// anchorNames lists the anchor Secrets of the policy with UID uid.
func anchorNames(t *testing.T, ns string, uid types.UID) []string {
	t.Helper()
	list, err := clientset.CoreV1().Secrets(ns).List(context.Background(), metav1.ListOptions{
		LabelSelector: v1alpha1.LabelSecretRole + "=" + v1alpha1.SecretRoleAnchor + "," + v1alpha1.LabelPolicyUID + "=" + string(uid),
	})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range list.Items {
		if s.DeletionTimestamp == nil {
			names = append(names, s.Name)
		}
	}
	return names
}

// secretWatch samples a token Secret and remembers its latest token and
// any moment it held an expired one.
type secretWatch struct {
	mu      sync.Mutex
	token   string
	problem error
	done    chan struct{}
	stopped chan struct{}
}

func watchSecret(t *testing.T, ns, name string) *secretWatch {
	t.Helper()
	w := &secretWatch{done: make(chan struct{}), stopped: make(chan struct{})}
	read := func() {
		s, err := clientset.CoreV1().Secrets(ns).Get(context.Background(), name, metav1.GetOptions{})
		w.mu.Lock()
		defer w.mu.Unlock()
		if err != nil {
			if w.problem == nil {
				w.problem = fmt.Errorf("read token Secret %s: %w", name, err)
			}
			return
		}
		w.token = string(s.Data[v1alpha1.TokenSecretKeyToken])
		exp, err := time.Parse(time.RFC3339, string(s.Data[v1alpha1.TokenSecretKeyExpiresAt]))
		switch {
		case err != nil && w.problem == nil:
			w.problem = fmt.Errorf("token Secret %s: expiry: %w", name, err)
		case err == nil && !time.Now().Before(exp) && w.problem == nil:
			w.problem = fmt.Errorf("token Secret %s held a token that expired at %s", name, exp)
		}
	}
	read()
	go func() {
		defer close(w.stopped)
		for {
			select {
			case <-w.done:
				return
			case <-time.After(50 * time.Millisecond):
				read()
			}
		}
	}()
	return w
}

func (w *secretWatch) current() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.token
}

// stop ends the sampling (once) and reports what it saw.
func (w *secretWatch) stop() error {
	select {
	case <-w.done:
	default:
		close(w.done)
	}
	<-w.stopped
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.problem
}
