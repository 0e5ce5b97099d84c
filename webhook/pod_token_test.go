package webhook

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/sallyport/sallyport/api/v1alpha1"
)

// policyReader is a client.Reader over a fixed set of ConnectionPolicies.
type policyReader struct {
	policies map[client.ObjectKey]*v1alpha1.ConnectionPolicy
	err      error
	gets     int
}

func newPolicyReader(cps ...*v1alpha1.ConnectionPolicy) *policyReader {
	r := &policyReader{policies: map[client.ObjectKey]*v1alpha1.ConnectionPolicy{}}
	for _, cp := range cps {
		r.policies[client.ObjectKeyFromObject(cp)] = cp
	}
	return r
}

func (r *policyReader) Get(_ context.Context, key client.ObjectKey, obj client.Object, _ ...client.GetOption) error {
	r.gets++
	if r.err != nil {
		return r.err
	}
	cp, ok := r.policies[key]
	if !ok {
		return apierrors.NewNotFound(schema.GroupResource{Group: v1alpha1.GroupVersion.Group, Resource: "connectionpolicies"}, key.Name)
	}
	cp.DeepCopyInto(obj.(*v1alpha1.ConnectionPolicy))
	return nil
}

func (r *policyReader) List(context.Context, client.ObjectList, ...client.ListOption) error {
	return errors.New("not implemented")
}

func projectedPolicy(name, sa string, edit func(*v1alpha1.ConnectionPolicySpec)) *v1alpha1.ConnectionPolicy {
	cp := &v1alpha1.ConnectionPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: "billing", Name: name},
		Spec: v1alpha1.ConnectionPolicySpec{
			ServiceAccountName: sa,
			Token:              &v1alpha1.TokenSpec{Mode: v1alpha1.TokenModeProjected},
		},
	}
	if edit != nil {
		edit(&cp.Spec)
	}
	return cp
}

func annotatedPod(connections, sa string) *corev1.Pod {
	p := &corev1.Pod{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{Namespace: "billing", Name: "worker-0", Annotations: map[string]string{v1alpha1.AnnotationConnections: connections}},
		Spec: corev1.PodSpec{
			ServiceAccountName: sa,
			Containers:         []corev1.Container{{Name: "app", Image: "app"}, {Name: "sidecar", Image: "sidecar"}},
		},
	}
	return p
}

