package podtoken_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/sallyport/sallyport/api/v1alpha1"
	"github.com/sallyport/sallyport/webhook"
)

// The tests of this package do not run in parallel: they count the pod
// token webhook's calls on the process-wide metrics registry.

const policyName = "billing-to-ledger"

// projectedPolicy creates a Projected-mode ConnectionPolicy through the API
// server, where the validating webhook compiles it.
func projectedPolicy(t *testing.T, ns, name, sa string, edit func(*v1alpha1.ConnectionPolicySpec)) *v1alpha1.ConnectionPolicy {
	t.Helper()
	cp := &v1alpha1.ConnectionPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: v1alpha1.ConnectionPolicySpec{
			ServiceAccountName: sa,
			Reach:              []v1alpha1.Reach{{Class: "ledger", Scopes: []v1alpha1.Scope{"ledger.read"}}},
			Token:              &v1alpha1.TokenSpec{Mode: v1alpha1.TokenModeProjected, ExpirationSeconds: ptr.To[int64](1200)},
		},
	}
	if edit != nil {
		edit(&cp.Spec)
	}
	if err := env.Client.Create(context.Background(), cp); err != nil {
		t.Fatalf("create ConnectionPolicy %s: %v", name, err)
	}
	return cp
}

func pod(ns, name, sa string, annotations map[string]string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Annotations: annotations},
		Spec: corev1.PodSpec{
			ServiceAccountName: sa,
			InitContainers:     []corev1.Container{{Name: "migrate", Image: "registry.example/migrate:1"}},
			Containers: []corev1.Container{
				{Name: "app", Image: "registry.example/app:1"},
				{Name: "proxy", Image: "registry.example/proxy:1"},
			},
		},
	}
}

func connections(v string) map[string]string {
	return map[string]string{v1alpha1.AnnotationConnections: v}
}

// webhookCalls is how many pods the pod token webhook has answered so far,
// by result.
func webhookCalls(t *testing.T) map[string]float64 {
	t.Helper()
	families, err := ctrlmetrics.Registry.Gather()
	if err != nil {
		t.Fatalf("gather metrics: %v", err)
	}
	out := map[string]float64{}
	for _, f := range families {
		if f.GetName() != "sallyport_pod_token_injections_total" {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "result" {
					out[l.GetValue()] = m.GetCounter().GetValue()
				}
			}
		}
	}
	if len(out) == 0 {
		t.Fatal("no sallyport_pod_token_injections_total in the registry")
	}
	return out
}

func total(calls map[string]float64) float64 {
	var n float64
	for _, v := range calls {
		n += v
	}
	return n
}

func tokenVolume(t *testing.T, p *corev1.Pod, policy string) corev1.Volume {
	t.Helper()
	for _, v := range p.Spec.Volumes {
		if v.Name == webhook.PodTokenVolumeName(policy) {
			return v
		}
	}
	t.Fatalf("pod %s has no volume for %s; volumes: %+v", p.Name, policy, p.Spec.Volumes)
	return corev1.Volume{}
}

// requireTokenMounted checks that every container and init container of p
// mounts policy's token read-only at its path.
func requireTokenMounted(t *testing.T, p *corev1.Pod, policy string) {
	t.Helper()
	want := corev1.VolumeMount{Name: webhook.PodTokenVolumeName(policy), MountPath: "/var/run/secrets/sallyport.dev/" + policy, ReadOnly: true}
	for _, c := range append(append([]corev1.Container(nil), p.Spec.InitContainers...), p.Spec.Containers...) {
		found := false
		for _, m := range c.VolumeMounts {
			if m.MountPath == want.MountPath {
				found = true
				if !equality.Semantic.DeepEqual(m, want) {
					t.Errorf("container %s mounts %+v, want %+v", c.Name, m, want)
				}
			}
		}
		if !found {
			t.Errorf("container %s does not mount %s; mounts: %+v", c.Name, want.MountPath, c.VolumeMounts)
		}
	}
}

