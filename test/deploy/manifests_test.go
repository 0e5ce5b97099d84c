package deploy_test

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	authorizationv1 "k8s.io/api/authorization/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/sets"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/sallyport/sallyport/api/v1alpha1"
	"github.com/sallyport/sallyport/internal/controlplane"
)

// installNamespace is where both installers put the operator in these
// tests: config/default's namespace, and the chart's release namespace.
const installNamespace = "sallyport-system"

// Groups whose CRDs (cert-manager, Prometheus Operator) this API server does
// not have: their objects are checked for presence, not applied.
var foreignGroups = sets.New("cert-manager.io", "monitoring.coreos.com")

func renderConfig(t *testing.T, components ...string) []*unstructured.Unstructured {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	objs, err := controlplane.Render(ctx, root, components...)
	if err != nil {
		t.Fatal(err)
	}
	return objs
}

// renderChart renders charts/sallyport with Helm v4 (hack/helm) into
// installNamespace with the given --set values.
func renderChart(t *testing.T, set ...string) []*unstructured.Unstructured {
	t.Helper()
	return renderChartIn(t, installNamespace, set...)
}

// renderChartIn renders charts/sallyport as release sallyport of namespace
// ns.
func renderChartIn(t *testing.T, ns string, set ...string) []*unstructured.Unstructured {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	args := []string{"tool", "-modfile=hack/helm/go.mod", "helm", "template", "sallyport", "charts/sallyport", "--namespace", ns, "--include-crds"}
	for _, s := range set {
		args = append(args, "--set", s)
	}
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = root
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("helm template: %v\n%s", err, stderr.String())
	}
	objs, err := controlplane.DecodeObjects("charts/sallyport", out)
	if err != nil {
		t.Fatal(err)
	}
	return objs
}

// dryRun server-side applies every object with dryRun=All and returns what
// the API server would store (defaults applied), keyed by kind/name. The
// install namespace must exist for namespaced objects to be admitted.
func dryRun(t *testing.T, objs []*unstructured.Unstructured) map[string]*unstructured.Unstructured {
	t.Helper()
	ctx := context.Background()
	ensureInstallNamespace(t)
	out := map[string]*unstructured.Unstructured{}
	for _, o := range objs {
		gvk := o.GroupVersionKind()
		if foreignGroups.Has(gvk.Group) {
			continue
		}
		m, err := env.Client.RESTMapper().RESTMapping(gvk.GroupKind(), gvk.Version)
		if err != nil {
			t.Fatalf("%s %s: %v", gvk.Kind, o.GetName(), err)
		}
		ri := dyn.Resource(m.Resource)
		o = o.DeepCopy()
		var applied *unstructured.Unstructured
		opts := metav1.ApplyOptions{FieldManager: "deploy-test", Force: true, DryRun: []string{metav1.DryRunAll}}
		if m.Scope.Name() == "namespace" {
			if o.GetNamespace() == "" {
				t.Errorf("%s %s is namespaced but has no namespace", gvk.Kind, o.GetName())
				continue
			}
			applied, err = ri.Namespace(o.GetNamespace()).Apply(ctx, o.GetName(), o, opts)
		} else {
			if o.GetNamespace() != "" {
				t.Errorf("%s %s is cluster-scoped but names namespace %q", gvk.Kind, o.GetName(), o.GetNamespace())
			}
			applied, err = ri.Apply(ctx, o.GetName(), o, opts)
		}
		if err != nil {
			t.Errorf("the API server refuses %s %s: %v", gvk.Kind, o.GetName(), err)
			continue
		}
		out[gvk.Kind+"/"+o.GetName()] = applied
	}
	return out
}

func ensureInstallNamespace(t *testing.T) {
	t.Helper()
	ns := &unstructured.Unstructured{}
	ns.SetAPIVersion("v1")
	ns.SetKind("Namespace")
	ns.SetName(installNamespace)
	if err := controlplane.Apply(context.Background(), env.Client, []*unstructured.Unstructured{ns}); err != nil {
		t.Fatal(err)
	}
}

func kinds(objs []*unstructured.Unstructured) map[string]int {
	n := map[string]int{}
	for _, o := range objs {
		n[o.GetKind()]++
	}
	return n
}