func podRequest(t *testing.T, ns string, raw []byte) admission.Request {
	t.Helper()
	return admission.Request{AdmissionRequest: admissionv1.AdmissionRequest{
		UID:       "uid",
		Kind:      metav1.GroupVersionKind{Version: "v1", Kind: "Pod"},
		Resource:  metav1.GroupVersionResource{Version: "v1", Resource: "pods"},
		Namespace: ns,
		Operation: admissionv1.Create,
		Object:    runtime.RawExtension{Raw: raw},
	}}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func testDecoder() admission.Decoder {
	s := runtime.NewScheme()
	_ = clientgoscheme.AddToScheme(s)
	return admission.NewDecoder(s)
}

// admit runs the injector on pod and returns the response and, when it was
// allowed, the pod with the response's patch applied to the raw request.
func admit(t *testing.T, h *PodTokenInjector, pod *corev1.Pod) (admission.Response, *corev1.Pod) {
	t.Helper()
	raw := mustJSON(t, pod)
	resp := h.Handle(context.Background(), podRequest(t, pod.Namespace, raw))
	if !resp.Allowed {
		return resp, nil
	}
	patched := applyPatch(t, raw, resp)
	out := &corev1.Pod{}
	if err := json.Unmarshal(patched, out); err != nil {
		t.Fatal(err)
	}
	return resp, out
}

func tokenVolume(policyName, audience string, es int64) corev1.Volume {
	return podToken{Policy: policyName, Audience: audience, ExpirationSeconds: es}.volume()
}

func requireDenied(t *testing.T, resp admission.Response, want ...string) {
	t.Helper()
	if resp.Allowed {
		t.Fatalf("allowed, want denied (patches %v)", resp.Patches)
	}
	if resp.Result == nil || resp.Result.Code != http.StatusForbidden {
		t.Fatalf("result %+v, want 403", resp.Result)
	}
	for _, w := range want {
		if !strings.Contains(resp.Result.Message, w) {
			t.Errorf("message does not contain %q:\n%s", w, resp.Result.Message)
		}
	}
}

func TestPodTokenInjection(t *testing.T) {
	const defaultAudience = "sallyport.dev/billing/billing-to-ledger"
	ledger := projectedPolicy("billing-to-ledger", "worker", nil)
	audit := projectedPolicy("billing-to-audit", "worker", func(s *v1alpha1.ConnectionPolicySpec) {
		s.Audience = "https://audit.example"
		s.Token.ExpirationSeconds = ptr.To[int64](1800)
	})
	secretMode := projectedPolicy("billing-to-vault", "worker", func(s *v1alpha1.ConnectionPolicySpec) { s.Token.Mode = v1alpha1.TokenModeSecret })
	noToken := projectedPolicy("billing-to-cache", "worker", func(s *v1alpha1.ConnectionPolicySpec) { s.Token = nil })
	forDefault := projectedPolicy("default-to-ledger", "default", nil)
	longName := strings.Repeat("very-long-connection-name.", 5) + "ledger"
	long := projectedPolicy(longName, "worker", nil)
	h := &PodTokenInjector{Reader: newPolicyReader(ledger, audit, secretMode, noToken, forDefault, long), Decoder: testDecoder()}

	t.Run("injects one token into every container", func(t *testing.T) {
		resp, got := admit(t, h, annotatedPod("billing-to-ledger", "worker"))
		if !resp.Allowed || len(resp.Patches) == 0 {
			t.Fatalf("response %+v, want allowed with a patch", resp.AdmissionResponse)
		}
		want := []corev1.Volume{tokenVolume("billing-to-ledger", defaultAudience, 900)}
		if !equality.Semantic.DeepEqual(got.Spec.Volumes, want) {
			t.Errorf("volumes = %+v, want %+v", got.Spec.Volumes, want)
		}
		v := got.Spec.Volumes[0]
		if v.Name != "sallyport-billing-to-ledger" {
			t.Errorf("volume name %q", v.Name)
		}
		src := v.Projected.Sources[0].ServiceAccountToken
		if src.Audience != defaultAudience || *src.ExpirationSeconds != 900 || src.Path != "token" {
			t.Errorf("token source %+v", src)
		}
		for _, c := range got.Spec.Containers {
			want := []corev1.VolumeMount{{Name: "sallyport-billing-to-ledger", MountPath: "/var/run/secrets/sallyport.dev/billing-to-ledger", ReadOnly: true}}
			if !equality.Semantic.DeepEqual(c.VolumeMounts, want) {
				t.Errorf("container %s mounts %+v, want %+v", c.Name, c.VolumeMounts, want)
			}
		}

		// Admitted again, say on reinvocation: nothing changes.
		resp, again := admit(t, h, got)
		if !resp.Allowed || len(resp.Patches) != 0 || resp.PatchType != nil {
			t.Errorf("second admission: %+v, want allowed without a patch", resp.AdmissionResponse)
		}
		if !equality.Semantic.DeepEqual(again, got) {
			t.Error("second admission changed the pod")
		}
	})

	t.Run("several policies, init containers, existing volumes and mounts", func(t *testing.T) {
		pod := annotatedPod(" billing-to-ledger , billing-to-audit,billing-to-ledger", "worker")
		pod.Spec.InitContainers = []corev1.Container{{Name: "init", Image: "init"}}
		pod.Spec.Volumes = []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}}
		pod.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "data", MountPath: "/data"}}
		_, got := admit(t, h, pod)
		if got == nil {
			t.Fatal("denied")
		}
		want := []corev1.Volume{
			pod.Spec.Volumes[0],
			tokenVolume("billing-to-ledger", defaultAudience, 900),
			tokenVolume("billing-to-audit", "https://audit.example", 1800),
		}
		if !equality.Semantic.DeepEqual(got.Spec.Volumes, want) {
			t.Errorf("volumes = %+v, want %+v", got.Spec.Volumes, want)
		}
		tokenMounts := []corev1.VolumeMount{
			{Name: "sallyport-billing-to-ledger", MountPath: "/var/run/secrets/sallyport.dev/billing-to-ledger", ReadOnly: true},
			{Name: "sallyport-billing-to-audit", MountPath: "/var/run/secrets/sallyport.dev/billing-to-audit", ReadOnly: true},
		}
		for _, c := range append(got.Spec.InitContainers, got.Spec.Containers...) {
			want := tokenMounts
			if c.Name == "app" {
				want = append([]corev1.VolumeMount{{Name: "data", MountPath: "/data"}}, tokenMounts...)
			}
			if !equality.Semantic.DeepEqual(c.VolumeMounts, want) {
				t.Errorf("container %s mounts %+v, want %+v", c.Name, c.VolumeMounts, want)
			}
		}
	})

	t.Run("a container added after the first pass gets the mounts", func(t *testing.T) {
		_, first := admit(t, h, annotatedPod("billing-to-ledger", "worker"))
		first.Spec.Containers = append(first.Spec.Containers, corev1.Container{Name: "late", Image: "late"})
		resp, got := admit(t, h, first)
		if len(resp.Patches) == 0 {
			t.Fatal("no patch for the new container")
		}
		if len(got.Spec.Volumes) != 1 {
			t.Errorf("volumes = %+v, want one", got.Spec.Volumes)
		}
		if m := got.Spec.Containers[2].VolumeMounts; len(m) != 1 || m[0].Name != "sallyport-billing-to-ledger" {
			t.Errorf("late container mounts %+v", m)
		}
	})

	t.Run("the default ServiceAccount", func(t *testing.T) {
		if _, got := admit(t, h, annotatedPod("default-to-ledger", "")); got == nil || len(got.Spec.Volumes) != 1 {
			t.Errorf("pod without serviceAccountName did not get the default ServiceAccount's token: %+v", got)
		}
	})

	t.Run("a long policy name", func(t *testing.T) {
		_, got := admit(t, h, annotatedPod(longName, "worker"))
		if got == nil {
			t.Fatal("denied")
		}
		name := got.Spec.Volumes[0].Name
		if errs := validation.IsDNS1123Label(name); len(errs) > 0 {
			t.Errorf("volume name %q: %v", name, errs)
		}
		if mp := got.Spec.Containers[0].VolumeMounts[0].MountPath; mp != "/var/run/secrets/sallyport.dev/"+longName {
			t.Errorf("mount path %q", mp)
		}
	})

	denials := []struct {
		name string
		pod  *corev1.Pod
		want []string
	}{
		{"mismatched ServiceAccount", annotatedPod("billing-to-ledger", "intruder"),
			[]string{"ConnectionPolicy billing/billing-to-ledger", `ServiceAccount "worker"`, `pod runs as ServiceAccount "intruder"`}},
		{"mismatched default ServiceAccount", annotatedPod("billing-to-ledger", ""),
			[]string{`ServiceAccount "worker"`, `pod runs as ServiceAccount "default"`}},
		{"missing policy", annotatedPod("billing-to-nowhere", "worker"),
			[]string{"ConnectionPolicy billing/billing-to-nowhere does not exist"}},
		{"Secret mode", annotatedPod("billing-to-vault", "worker"),
			[]string{"ConnectionPolicy billing/billing-to-vault is not in Projected mode (spec.token.mode is Secret)"}},
		{"no token", annotatedPod("billing-to-cache", "worker"),
			[]string{"ConnectionPolicy billing/billing-to-cache is not in Projected mode (it has no spec.token)"}},
		{"every problem at once", annotatedPod("billing-to-ledger,billing-to-nowhere,billing-to-vault", "intruder"),
			[]string{`"intruder"`, "billing-to-nowhere does not exist", "billing-to-vault is not in Projected mode"}},
		{"empty annotation", annotatedPod(" ", "worker"), []string{"sallyport.dev/connections: names no ConnectionPolicy"}},
		{"empty entry", annotatedPod("billing-to-ledger,,billing-to-audit", "worker"), []string{"entry 2 is empty"}},
		{"trailing comma", annotatedPod("billing-to-ledger,", "worker"), []string{"entry 2 is empty"}},
		{"bad name", annotatedPod("Billing_To_Ledger", "worker"), []string{`"Billing_To_Ledger" is not a ConnectionPolicy name`}},
		{"too many", annotatedPod("a,b,c,d,e,f,g,h,i", "worker"), []string{"names 9 ConnectionPolicies; a pod may ask for at most 8"}},
	}
	for _, tc := range denials {
		t.Run("denies "+tc.name, func(t *testing.T) {
			resp, _ := admit(t, h, tc.pod)
			requireDenied(t, resp, append([]string{"sallyport.dev/connections"}, tc.want...)...)
		})
	}

	t.Run("denies a static pod", func(t *testing.T) {
		pod := annotatedPod("billing-to-ledger", "worker")
		pod.Annotations[corev1.MirrorPodAnnotationKey] = "x"
		resp, _ := admit(t, h, pod)
		requireDenied(t, resp, "static pod")
	})
}

