package webhook

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/sallyport/sallyport/api/v1alpha1"
	"github.com/sallyport/sallyport/internal/policy"
)

// The pod token webhook. failurePolicy Fail: a pod that asks for a
// credential must not start without it. matchConditions send only pods with
// the sallyport.dev/connections annotation, so the webhook never sits in the
// path of other pods; the namespaceSelector keeps it out of the system
// namespaces altogether. CREATE only: a pod's volumes cannot change after it
// is created. reinvocationPolicy IfNeeded: when a later webhook adds a
// container, this one runs again and mounts the tokens there too.
//
// +kubebuilder:webhook:path=/mutate-v1-pod-token,mutating=true,failurePolicy=fail,sideEffects=None,groups="",resources=pods,verbs=create,versions=v1,name=mpodtoken.sallyport.dev,admissionReviewVersions=v1,timeoutSeconds=10,reinvocationPolicy=IfNeeded,patch=`{"namespaceSelector":{"matchExpressions":[{"key":"kubernetes.io/metadata.name","operator":"NotIn","values":["kube-system","kube-public","kube-node-lease"]}]},"matchConditions":[{"name":"asks-for-connections","expression":"has(object.metadata.annotations) && 'sallyport.dev/connections' in object.metadata.annotations"}]}`

// PodTokenWebhookPath is where the pod token webhook is served.
const PodTokenWebhookPath = "/mutate-v1-pod-token" //nolint:gosec // a URL path, not a credential

// systemNamespaces never get tokens injected, whatever their pods say. The
// webhook configuration's namespaceSelector already keeps their pods away;
// this is the second line.
var systemNamespaces = map[string]bool{"kube-system": true, "kube-public": true, "kube-node-lease": true}

// PodTokenInjector is the mutating admission handler of Projected mode. A
// pod annotated sallyport.dev/connections: <policy>[,<policy>] gets, for each
// named ConnectionPolicy of its namespace, a projected serviceAccountToken
// volume with the policy's audience and expirationSeconds, mounted read-only
// at /var/run/secrets/sallyport.dev/<policy> in every container and init
// container. A policy that does not exist, is not in Projected mode or is for
// another ServiceAccount denies the pod.
type PodTokenInjector struct {
	// Reader reads ConnectionPolicies, usually the manager's cached client.
	Reader client.Reader
	// LiveReader, when set, reads straight from the API server. A pod is
	// denied only when it confirms what Reader said, so a policy created
	// a moment before its pods does not deny them while the cache catches
	// up.
	LiveReader client.Reader
	// Decoder decodes the pod of the request.
	Decoder admission.Decoder
}

var _ admission.Handler = (*PodTokenInjector)(nil)

// Handle implements admission.Handler.
func (h *PodTokenInjector) Handle(ctx context.Context, req admission.Request) admission.Response {
	resp, result := h.handle(ctx, req)
	podTokenInjections.WithLabelValues(result).Inc()
	return resp
}

func (h *PodTokenInjector) handle(ctx context.Context, req admission.Request) (admission.Response, string) {
	log := logf.FromContext(ctx).WithValues("namespace", req.Namespace, "name", req.Name)
	if req.Operation != admissionv1.Create || systemNamespaces[req.Namespace] {
		return admission.Allowed(""), resultUnchanged
	}
	pod := &corev1.Pod{}
	if err := h.Decoder.Decode(req, pod); err != nil {
		return admission.Errored(http.StatusBadRequest, fmt.Errorf("decode pod: %w", err)), resultError
	}
	value, ok := pod.Annotations[v1alpha1.AnnotationConnections]
	if !ok {
		return admission.Allowed(""), resultUnchanged
	}
	names, err := parseConnections(value)
	if err != nil {
		return deny("annotation %s: %v", v1alpha1.AnnotationConnections, err), resultDenied
	}
	if _, mirror := pod.Annotations[corev1.MirrorPodAnnotationKey]; mirror {
		return deny("annotation %s: a static pod cannot mount ServiceAccount tokens", v1alpha1.AnnotationConnections), resultDenied
	}
	sa := podServiceAccount(pod)

	tokens, problems, err := resolvePodTokens(ctx, h.Reader, req.Namespace, names, sa)
	if (err != nil || len(problems) > 0) && h.LiveReader != nil {
		tokens, problems, err = resolvePodTokens(ctx, h.LiveReader, req.Namespace, names, sa)
	}
	if err != nil {
		log.Error(err, "Could not read the ConnectionPolicies a pod asks for", "policies", names)
		return admission.Errored(http.StatusInternalServerError, err), resultError
	}
	if len(problems) > 0 {
		return deny("annotation %s: %s", v1alpha1.AnnotationConnections, strings.Join(problems, "; ")), resultDenied
	}

	mutated := pod.DeepCopy()
	changed, err := injectPodTokens(mutated, tokens)
	if err != nil {
		return deny("annotation %s: %v", v1alpha1.AnnotationConnections, err), resultDenied
	}
	if !changed {
		return admission.Allowed(""), resultUnchanged
	}
	// The patch is the difference between the decoded pod and the mutated
	// one, not between the raw request and the mutated pod: fields this
	// build does not know stay untouched instead of being removed.
	before, err := json.Marshal(pod)
	if err != nil {
		return admission.Errored(http.StatusInternalServerError, fmt.Errorf("encode pod: %w", err)), resultError
	}
	after, err := json.Marshal(mutated)
	if err != nil {
		return admission.Errored(http.StatusInternalServerError, fmt.Errorf("encode mutated pod: %w", err)), resultError
	}
	log.V(1).Info("Injecting projected tokens", "policies", names, "serviceAccount", sa)
	return admission.PatchResponseFromRaw(before, after), resultInjected
}

