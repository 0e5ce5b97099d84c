package policy

import (
	"slices"
	"testing"
	"time"

	"github.com/sallyport/sallyport/api/v1alpha1"
)

func TestConnectionWarnings(t *testing.T) {
	tests := []struct {
		name string
		edit func(*v1alpha1.ConnectionPolicySpec)
		want []string
	}{
		{"none", nil, nil},
		{"one hour is fine", func(s *v1alpha1.ConnectionPolicySpec) {
			s.MaxTokenLifetime.Duration = time.Hour
			s.Token = &v1alpha1.TokenSpec{Mode: v1alpha1.TokenModeProjected, ExpirationSeconds: int64p(3600)}
		}, nil},
		{"any scope", func(s *v1alpha1.ConnectionPolicySpec) {
			s.Reach = append(s.Reach, v1alpha1.Reach{Class: "audit", Scopes: []v1alpha1.Scope{"a", "*", "*"}})
		}, []string{`spec.reach[1] (class "audit"): scope "*" sets no scope ceiling; list the scopes this connection needs`}},
		{"long lifetimes", func(s *v1alpha1.ConnectionPolicySpec) {
			s.MaxTokenLifetime.Duration = 2 * time.Hour
			s.Token = &v1alpha1.TokenSpec{Mode: v1alpha1.TokenModeSecret, ExpirationSeconds: int64p(3601)}
		}, []string{
			"spec.maxTokenLifetime: 2h0m0s is longer than 1h0m0s; short-lived credentials limit what a stolen token is worth",
			"spec.token.expirationSeconds: 3601 is longer than 1h0m0s; short-lived credentials limit what a stolen token is worth",
		}},
		{"huge expirationSeconds", func(s *v1alpha1.ConnectionPolicySpec) {
			s.Token = &v1alpha1.TokenSpec{Mode: v1alpha1.TokenModeSecret, ExpirationSeconds: int64p(9223372037)}
		}, []string{"spec.token.expirationSeconds: 9223372037 is longer than 1h0m0s; short-lived credentials limit what a stolen token is worth"}},
	}
	for _, tt := range tests {
		if got := ConnectionWarnings(connectionPolicy(tt.edit)); !slices.Equal(got, tt.want) {
			t.Errorf("%s: ConnectionWarnings = %q, want %q", tt.name, got, tt.want)
		}
	}
}

func TestResourceWarnings(t *testing.T) {
	anyAction := func(s *v1alpha1.ResourcePolicySpec) {
		s.Rules[0].Actions = []string{"GET", "*"}
		s.Rules = append(s.Rules, v1alpha1.Rule{Name: "deny-all", Effect: v1alpha1.EffectDeny, Actions: []string{"*"}, Resources: []string{"/**"}})
	}
	tests := []struct {
		name string
		edit func(*v1alpha1.ResourcePolicySpec)
		want []string
	}{
		{"none", nil, nil},
		{"any action on a confidential service", anyAction, nil},
		{"any action on a restricted service", func(s *v1alpha1.ResourcePolicySpec) {
			anyAction(s)
			s.Classification = v1alpha1.ClassificationRestricted
		}, []string{`spec.rules[0] (rule "read"): action "*" on a restricted service allows every action; list the actions`}},
		{"listed actions on a restricted service", func(s *v1alpha1.ResourcePolicySpec) {
			s.Classification = v1alpha1.ClassificationRestricted
		}, nil},
	}
	for _, tt := range tests {
		if got := ResourceWarnings(resourcePolicy(tt.edit)); !slices.Equal(got, tt.want) {
			t.Errorf("%s: ResourceWarnings = %q, want %q", tt.name, got, tt.want)
		}
	}
}