// TestConfigDefaultIsAccepted renders config/default with every optional
// component and has the API server admit each object (dry run), and checks
// the names the Deployment's arguments rely on.
func TestConfigDefaultIsAccepted(t *testing.T) {
	objs := renderConfig(t, "certmanager", "prometheus", "network-policy")
	got := kinds(objs)
	for kind, want := range map[string]int{
		"Namespace": 1, "CustomResourceDefinition": 2, "ServiceAccount": 1, "Deployment": 1, "Service": 3,
		"PodDisruptionBudget": 1, "ValidatingWebhookConfiguration": 1, "MutatingWebhookConfiguration": 1,
		"ValidatingAdmissionPolicy": 1, "ValidatingAdmissionPolicyBinding": 1,
		"Certificate": 1, "Issuer": 1, "ServiceMonitor": 1, "NetworkPolicy": 3,
	} {
		if got[kind] != want {
			t.Errorf("config/default with every component renders %d %s, want %d", got[kind], kind, want)
		}
	}
	for _, o := range objs {
		if o.GetKind() == "CustomResourceDefinition" {
			continue
		}
		if !strings.HasPrefix(o.GetName(), "sallyport-") {
			t.Errorf("%s %s has no sallyport- prefix", o.GetKind(), o.GetName())
		}
		if ns := o.GetNamespace(); ns != "" && ns != installNamespace {
			t.Errorf("%s %s is in namespace %q, want %s", o.GetKind(), o.GetName(), ns, installNamespace)
		}
	}
	dryRun(t, objs)

	// The Deployment names Services and webhook configurations by flag;
	// each must be what the render holds.
	byName := map[string]bool{}
	for _, o := range objs {
		byName[o.GetKind()+"/"+o.GetName()] = true
	}
	args := containerArgs(t, find(t, objs, "Deployment", "sallyport-controller-manager"))
	for flag, kind := range map[string]string{
		"--webhook-service-name":                  "Service",
		"--decision-service-name":                 "Service",
		"--validating-webhook-configuration-name": "ValidatingWebhookConfiguration",
		"--mutating-webhook-configuration-name":   "MutatingWebhookConfiguration",
	} {
		v := flagValue(args, flag)
		if !byName[kind+"/"+v] {
			t.Errorf("the Deployment's %s=%s names no %s in config/default", flag, v, kind)
		}
	}
	if v := flagValue(args, "--cert-management"); v != "external" {
		t.Errorf("with the certmanager component, the last --cert-management is %q, want external", v)
	}
}

// hack/render.sh (make deploy, build-installer) refuses a component
// config/ does not have, naming it.
func TestRenderRefusesUnknownComponent(t *testing.T) {
	_, err := controlplane.Render(context.Background(), root, "certmanger")
	if err == nil || !strings.Contains(err.Error(), "no component config/certmanger") {
		t.Errorf("render with a misspelt component: %v", err)
	}
}

// TestChartIsAccepted has the API server admit every object the chart
// renders, with its defaults and with the optional parts on.
func TestChartIsAccepted(t *testing.T) {
	dryRun(t, renderChart(t))
	objs := renderChart(t, "networkPolicy.enabled=true", "serviceMonitor.enabled=true", "replicaCount=3", "certManager.enabled=true")
	if k := kinds(objs); k["NetworkPolicy"] != 1 || k["ServiceMonitor"] != 1 || k["Certificate"] != 1 || k["Issuer"] != 1 {
		t.Errorf("the chart with networkPolicy, serviceMonitor and certManager enabled renders %v", k)
	}
	if v := flagValue(containerArgs(t, find(t, objs, "Deployment", "sallyport")), "--cert-management"); v != "external" {
		t.Errorf("with certManager.enabled the chart runs --cert-management=%s, want external", v)
	}
	dryRun(t, objs)
}