func TestPodTokenConflicts(t *testing.T) {
	h := &PodTokenInjector{Reader: newPolicyReader(projectedPolicy("billing-to-ledger", "worker", nil)), Decoder: testDecoder()}

	t.Run("a stale token volume and mount are brought up to date", func(t *testing.T) {
		pod := annotatedPod("billing-to-ledger", "worker")
		pod.Spec.Volumes = []corev1.Volume{tokenVolume("billing-to-ledger", "https://old.example", 3600)}
		pod.Spec.Volumes[0].Projected.DefaultMode = ptr.To[int32](0o440)
		pod.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "sallyport-billing-to-ledger", MountPath: "/var/run/secrets/sallyport.dev/billing-to-ledger"}}
		_, got := admit(t, h, pod)
		if got == nil {
			t.Fatal("denied")
		}
		want := tokenVolume("billing-to-ledger", "sallyport.dev/billing/billing-to-ledger", 900)
		want.Projected.DefaultMode = ptr.To[int32](0o440)
		if len(got.Spec.Volumes) != 1 || !equality.Semantic.DeepEqual(got.Spec.Volumes[0], want) {
			t.Errorf("volumes = %+v, want %+v", got.Spec.Volumes, want)
		}
		if m := got.Spec.Containers[0].VolumeMounts; len(m) != 1 || !m[0].ReadOnly {
			t.Errorf("mounts = %+v, want one read-only mount", m)
		}
	})

	t.Run("a defaultMode the pod chose is kept", func(t *testing.T) {
		_, first := admit(t, h, annotatedPod("billing-to-ledger", "worker"))
		first.Spec.Volumes[0].Projected.DefaultMode = ptr.To[int32](0o644) // the API server's default
		resp, _ := admit(t, h, first)
		if len(resp.Patches) != 0 {
			t.Errorf("patches %v, want none", resp.Patches)
		}
	})

	t.Run("denies a foreign volume of the reserved name", func(t *testing.T) {
		pod := annotatedPod("billing-to-ledger", "worker")
		pod.Spec.Volumes = []corev1.Volume{{Name: "sallyport-billing-to-ledger", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}}
		resp, _ := admit(t, h, pod)
		requireDenied(t, resp, `already has a volume "sallyport-billing-to-ledger"`)
	})

	t.Run("denies another volume at the mount path", func(t *testing.T) {
		pod := annotatedPod("billing-to-ledger", "worker")
		pod.Spec.Volumes = []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}}
		pod.Spec.Containers[1].VolumeMounts = []corev1.VolumeMount{{Name: "data", MountPath: "/var/run/secrets/sallyport.dev/billing-to-ledger"}}
		resp, _ := admit(t, h, pod)
		requireDenied(t, resp, `container "sidecar" already mounts volume "data" at /var/run/secrets/sallyport.dev/billing-to-ledger`)
	})
}

