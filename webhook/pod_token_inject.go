package webhook

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"path"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/validation"
)

// Where Projected-mode tokens appear in a pod.
const (
	// PodTokenMountDir holds one directory per connection the pod asks for.
	PodTokenMountDir = "/var/run/secrets/sallyport.dev" //nolint:gosec // a directory, not a credential
	// PodTokenFile is the token's file name in a connection's directory.
	PodTokenFile = "token"
	// PodTokenVolumePrefix starts the name of every volume the pod token
	// webhook injects.
	PodTokenVolumePrefix = "sallyport-"
	// MaxPodConnections is the most connections one pod may ask for.
	MaxPodConnections = 8
)

// PodTokenVolumeName is the name of the projected volume that carries a
// policy's token: "sallyport-<policy>" when that is a DNS label (at most 63
// characters, no dots), otherwise a shortened name with dots turned into
// dashes and a hash of the full policy name appended, so it is deterministic
// and distinct policies get distinct names.
func PodTokenVolumeName(policyName string) string {
	name := PodTokenVolumePrefix + policyName
	if len(name) <= validation.DNS1123LabelMaxLength && !strings.Contains(policyName, ".") {
		return name
	}
	sum := sha256.Sum256([]byte(policyName))
	suffix := hex.EncodeToString(sum[:])[:10]
	stem := strings.ReplaceAll(policyName, ".", "-")
	if limit := validation.DNS1123LabelMaxLength - len(PodTokenVolumePrefix) - 1 - len(suffix); len(stem) > limit {
		stem = stem[:limit]
	}
	stem = strings.TrimRight(stem, "-")
	return PodTokenVolumePrefix + stem + "-" + suffix
}

// PodTokenMountPath is the directory a policy's token is mounted at in every
// container of a pod that asks for it; the token is the file PodTokenFile in
// it.
func PodTokenMountPath(policyName string) string {
	return path.Join(PodTokenMountDir, policyName)
}

// podToken is one projected token a pod asks for: the policy it serves and
// the token's audience and requested lifetime.
type podToken struct {
	Policy            string
	Audience          string
	ExpirationSeconds int64
}

func (t podToken) volumeName() string { return PodTokenVolumeName(t.Policy) }

// volume is the projected volume that carries the token. The API server
// defaults defaultMode; the kubelet writes the token and rotates it.
func (t podToken) volume() corev1.Volume {
	es := t.ExpirationSeconds
	return corev1.Volume{
		Name: t.volumeName(),
		VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
			Sources: []corev1.VolumeProjection{{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{
				Audience:          t.Audience,
				ExpirationSeconds: &es,
				Path:              PodTokenFile,
			}}},
		}},
	}
}

func (t podToken) mount() corev1.VolumeMount {
	return corev1.VolumeMount{Name: t.volumeName(), MountPath: PodTokenMountPath(t.Policy), ReadOnly: true}
}

// isTokenVolume says whether v is shaped like a volume this webhook
// injects: a projected volume with one serviceAccountToken source and
// nothing else. Only such a volume is replaced when its values are stale.
func isTokenVolume(v *corev1.Volume) bool {
	p := v.Projected
	if p == nil || len(p.Sources) != 1 || p.Sources[0].ServiceAccountToken == nil {
		return false
	}
	s := p.Sources[0]
	return s.Secret == nil && s.ConfigMap == nil && s.DownwardAPI == nil && s.ClusterTrustBundle == nil && s.PodCertificate == nil
}

// volumeMatches says whether v already carries t's token as t would inject
// it. defaultMode is the API server's default or the pod author's choice and
// is left alone.
func (t podToken) volumeMatches(v *corev1.Volume) bool {
	if !isTokenVolume(v) {
		return false
	}
	s := v.Projected.Sources[0].ServiceAccountToken
	return s.Audience == t.Audience && s.Path == PodTokenFile &&
		s.ExpirationSeconds != nil && *s.ExpirationSeconds == t.ExpirationSeconds
}

// mountMatches says whether m mounts t's token as t would: read-only, the
// whole volume. Propagation settings are left alone.
func (t podToken) mountMatches(m *corev1.VolumeMount) bool {
	return m.Name == t.volumeName() && m.MountPath == PodTokenMountPath(t.Policy) &&
		m.ReadOnly && m.SubPath == "" && m.SubPathExpr == ""
}