// TestChartAgreesWithConfig compares what the two installers grant and
// register, after the API server's defaulting: the rights of the
// operator's ServiceAccount (as atomic grants, whatever the Roles are
// called), the admission webhooks (all but where they send requests), the
// admission policy and the CRDs.
func TestChartAgreesWithConfig(t *testing.T) {
	config := dryRun(t, renderConfig(t))
	chart := dryRun(t, renderChart(t))

	for _, scope := range []string{"cluster", installNamespace} {
		c, h := grants(t, config, "sallyport-controller-manager", scope), grants(t, chart, "sallyport", scope)
		if len(c) == 0 {
			t.Errorf("config/default grants its ServiceAccount nothing in scope %s", scope)
		}
		if d := cmp.Diff(sets.List(c), sets.List(h)); d != "" {
			t.Errorf("rights of the operator in scope %s differ (-config/default +chart):\n%s", scope, d)
		}
	}
	// Bound to nothing by either: what namespace admins bind for Secret
	// mode, what metrics scrapers are bound to, and the policy roles the
	// built-in ones aggregate.
	for _, name := range []string{"sallyport-token-issuer", "sallyport-metrics-reader", "sallyport-policy-viewer", "sallyport-policy-editor"} {
		key := "ClusterRole/" + name
		if config[key] == nil || chart[key] == nil {
			t.Errorf("%s: in config/default %t, in the chart %t", key, config[key] != nil, chart[key] != nil)
			continue
		}
		if d := cmp.Diff(rules(t, config[key]), rules(t, chart[key])); d != "" {
			t.Errorf("%s differs (-config/default +chart):\n%s", key, d)
		}
		if d := cmp.Diff(aggregation(config[key]), aggregation(chart[key])); d != "" {
			t.Errorf("%s aggregates differently (-config/default +chart):\n%s", key, d)
		}
	}

	for _, key := range []string{
		"ValidatingWebhookConfiguration/sallyport-validating-webhook-configuration",
		"MutatingWebhookConfiguration/sallyport-mutating-webhook-configuration",
	} {
		if d := cmp.Diff(webhooks(t, config, key), webhooks(t, chart, key)); d != "" {
			t.Errorf("%s differs (-config/default +chart):\n%s", key, d)
		}
	}
	for _, key := range []string{
		"ValidatingAdmissionPolicy/sallyport-secret-mode",
		"ValidatingAdmissionPolicyBinding/sallyport-secret-mode",
		"CustomResourceDefinition/connectionpolicies.policy.sallyport.dev",
		"CustomResourceDefinition/resourcepolicies.policy.sallyport.dev",
	} {
		if config[key] == nil || chart[key] == nil {
			t.Errorf("%s: in config/default %t, in the chart %t", key, config[key] != nil, chart[key] != nil)
			continue
		}
		if d := cmp.Diff(config[key].Object["spec"], chart[key].Object["spec"]); d != "" {
			t.Errorf("%s spec differs (-config/default +chart):\n%s", key, d)
		}
	}
}

// aggregation returns a ClusterRole's aggregate-to labels.
func aggregation(o *unstructured.Unstructured) map[string]string {
	out := map[string]string{}
	for k, v := range o.GetLabels() {
		if strings.HasPrefix(k, "rbac.authorization.k8s.io/aggregate-to-") {
			out[k] = v
		}
	}
	return out
}

// grants expands the rules bound to a ServiceAccount of installNamespace in
// one scope ("cluster" for ClusterRoleBindings, else the namespace of
// RoleBindings) into atomic "group resource verb name" grants.
func grants(t *testing.T, objs map[string]*unstructured.Unstructured, sa, scope string) sets.Set[string] {
	t.Helper()
	out := sets.New[string]()
	for _, o := range objs {
		var b rbacv1.RoleBinding // ClusterRoleBinding has the same fields
		switch {
		case o.GetKind() == "ClusterRoleBinding" && scope == "cluster",
			o.GetKind() == "RoleBinding" && o.GetNamespace() == scope:
		default:
			continue
		}
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, &b); err != nil {
			t.Fatal(err)
		}
		if !slices.ContainsFunc(b.Subjects, func(s rbacv1.Subject) bool {
			return s.Kind == rbacv1.ServiceAccountKind && s.Name == sa && s.Namespace == installNamespace
		}) {
			continue
		}
		role := objs[b.RoleRef.Kind+"/"+b.RoleRef.Name]
		if role == nil {
			t.Errorf("%s %s refers to %s %s, which is not installed", o.GetKind(), o.GetName(), b.RoleRef.Kind, b.RoleRef.Name)
			continue
		}
		for _, r := range rules(t, role) {
			names := r.ResourceNames
			if len(names) == 0 {
				names = []string{"*"}
			}
			for _, g := range r.APIGroups {
				for _, res := range append(slices.Clone(r.Resources), r.NonResourceURLs...) {
					for _, v := range r.Verbs {
						for _, n := range names {
							out.Insert(fmt.Sprintf("%q %s %s %s", g, res, v, n))
						}
					}
				}
			}
			if len(r.APIGroups) == 0 {
				for _, u := range r.NonResourceURLs {
					for _, v := range r.Verbs {
						out.Insert(fmt.Sprintf("url %s %s", u, v))
					}
				}
			}
		}
	}
	return out
}