// A field this build does not know survives the patch: the patch is computed
// between typed objects and never removes what it did not add.
func TestPodTokenKeepsUnknownFields(t *testing.T) {
	h := &PodTokenInjector{Reader: newPolicyReader(projectedPolicy("billing-to-ledger", "worker", nil)), Decoder: testDecoder()}
	var obj map[string]any
	if err := json.Unmarshal(mustJSON(t, annotatedPod("billing-to-ledger", "worker")), &obj); err != nil {
		t.Fatal(err)
	}
	spec := obj["spec"].(map[string]any)
	spec["futureField"] = map[string]any{"enabled": true}
	spec["containers"].([]any)[0].(map[string]any)["futureContainerField"] = "x"
	raw := mustJSON(t, obj)

	resp := h.Handle(context.Background(), podRequest(t, "billing", raw))
	if !resp.Allowed {
		t.Fatalf("denied: %v", resp.Result)
	}
	for _, p := range resp.Patches {
		if p.Operation == "remove" {
			t.Errorf("patch removes %s", p.Path)
		}
	}
	var got map[string]any
	if err := json.Unmarshal(applyPatch(t, raw, resp), &got); err != nil {
		t.Fatal(err)
	}
	gotSpec := got["spec"].(map[string]any)
	if gotSpec["futureField"] == nil || gotSpec["containers"].([]any)[0].(map[string]any)["futureContainerField"] != "x" {
		t.Errorf("unknown fields lost: %v", gotSpec)
	}
	if len(gotSpec["volumes"].([]any)) != 1 {
		t.Errorf("volumes = %v", gotSpec["volumes"])
	}
}