// requireDenied checks that err is the pod token webhook's refusal and that
// its message holds every want.
func requireDenied(t *testing.T, err error, want ...string) {
	t.Helper()
	if !apierrors.IsForbidden(err) {
		t.Fatalf("got %v, want Forbidden", err)
	}
	msg := err.Error()
	for _, w := range append([]string{`admission webhook "mpodtoken.sallyport.dev" denied the request`}, want...) {
		if !strings.Contains(msg, w) {
			t.Errorf("error does not contain %q:\n%s", w, msg)
		}
	}
}

func TestAnnotatedPodGetsProjectedToken(t *testing.T) {
	ctx := context.Background()
	ns := env.Namespace(t, nil)
	// The policy is used at once: the webhook must not deny the pod while
	// its cache catches up.
	projectedPolicy(t, ns, policyName, "worker", nil)
	projectedPolicy(t, ns, "billing-to-audit", "worker", func(s *v1alpha1.ConnectionPolicySpec) {
		s.Audience = "https://audit.example"
		s.Token.ExpirationSeconds = nil // the default, 900
	})
	before := webhookCalls(t)

	p := pod(ns, "worker-0", "worker", connections(policyName+", billing-to-audit"))
	if err := env.Client.Create(ctx, p); err != nil {
		t.Fatalf("create pod: %v", err)
	}
	stored := &corev1.Pod{}
	if err := env.Client.Get(ctx, client.ObjectKeyFromObject(p), stored); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		policy, audience string
		lifetime         int64
	}{
		{policyName, fmt.Sprintf("sallyport.dev/%s/%s", ns, policyName), 1200},
		{"billing-to-audit", "https://audit.example", 900},
	} {
		v := tokenVolume(t, stored, tc.policy)
		if v.Projected == nil || len(v.Projected.Sources) != 1 || v.Projected.Sources[0].ServiceAccountToken == nil {
			t.Fatalf("volume %s is not a projected token: %+v", v.Name, v)
		}
		src := v.Projected.Sources[0].ServiceAccountToken
		if src.Audience != tc.audience || src.ExpirationSeconds == nil || *src.ExpirationSeconds != tc.lifetime || src.Path != "token" {
			t.Errorf("%s: token source {audience %q, expirationSeconds %v, path %q}, want {%q, %d, \"token\"}",
				tc.policy, src.Audience, ptr.Deref(src.ExpirationSeconds, 0), src.Path, tc.audience, tc.lifetime)
		}
		requireTokenMounted(t, stored, tc.policy)
	}

	after := webhookCalls(t)
	if d := after["injected"] - before["injected"]; d != 1 {
		t.Errorf("injected += %v, want 1", d)
	}
}

func TestSamePodAdmittedTwiceIsUnchanged(t *testing.T) {
	ctx := context.Background()
	ns := env.Namespace(t, nil)
	projectedPolicy(t, ns, policyName, "worker", nil)
	first := pod(ns, "worker-0", "worker", connections(policyName))
	if err := env.Client.Create(ctx, first); err != nil {
		t.Fatalf("create pod: %v", err)
	}
	tokenVolume(t, first, policyName)

	// The admitted pod, submitted again under a new name: what a
	// reinvocation, or a pod spec copied from a running pod, looks like.
	again := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "worker-1", Annotations: first.Annotations},
		Spec:       *first.Spec.DeepCopy(),
	}
	before := webhookCalls(t)
	if err := env.Client.Create(ctx, again, client.DryRunAll); err != nil {
		t.Fatalf("dry-run create of the admitted pod: %v", err)
	}
	after := webhookCalls(t)
	if !equality.Semantic.DeepEqual(again.Spec, first.Spec) {
		t.Errorf("the second admission changed the pod spec:\nfirst  %+v\nsecond %+v", first.Spec, again.Spec)
	}
	if d := after["unchanged"] - before["unchanged"]; d != 1 {
		t.Errorf("unchanged += %v, want 1 (calls before %v, after %v)", d, before, after)
	}
	if d := after["injected"] - before["injected"]; d != 0 {
		t.Errorf("injected += %v, want 0", d)
	}
}

