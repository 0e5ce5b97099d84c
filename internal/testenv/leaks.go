package testenv

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/sallyport/sallyport/api/v1alpha1"
)

// Leaks returns, for every credential in secrets found in one of sources
// (name to text), whole or as its signature alone, a line saying where —
// never the credential itself, only its length and last characters.
func Leaks(secrets []string, sources map[string]string) []string {
	var out []string
	for _, s := range secrets {
		if s == "" {
			continue
		}
		needles := []string{s}
		if parts := strings.Split(s, "."); len(parts) == 3 && len(parts[2]) >= 16 {
			needles = append(needles, parts[2])
		}
		for name, text := range sources {
			for _, n := range needles {
				if strings.Contains(text, n) {
					out = append(out, fmt.Sprintf("a credential (%d bytes, ending %q) appears in %s", len(s), s[max(0, len(s)-6):], name))
					break
				}
			}
		}
	}
	return out
}

// ClusterText returns what the operator wrote into the API server for
// readers, as JSON by source name: every Event (events.k8s.io and core) and
// every policy with its status.
func ClusterText(ctx context.Context, c client.Client) (map[string]string, error) {
	out := map[string]string{}
	for name, list := range map[string]client.ObjectList{
		"Events":             &eventsv1.EventList{},
		"core Events":        &corev1.EventList{},
		"ConnectionPolicies": &v1alpha1.ConnectionPolicyList{},
		"ResourcePolicies":   &v1alpha1.ResourcePolicyList{},
	} {
		if err := c.List(ctx, list); err != nil {
			return nil, fmt.Errorf("list %s: %w", name, err)
		}
		raw, err := json.Marshal(list)
		if err != nil {
			return nil, fmt.Errorf("marshal %s: %w", name, err)
		}
		out[name] = string(raw)
	}
	return out, nil
}