func TestPodTokenReaders(t *testing.T) {
	cp := projectedPolicy("billing-to-ledger", "worker", nil)

	t.Run("a denial is confirmed with the live reader", func(t *testing.T) {
		cache, live := newPolicyReader(), newPolicyReader(cp)
		h := &PodTokenInjector{Reader: cache, LiveReader: live, Decoder: testDecoder()}
		if _, got := admit(t, h, annotatedPod("billing-to-ledger", "worker")); got == nil || len(got.Spec.Volumes) != 1 {
			t.Errorf("pod not injected although the API server has the policy: %+v", got)
		}
		if live.gets != 1 {
			t.Errorf("live reads = %d, want 1", live.gets)
		}
	})

	t.Run("a cache hit needs no live read", func(t *testing.T) {
		cache, live := newPolicyReader(cp), newPolicyReader(cp)
		h := &PodTokenInjector{Reader: cache, LiveReader: live, Decoder: testDecoder()}
		admit(t, h, annotatedPod("billing-to-ledger", "worker"))
		if live.gets != 0 {
			t.Errorf("live reads = %d, want 0", live.gets)
		}
	})

	t.Run("a read failure is an error, not a verdict", func(t *testing.T) {
		failing := newPolicyReader(cp)
		failing.err = errors.New("connection refused")
		h := &PodTokenInjector{Reader: failing, LiveReader: failing, Decoder: testDecoder()}
		resp, _ := admit(t, h, annotatedPod("billing-to-ledger", "worker"))
		if resp.Allowed || resp.Result.Code != http.StatusInternalServerError || !strings.Contains(resp.Result.Message, "get ConnectionPolicy billing/billing-to-ledger: connection refused") {
			t.Errorf("response %+v, want a 500 naming the policy", resp.Result)
		}
	})

	t.Run("system namespaces and unannotated pods are not looked at", func(t *testing.T) {
		r := newPolicyReader(cp)
		h := &PodTokenInjector{Reader: r, Decoder: testDecoder()}
		sys := annotatedPod("billing-to-ledger", "worker")
		sys.Namespace = "kube-system"
		plain := annotatedPod("", "worker")
		plain.Annotations = nil
		for _, p := range []*corev1.Pod{sys, plain} {
			if resp, got := admit(t, h, p); len(resp.Patches) != 0 || got == nil {
				t.Errorf("pod in %s: %+v", p.Namespace, resp.AdmissionResponse)
			}
		}
		if r.gets != 0 {
			t.Errorf("policy reads = %d, want 0", r.gets)
		}
	})
}

func TestPodTokenMetrics(t *testing.T) {
	h := &PodTokenInjector{Reader: newPolicyReader(projectedPolicy("billing-to-ledger", "worker", nil)), Decoder: testDecoder()}
	count := func(result string) float64 { return testutil.ToFloat64(podTokenInjections.WithLabelValues(result)) }
	injected, unchanged, denied := count(resultInjected), count(resultUnchanged), count(resultDenied)

	_, got := admit(t, h, annotatedPod("billing-to-ledger", "worker"))
	admit(t, h, got)
	admit(t, h, annotatedPod("billing-to-ledger", "intruder"))

	if d := count(resultInjected) - injected; d != 1 {
		t.Errorf("injected += %v, want 1", d)
	}
	if d := count(resultUnchanged) - unchanged; d != 1 {
		t.Errorf("unchanged += %v, want 1", d)
	}
	if d := count(resultDenied) - denied; d != 1 {
		t.Errorf("denied += %v, want 1", d)
	}
}