func TestMismatchedServiceAccountIsRejected(t *testing.T) {
	ctx := context.Background()
	ns := env.Namespace(t, nil)
	projectedPolicy(t, ns, policyName, "worker", nil)

	err := env.Client.Create(ctx, pod(ns, "intruder-0", "intruder", connections(policyName)))
	requireDenied(t, err,
		"sallyport.dev/connections",
		fmt.Sprintf("ConnectionPolicy %s/%s", ns, policyName),
		`is for ServiceAccount "worker"`,
		`the pod runs as ServiceAccount "intruder"`,
	)

	// No serviceAccountName: the pod runs as "default".
	err = env.Client.Create(ctx, pod(ns, "intruder-1", "", connections(policyName)))
	requireDenied(t, err, `the pod runs as ServiceAccount "default"`)

	if err := env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "intruder-0"}, &corev1.Pod{}); !apierrors.IsNotFound(err) {
		t.Errorf("the rejected pod exists: %v", err)
	}
}

func TestPolicyMissingOrNotProjectedIsRejected(t *testing.T) {
	ctx := context.Background()
	ns := env.Namespace(t, nil)
	projectedPolicy(t, ns, "billing-to-cache", "worker", func(s *v1alpha1.ConnectionPolicySpec) { s.Token = nil })

	err := env.Client.Create(ctx, pod(ns, "worker-0", "worker", connections("billing-to-nowhere")))
	requireDenied(t, err, fmt.Sprintf("ConnectionPolicy %s/billing-to-nowhere does not exist", ns))

	err = env.Client.Create(ctx, pod(ns, "worker-1", "worker", connections("billing-to-cache")))
	requireDenied(t, err, fmt.Sprintf("ConnectionPolicy %s/billing-to-cache is not in Projected mode", ns))

	err = env.Client.Create(ctx, pod(ns, "worker-2", "worker", connections("billing-to-ledger,,x")))
	requireDenied(t, err, "entry 2 is empty")
}

func TestOtherPodsNeverReachTheWebhook(t *testing.T) {
	ctx := context.Background()
	ns := env.Namespace(t, nil)
	projectedPolicy(t, ns, policyName, "worker", nil)
	before := webhookCalls(t)

	// No annotation: matchConditions keep the pod away from the webhook.
	plain := pod(ns, "plain-0", "worker", map[string]string{"team": "billing"})
	sent := plain.Spec.DeepCopy()
	if err := env.Client.Create(ctx, plain); err != nil {
		t.Fatalf("create unannotated pod: %v", err)
	}
	// A system namespace: the namespaceSelector keeps even an annotated
	// pod away.
	system := pod("kube-public", "sallyport-podtoken-test", "worker", connections(policyName))
	if err := env.Client.Create(ctx, system); err != nil {
		t.Fatalf("create annotated pod in kube-public: %v", err)
	}
	t.Cleanup(func() { _ = env.Client.Delete(context.Background(), system) })

	if d := total(webhookCalls(t)) - total(before); d != 0 {
		t.Errorf("the webhook answered %v pods, want 0", d)
	}
	for _, p := range []*corev1.Pod{plain, system} {
		for _, v := range p.Spec.Volumes {
			if strings.HasPrefix(v.Name, webhook.PodTokenVolumePrefix) {
				t.Errorf("pod %s/%s got volume %s", p.Namespace, p.Name, v.Name)
			}
		}
	}
	if !equality.Semantic.DeepEqual(plain.Spec.Volumes, sent.Volumes) {
		t.Errorf("unannotated pod's volumes changed: %+v", plain.Spec.Volumes)
	}
	for i, c := range plain.Spec.Containers {
		if !equality.Semantic.DeepEqual(c.VolumeMounts, sent.Containers[i].VolumeMounts) {
			t.Errorf("container %s mounts changed: %+v", c.Name, c.VolumeMounts)
		}
	}
}
