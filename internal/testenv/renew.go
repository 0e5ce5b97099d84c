package testenv

import (
	"context"
	"testing"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/sallyport/sallyport/api/v1alpha1"
)

// AskRenewal sets the renew annotation of cp to a new value, as an operator
// asking for a new token would, retrying conflicts for up to timeout, and
// returns the value (status.token.renewRequest acknowledges it). cp is
// updated to what was written.
func AskRenewal(t testing.TB, c client.Client, cp *v1alpha1.ConnectionPolicy, timeout time.Duration) string {
	t.Helper()
	ctx := context.Background()
	stamp := time.Now().UTC().Format(time.RFC3339Nano)
	Eventually(t, timeout, func() error {
		if err := c.Get(ctx, client.ObjectKeyFromObject(cp), cp); err != nil {
			return err
		}
		if cp.Annotations == nil {
			cp.Annotations = map[string]string{}
		}
		cp.Annotations[v1alpha1.AnnotationRenew] = stamp
		return c.Update(ctx, cp)
	})
	return stamp
}