func rules(t *testing.T, role *unstructured.Unstructured) []rbacv1.PolicyRule {
	t.Helper()
	if role == nil {
		t.Error("role not installed")
		return nil
	}
	var r rbacv1.ClusterRole
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(role.Object, &r); err != nil {
		t.Fatal(err)
	}
	return r.Rules
}

// webhooks returns a webhook configuration's webhooks without what differs
// by installer: the Service they are sent to (its path is kept) and the CA.
func webhooks(t *testing.T, objs map[string]*unstructured.Unstructured, key string) []any {
	t.Helper()
	o := objs[key]
	if o == nil {
		t.Errorf("%s not installed", key)
		return nil
	}
	hooks, _, _ := unstructured.NestedSlice(o.Object, "webhooks")
	for _, h := range hooks {
		m := h.(map[string]any)
		unstructured.RemoveNestedField(m, "clientConfig", "service", "name")
		unstructured.RemoveNestedField(m, "clientConfig", "service", "namespace")
		unstructured.RemoveNestedField(m, "clientConfig", "caBundle")
	}
	return hooks
}

func find(t *testing.T, objs []*unstructured.Unstructured, kind, name string) *unstructured.Unstructured {
	t.Helper()
	for _, o := range objs {
		if o.GetKind() == kind && o.GetName() == name {
			return o
		}
	}
	t.Fatalf("no %s %s rendered", kind, name)
	return nil
}

// containerArgs returns the arguments of the Deployment's manager container.
func containerArgs(t *testing.T, d *unstructured.Unstructured) []string {
	t.Helper()
	containers, _, _ := unstructured.NestedSlice(d.Object, "spec", "template", "spec", "containers")
	for _, c := range containers {
		m := c.(map[string]any)
		if m["name"] == "manager" {
			args, _, _ := unstructured.NestedStringSlice(m, "args")
			return args
		}
	}
	t.Fatalf("Deployment %s has no manager container", d.GetName())
	return nil
}

// flagValue returns the last value of --name=value in args, as the flag
// package would see it.
func flagValue(args []string, name string) string {
	v := ""
	for _, a := range args {
		if val, ok := strings.CutPrefix(a, name+"="); ok {
			v = val
		}
	}
	return v
}

// TestNoWildcardRBAC reads every Role and ClusterRole both installers
// render, with every optional part on, and refuses a wildcard anywhere in a
// rule: least privilege is spelt out.
func TestNoWildcardRBAC(t *testing.T) {
	installers := map[string][]*unstructured.Unstructured{
		"config/default": renderConfig(t, "certmanager", "prometheus", "network-policy"),
		"chart":          renderChart(t, "networkPolicy.enabled=true", "serviceMonitor.enabled=true"),
	}
	for name, objs := range installers {
		roles := 0
		for _, o := range objs {
			if o.GetKind() != "Role" && o.GetKind() != "ClusterRole" {
				continue
			}
			roles++
			for i, r := range rules(t, o) {
				for field, values := range map[string][]string{
					"apiGroups": r.APIGroups, "resources": r.Resources, "verbs": r.Verbs,
					"resourceNames": r.ResourceNames, "nonResourceURLs": r.NonResourceURLs,
				} {
					for _, v := range values {
						if strings.Contains(v, "*") {
							t.Errorf("%s: %s %s rules[%d].%s holds %q", name, o.GetKind(), o.GetName(), i, field, v)
						}
					}
				}
			}
		}
		if roles == 0 {
			t.Errorf("%s renders no Role or ClusterRole", name)
		}
	}
}

