package report

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/sallyport/sallyport/api/v1alpha1"
)

// NewClient returns a client of the cluster cfg points at that knows the
// policy kinds. It needs to list ConnectionPolicies and ResourcePolicies,
// nothing more.
func NewClient(cfg *rest.Config) (client.Client, error) {
	scheme := runtime.NewScheme()
	if err := v1alpha1.AddToScheme(scheme); err != nil {
		return nil, fmt.Errorf("register the policy kinds: %w", err)
	}
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		return nil, fmt.Errorf("create a client for %s: %w", cfg.Host, err)
	}
	return c, nil
}

// ListPolicies lists the policies of namespace, or of every namespace when
// it is empty, ordered by namespace and name so that reports are stable.
func ListPolicies(ctx context.Context, c client.Reader, namespace string) ([]*v1alpha1.ConnectionPolicy, []*v1alpha1.ResourcePolicy, error) {
	var opts []client.ListOption
	if namespace != "" {
		opts = append(opts, client.InNamespace(namespace))
	}
	var cl v1alpha1.ConnectionPolicyList
	if err := c.List(ctx, &cl, opts...); err != nil {
		return nil, nil, listError("ConnectionPolicies", err)
	}
	var rl v1alpha1.ResourcePolicyList
	if err := c.List(ctx, &rl, opts...); err != nil {
		return nil, nil, listError("ResourcePolicies", err)
	}
	conns := make([]*v1alpha1.ConnectionPolicy, 0, len(cl.Items))
	for i := range cl.Items {
		conns = append(conns, &cl.Items[i])
	}
	res := make([]*v1alpha1.ResourcePolicy, 0, len(rl.Items))
	for i := range rl.Items {
		res = append(res, &rl.Items[i])
	}
	slices.SortFunc(conns, func(a, b *v1alpha1.ConnectionPolicy) int {
		return strings.Compare(a.Namespace+"/"+a.Name, b.Namespace+"/"+b.Name)
	})
	slices.SortFunc(res, func(a, b *v1alpha1.ResourcePolicy) int {
		return strings.Compare(a.Namespace+"/"+a.Name, b.Namespace+"/"+b.Name)
	})
	return conns, res, nil
}

// listError says which list failed, and that the CRDs are missing when the
// API server does not know the kind: the usual cause is a kubeconfig for
// the wrong cluster.
func listError(what string, err error) error {
	if meta.IsNoMatchError(err) {
		return fmt.Errorf("list %s: the cluster does not know the kind (are sallyport's CRDs installed?): %w", what, err)
	}
	return fmt.Errorf("list %s: %w", what, err)
}