func TestPodTokenVolumeName(t *testing.T) {
	tests := []struct{ policy, want string }{
		{"billing-to-ledger", "sallyport-billing-to-ledger"},
		{strings.Repeat("a", 53), "sallyport-" + strings.Repeat("a", 53)},
	}
	for _, tc := range tests {
		if got := PodTokenVolumeName(tc.policy); got != tc.want {
			t.Errorf("PodTokenVolumeName(%q) = %q, want %q", tc.policy, got, tc.want)
		}
	}
	// Too long, or with dots: shortened, hashed, still a DNS label, stable,
	// and distinct for names that share their start.
	seen := map[string]string{}
	for _, p := range []string{
		strings.Repeat("a", 54),
		strings.Repeat("a", 54) + "b",
		strings.Repeat("a", 40) + "-" + strings.Repeat("b", 30),
		strings.Repeat("a", 40) + "." + strings.Repeat("b", 30),
		"billing.to.ledger",
		"billing-to.ledger",
		strings.Repeat("x.", 120) + "y",
	} {
		got := PodTokenVolumeName(p)
		if errs := validation.IsDNS1123Label(got); len(errs) > 0 {
			t.Errorf("PodTokenVolumeName(%q) = %q: %v", p, got, errs)
		}
		if !strings.HasPrefix(got, PodTokenVolumePrefix) {
			t.Errorf("PodTokenVolumeName(%q) = %q lacks the prefix", p, got)
		}
		if again := PodTokenVolumeName(p); again != got {
			t.Errorf("PodTokenVolumeName(%q) not stable: %q, %q", p, got, again)
		}
		if other, ok := seen[got]; ok {
			t.Errorf("%q and %q both map to %q", other, p, got)
		}
		seen[got] = p
	}
}

func TestParseConnections(t *testing.T) {
	got, err := parseConnections(" b , a,b ")
	if err != nil || strings.Join(got, ",") != "b,a" {
		t.Errorf("parseConnections = %v, %v; want [b a]", got, err)
	}
	names := make([]string, MaxPodConnections)
	for i := range names {
		names[i] = "p" + strconv.Itoa(i)
	}
	if _, err := parseConnections(strings.Join(names, ",")); err != nil {
		t.Errorf("%d names: %v", MaxPodConnections, err)
	}
	if _, err := parseConnections(strings.Repeat("a", 254)); err == nil {
		t.Error("a name of 254 characters was accepted")
	}
}

// applyPatch applies the JSON patch of an admission response to raw, as the
// API server would. It knows the operations the webhook produces: add,
// replace and remove, on object keys and array indexes (and "-").
func applyPatch(t *testing.T, raw []byte, resp admission.Response) []byte {
	t.Helper()
	var doc any
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	for _, op := range resp.Patches {
		parts := strings.Split(strings.TrimPrefix(op.Path, "/"), "/")
		for i, p := range parts {
			parts[i] = strings.NewReplacer("~1", "/", "~0", "~").Replace(p)
		}
		var err error
		doc, err = patchAt(doc, parts, op.Operation, op.Value)
		if err != nil {
			t.Fatalf("apply %s %s: %v", op.Operation, op.Path, err)
		}
	}
	return mustJSON(t, doc)
}

func patchAt(node any, path []string, op string, value any) (any, error) {
	key := path[0]
	last := len(path) == 1
	switch n := node.(type) {
	case map[string]any:
		if last {
			switch op {
			case "add", "replace":
				n[key] = value
			case "remove":
				delete(n, key)
			default:
				return nil, fmt.Errorf("unknown operation %q", op)
			}
			return n, nil
		}
		child, ok := n[key]
		if !ok {
			return nil, fmt.Errorf("no key %q", key)
		}
		next, err := patchAt(child, path[1:], op, value)
		n[key] = next
		return n, err
	case []any:
		i := len(n)
		if key != "-" {
			var err error
			if i, err = strconv.Atoi(key); err != nil || i < 0 || i > len(n) {
				return nil, fmt.Errorf("bad index %q", key)
			}
		}
		if last {
			switch op {
			case "add":
				return append(n[:i], append([]any{value}, n[i:]...)...), nil
			case "replace":
				n[i] = value
				return n, nil
			case "remove":
				return append(n[:i], n[i+1:]...), nil
			default:
				return nil, fmt.Errorf("unknown operation %q", op)
			}
		}
		if i == len(n) {
			return nil, fmt.Errorf("index %q out of range", key)
		}
		next, err := patchAt(n[i], path[1:], op, value)
		n[i] = next
		return n, err
	default:
		return nil, fmt.Errorf("cannot descend into %T at %q", node, key)
	}
}
