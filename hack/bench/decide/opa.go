package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/sallyport/sallyport/api/v1alpha1"
	"github.com/sallyport/sallyport/internal/policy"
)

// The files writeOPA writes into -opa-dir; hack/bench/opa/policy.rego reads
// data.bench.
const (
	// OPADataFile holds the policies and the key as OPA data.
	OPADataFile = "data.json"
	// OPAInputFile is the request body for OPA's data API: the /v1/decide
	// body as {"input": …}.
	OPAInputFile = "input.json"
)

// opaData is data.bench: the same policies as the store, keyed the way
// the engine looks them up (connections by audience, resources by
// namespace and service), with classifications as their ordered levels.
type opaData struct {
	Issuer      string                            `json:"issuer"`
	JWKS        string                            `json:"jwks"`
	Connections map[string]opaConnection          `json:"connections"`
	Resources   map[string]map[string]opaResource `json:"resources"`
}

type opaConnection struct {
	Policy                  string              `json:"policy"`
	Identity                string              `json:"identity"`
	MaxTokenLifetimeSeconds int64               `json:"maxTokenLifetimeSeconds"`
	Reach                   map[string]opaReach `json:"reach"`
	// MaxAgeSeconds is the condition connectionWhen.
	MaxAgeSeconds int64 `json:"maxAgeSeconds"`
}

type opaReach struct {
	Scopes            []string `json:"scopes"`
	MaxClassification int      `json:"maxClassification"`
}

type opaResource struct {
	Policy         string    `json:"policy"`
	Class          string    `json:"class"`
	Classification int       `json:"classification"`
	Deny           []opaRule `json:"deny"`
	Allow          []opaRule `json:"allow"`
}

type opaRule struct {
	Name        string   `json:"name"`
	Actions     []string `json:"actions"`
	Resources   []string `json:"resources"`
	Scopes      []string `json:"scopes"`
	Connections []string `json:"connections"`
	// SourceIPPrefix, when set, is the condition readWhen.
	SourceIPPrefix string `json:"sourceIPPrefix,omitempty"`
}

// writeOPA writes OPA's data and input for the fixture into dir.
func writeOPA(dir string, fx *fixture) error {
	d := opaData{
		Issuer:      issuer,
		JWKS:        string(fx.keys.jwks),
		Connections: make(map[string]opaConnection, len(fx.conns)),
		Resources:   make(map[string]map[string]opaResource, len(fx.ress)),
	}
	for _, cp := range fx.conns {
		c := opaConnection{
			Policy:                  cp.Namespace + "/" + cp.Name,
			Identity:                policy.Identity(cp.Namespace, cp.Spec.ServiceAccountName),
			MaxTokenLifetimeSeconds: int64(cp.Spec.MaxTokenLifetime.Duration / time.Second),
			Reach:                   map[string]opaReach{},
			MaxAgeSeconds:           maxAgeSeconds,
		}
		for _, r := range cp.Spec.Reach {
			c.Reach[string(r.Class)] = opaReach{Scopes: scopes(r.Scopes), MaxClassification: int(policy.ParseLevel(r.MaxClassification))}
		}
		d.Connections[policy.DefaultAudience(cp.Namespace, cp.Name)] = c
	}
	for _, rp := range fx.ress {
		r := opaResource{
			Policy:         rp.Namespace + "/" + rp.Name,
			Class:          string(rp.Spec.Class),
			Classification: int(policy.ParseLevel(rp.Spec.Classification)),
			Deny:           []opaRule{},
			Allow:          []opaRule{},
		}
		for _, rule := range rp.Spec.Rules {
			or := opaRule{Name: rule.Name, Actions: rule.Actions, Resources: rule.Resources, Scopes: scopes(rule.Scopes), Connections: []string{}}
			for _, c := range rule.Connections {
				or.Connections = append(or.Connections, c.Namespace+"/"+c.Name)
			}
			switch {
			case rule.When == readWhen:
				or.SourceIPPrefix = sourceIPPrefix
			case rule.When != "":
				return fmt.Errorf("rule %q of %s has a condition the Rego policy does not know", rule.Name, r.Policy)
			}
			if rule.Effect == v1alpha1.EffectDeny {
				r.Deny = append(r.Deny, or)
			} else {
				r.Allow = append(r.Allow, or)
			}
		}
		if d.Resources[rp.Namespace] == nil {
			d.Resources[rp.Namespace] = map[string]opaResource{}
		}
		d.Resources[rp.Namespace][rp.Spec.Service] = r
	}
	data, err := json.Marshal(map[string]any{"bench": d})
	if err != nil {
		return fmt.Errorf("encode OPA data: %w", err)
	}
	input := append(append([]byte(`{"input":`), fx.body...), '}')
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("OPA directory: %w", err)
	}
	for name, b := range map[string][]byte{OPADataFile: data, OPAInputFile: input} {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			return fmt.Errorf("write OPA %s: %w", name, err)
		}
	}
	return nil
}

func scopes(s []v1alpha1.Scope) []string {
	out := make([]string, len(s))
	for i := range s {
		out[i] = string(s[i])
	}
	return out
}