// deny answers 403 with a message the API server passes on to the client.
func deny(format string, args ...any) admission.Response {
	return admission.Denied(fmt.Sprintf(format, args...))
}

// podServiceAccount is the ServiceAccount the pod runs as. The API server's
// ServiceAccount admission plugin has normally set it already; "default" is
// what it would set.
func podServiceAccount(pod *corev1.Pod) string {
	switch {
	case pod.Spec.ServiceAccountName != "":
		return pod.Spec.ServiceAccountName
	case pod.Spec.DeprecatedServiceAccount != "":
		return pod.Spec.DeprecatedServiceAccount
	default:
		return "default"
	}
}

// resolvePodTokens reads the named ConnectionPolicies of namespace and
// returns the token each projects for a pod running as serviceAccount, or,
// for each policy that cannot serve the pod, why not. err is a failure to
// read, not a verdict.
func resolvePodTokens(ctx context.Context, r client.Reader, namespace string, names []string, serviceAccount string) (tokens []podToken, problems []string, err error) {
	for _, name := range names {
		key := types.NamespacedName{Namespace: namespace, Name: name}
		cp := &v1alpha1.ConnectionPolicy{}
		if err := r.Get(ctx, key, cp); err != nil {
			if apierrors.IsNotFound(err) {
				problems = append(problems, fmt.Sprintf("ConnectionPolicy %s does not exist", key))
				continue
			}
			return nil, nil, fmt.Errorf("get ConnectionPolicy %s: %w", key, err)
		}
		t, problem := projectedToken(cp, serviceAccount)
		if problem != "" {
			problems = append(problems, problem)
			continue
		}
		tokens = append(tokens, t)
	}
	return tokens, problems, nil
}

// projectedToken is the token cp projects into a pod that runs as
// serviceAccount, or why it projects none. The audience is the policy's
// effective audience, the one the decision API expects from its callers.
func projectedToken(cp *v1alpha1.ConnectionPolicy, serviceAccount string) (podToken, string) {
	key := types.NamespacedName{Namespace: cp.Namespace, Name: cp.Name}
	switch {
	case cp.DeletionTimestamp != nil:
		return podToken{}, fmt.Sprintf("ConnectionPolicy %s is being deleted", key)
	case cp.Spec.Token == nil:
		return podToken{}, fmt.Sprintf("ConnectionPolicy %s is not in Projected mode (it has no spec.token)", key)
	case cp.Spec.Token.Mode != v1alpha1.TokenModeProjected:
		return podToken{}, fmt.Sprintf("ConnectionPolicy %s is not in Projected mode (spec.token.mode is %s)", key, cp.Spec.Token.Mode)
	case cp.Spec.ServiceAccountName != serviceAccount:
		return podToken{}, fmt.Sprintf("ConnectionPolicy %s is for ServiceAccount %q, but the pod runs as ServiceAccount %q", key, cp.Spec.ServiceAccountName, serviceAccount)
	}
	es := int64(policy.DefaultExpirationSeconds)
	if cp.Spec.Token.ExpirationSeconds != nil {
		es = *cp.Spec.Token.ExpirationSeconds
	}
	return podToken{Policy: cp.Name, Audience: policy.EffectiveAudience(cp), ExpirationSeconds: es}, ""
}

// SetupPodTokens registers the pod token webhook with the manager's webhook
// server. It reads ConnectionPolicies through the manager's cache and
// confirms a denial with a direct read.
func SetupPodTokens(mgr ctrl.Manager) error {
	h := &PodTokenInjector{
		Reader:     mgr.GetClient(),
		LiveReader: mgr.GetAPIReader(),
		Decoder:    admission.NewDecoder(mgr.GetScheme()),
	}
	mgr.GetWebhookServer().Register(PodTokenWebhookPath, (&admission.Webhook{Handler: h}).WithRecoverPanic(true))
	return nil
}