// TestPodMeetsRestrictedPodSecurity has the API server's PodSecurity
// admission judge the manager's pod, as each installer renders it, in a
// namespace that enforces the restricted standard.
func TestPodMeetsRestrictedPodSecurity(t *testing.T) {
	ctx := context.Background()
	ns := env.Namespace(t, map[string]string{"pod-security.kubernetes.io/enforce": "restricted"})
	createPod := func(spec map[string]any) error {
		pod := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "v1", "kind": "Pod",
			"metadata": map[string]any{"name": "manager", "namespace": ns},
			"spec":     spec,
		}}
		return env.Client.Create(ctx, pod, &client.CreateOptions{DryRun: []string{metav1.DryRunAll}})
	}
	// The control: a privileged pod is refused here.
	if err := createPod(map[string]any{"containers": []any{map[string]any{
		"name": "x", "image": "x", "securityContext": map[string]any{"privileged": true},
	}}}); err == nil {
		t.Fatal("a privileged pod was admitted: PodSecurity admission is not enforcing in this API server")
	}
	for name, d := range map[string]*unstructured.Unstructured{
		"config/default": find(t, renderConfig(t), "Deployment", "sallyport-controller-manager"),
		"chart":          find(t, renderChart(t), "Deployment", "sallyport"),
	} {
		spec, ok, _ := unstructured.NestedMap(d.Object, "spec", "template", "spec")
		if !ok {
			t.Fatalf("%s: the Deployment has no pod template", name)
		}
		if err := createPod(spec); err != nil {
			t.Errorf("%s: the manager's pod does not meet the restricted Pod Security Standard: %v", name, err)
		}
	}
}

// The policy roles grant what they say on a real API server: the viewer
// reads policies and their status and writes nothing; the editor writes
// policies but not their status, which is the operator's.
func TestPolicyRoles(t *testing.T) {
	ctx := context.Background()
	objs := renderConfig(t)
	var roles []*unstructured.Unstructured
	for _, name := range []string{"sallyport-policy-viewer", "sallyport-policy-editor"} {
		roles = append(roles, find(t, objs, "ClusterRole", name))
	}
	if err := controlplane.Apply(ctx, env.Client, roles); err != nil {
		t.Fatal(err)
	}
	ns := env.Namespace(t, nil)
	for user, role := range map[string]string{"auditor": "sallyport-policy-viewer", "developer": "sallyport-policy-editor"} {
		rb := &rbacv1.RoleBinding{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: user},
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role},
			Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: "User", Name: user}},
		}
		if err := env.Client.Create(ctx, rb); err != nil {
			t.Fatal(err)
		}
	}
	cases := []struct {
		user, verb, resource, sub string
		allowed                   bool
	}{
		{"auditor", "list", "resourcepolicies", "", true},
		{"auditor", "get", "connectionpolicies", "status", true},
		{"auditor", "watch", "connectionpolicies", "", true},
		{"auditor", "create", "resourcepolicies", "", false},
		{"auditor", "delete", "connectionpolicies", "", false},
		{"developer", "create", "connectionpolicies", "", true},
		{"developer", "patch", "resourcepolicies", "", true},
		{"developer", "delete", "resourcepolicies", "", true},
		{"developer", "update", "resourcepolicies", "status", false},
		{"developer", "patch", "connectionpolicies", "status", false},
	}
	for _, c := range cases {
		sar := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
			User: c.user,
			ResourceAttributes: &authorizationv1.ResourceAttributes{
				Namespace: ns, Verb: c.verb, Group: v1alpha1.GroupVersion.Group, Resource: c.resource, Subresource: c.sub,
			},
		}}
		out, err := clientset.AuthorizationV1().SubjectAccessReviews().Create(ctx, sar, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if out.Status.Allowed != c.allowed {
			t.Errorf("%s %s %s/%s: allowed %t, want %t", c.user, c.verb, c.resource, c.sub, out.Status.Allowed, c.allowed)
		}
	}
}
