package policy

import (
	"slices"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/types"
)

func TestOlder(t *testing.T) {
	t1 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	m := func(created time.Time, ns, name string) *Meta {
		return &Meta{Created: created, Ref: types.NamespacedName{Namespace: ns, Name: name}}
	}
	tests := []struct {
		name string
		a, b *Meta
		want bool // Older(a, b); Older(b, a) must be the opposite
	}{
		{"older creation wins over names", m(t1, "z", "z"), m(t1.Add(time.Second), "a", "a"), true},
		{"same instant in another zone is a tie", m(t1, "a", "b"), m(t1.In(time.FixedZone("x", 3600)), "a", "c"), true},
		{"tie: smaller namespace", m(t1, "a", "z"), m(t1, "b", "a"), true},
		{"tie: smaller name", m(t1, "a", "a"), m(t1, "a", "b"), true},
		{"namespace before name, no concatenation", m(t1, "a", "zz"), m(t1, "a-b", "a"), true},
	}
	for _, tt := range tests {
		if got := Older(tt.a, tt.b); got != tt.want {
			t.Errorf("%s: Older(a, b) = %v", tt.name, got)
		}
		if got := Older(tt.b, tt.a); got == tt.want {
			t.Errorf("%s: Older(b, a) = %v", tt.name, got)
		}
	}
	same := m(t1, "a", "a")
	if Older(same, same) {
		t.Error("Older(x, x) = true")
	}

	// Sorting by Older gives one order whatever the input order.
	metas := []*Meta{m(t1, "b", "x"), m(t1.Add(-time.Hour), "z", "z"), m(t1, "a", "y"), m(t1, "a", "x")}
	slices.SortFunc(metas, func(a, b *Meta) int {
		if Older(a, b) {
			return -1
		}
		if Older(b, a) {
			return 1
		}
		return 0
	})
	var got []string
	for _, x := range metas {
		got = append(got, x.Ref.String())
	}
	if want := []string{"z/z", "a/x", "a/y", "b/x"}; !slices.Equal(got, want) {
		t.Errorf("sorted = %v, want %v", got, want)
	}
}