// injectPodTokens gives pod a projected volume per token and mounts it,
// read-only, in every container and init container. What is already in
// place is left as it is, so a second pass changes nothing; a token volume
// or mount of sallyport's shape with stale values is brought up to date.
// It reports whether pod changed. A volume name or mount path the pod
// already uses for something else is an error, and pod is then left
// partly changed: callers discard it.
func injectPodTokens(pod *corev1.Pod, tokens []podToken) (bool, error) {
	seen := make(map[string]string, len(tokens))
	for _, t := range tokens {
		if other, ok := seen[t.volumeName()]; ok {
			return false, fmt.Errorf("ConnectionPolicies %q and %q map to the same volume name %q; rename one of them", other, t.Policy, t.volumeName())
		}
		seen[t.volumeName()] = t.Policy
	}

	changed := false
	for _, t := range tokens {
		c, err := injectVolume(&pod.Spec, t)
		if err != nil {
			return false, err
		}
		changed = changed || c
		for i := range pod.Spec.InitContainers {
			c, err := injectMount(&pod.Spec.InitContainers[i], "init container", t)
			if err != nil {
				return false, err
			}
			changed = changed || c
		}
		for i := range pod.Spec.Containers {
			c, err := injectMount(&pod.Spec.Containers[i], "container", t)
			if err != nil {
				return false, err
			}
			changed = changed || c
		}
	}
	return changed, nil
}

func injectVolume(spec *corev1.PodSpec, t podToken) (bool, error) {
	for i := range spec.Volumes {
		v := &spec.Volumes[i]
		if v.Name != t.volumeName() {
			continue
		}
		switch {
		case t.volumeMatches(v):
			return false, nil
		case isTokenVolume(v):
			// Stale values, say from a pod spec copied from a pod admitted
			// under an older version of the policy: the policy decides.
			// The file mode stays the pod author's.
			mode := v.Projected.DefaultMode
			spec.Volumes[i] = t.volume()
			spec.Volumes[i].Projected.DefaultMode = mode
			return true, nil
		default:
			return false, fmt.Errorf("the pod already has a volume %q that is not a projected ServiceAccount token; that name is reserved for ConnectionPolicy %q's token", v.Name, t.Policy)
		}
	}
	spec.Volumes = append(spec.Volumes, t.volume())
	return true, nil
}

func injectMount(c *corev1.Container, kind string, t podToken) (bool, error) {
	want := t.mount()
	for i := range c.VolumeMounts {
		m := &c.VolumeMounts[i]
		if m.MountPath != want.MountPath {
			continue
		}
		switch {
		case t.mountMatches(m):
			return false, nil
		case m.Name == want.Name:
			c.VolumeMounts[i] = want
			return true, nil
		default:
			return false, fmt.Errorf("%s %q already mounts volume %q at %s, where ConnectionPolicy %q's token goes", kind, c.Name, m.Name, m.MountPath, t.Policy)
		}
	}
	c.VolumeMounts = append(c.VolumeMounts, want)
	return true, nil
}

// parseConnections reads the value of the sallyport.dev/connections
// annotation: policy names separated by commas, blanks around them ignored,
// each a DNS subdomain name, at most MaxPodConnections distinct ones. A name
// given twice counts once. The names keep their order.
func parseConnections(value string) ([]string, error) {
	if strings.TrimSpace(value) == "" {
		return nil, fmt.Errorf("names no ConnectionPolicy; want <policy>[,<policy>]")
	}
	var names []string
	seen := map[string]bool{}
	for i, part := range strings.Split(value, ",") {
		name := strings.TrimSpace(part)
		if name == "" {
			return nil, fmt.Errorf("entry %d is empty; want <policy>[,<policy>]", i+1)
		}
		if errs := validation.IsDNS1123Subdomain(name); len(errs) > 0 {
			return nil, fmt.Errorf("%q is not a ConnectionPolicy name: %s", name, strings.Join(errs, "; "))
		}
		if seen[name] {
			continue
		}
		seen[name] = true
		names = append(names, name)
	}
	if len(names) > MaxPodConnections {
		return nil, fmt.Errorf("names %d ConnectionPolicies; a pod may ask for at most %d", len(names), MaxPodConnections)
	}
	return names, nil
}
