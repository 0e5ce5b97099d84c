package policy

import (
	"fmt"
	"time"

	"github.com/sallyport/sallyport/api/v1alpha1"
)

// riskyLifetime is the token lifetime beyond which admission warns: a
// credential that outlives a typical task is a credential worth stealing.
const riskyLifetime = time.Hour

// ConnectionWarnings lists settings of a ConnectionPolicy that are legal but
// widen what a stolen or misused credential can do.
func ConnectionWarnings(cp *v1alpha1.ConnectionPolicy) []string {
	var out []string
	for i, r := range cp.Spec.Reach {
		for _, s := range r.Scopes {
			if s == "*" {
				out = append(out, fmt.Sprintf(`spec.reach[%d] (class %q): scope "*" sets no scope ceiling; list the scopes this connection needs`, i, r.Class))
				break
			}
		}
	}
	if d := cp.Spec.MaxTokenLifetime.Duration; d > riskyLifetime {
		out = append(out, fmt.Sprintf("spec.maxTokenLifetime: %s is longer than %s; short-lived credentials limit what a stolen token is worth", d, riskyLifetime))
	}
	if t := cp.Spec.Token; t != nil && t.ExpirationSeconds != nil && *t.ExpirationSeconds > int64(riskyLifetime/time.Second) {
		out = append(out, fmt.Sprintf("spec.token.expirationSeconds: %d is longer than %s; short-lived credentials limit what a stolen token is worth", *t.ExpirationSeconds, riskyLifetime))
	}
	return out
}

// ResourceWarnings lists settings of a ResourcePolicy that are legal but
// risky.
func ResourceWarnings(rp *v1alpha1.ResourcePolicy) []string {
	if rp.Spec.Classification != v1alpha1.ClassificationRestricted {
		return nil
	}
	var out []string
	for i, r := range rp.Spec.Rules {
		if r.Effect != v1alpha1.EffectAllow {
			continue
		}
		for _, a := range r.Actions {
			if a == "*" {
				out = append(out, fmt.Sprintf(`spec.rules[%d] (rule %q): action "*" on a restricted service allows every action; list the actions`, i, r.Name))
				break
			}
		}
	}
	return out
}
