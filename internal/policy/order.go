package policy

import "strings"

// Older reports whether a holds a contested claim (an audience, a host, a
// service name) against b: the older creation time wins, then the smaller
// namespace/name. Every replica sees the same objects, so every replica
// decides the same way.
func Older(a, b *Meta) bool {
	if !a.Created.Equal(b.Created) {
		return a.Created.Before(b.Created)
	}
	if c := strings.Compare(a.Ref.Namespace, b.Ref.Namespace); c != 0 {
		return c < 0
	}
	return a.Ref.Name < b.Ref.Name
}
