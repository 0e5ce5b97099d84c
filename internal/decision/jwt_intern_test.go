package decision

import (
	"encoding/base64"
	"testing"

	"github.com/sallyport/sallyport/api/v1alpha1"
)

// With the snapshot at hand, reading the audience of a token for a policy
// that serves allocates nothing: the policy's own string is returned.
// Anything else reads as before.
func TestPeekAudienceInSnapshot(t *testing.T) {
	reach := []v1alpha1.Reach{{Class: "ledger", Scopes: scopes("ledger.read")}}
	st := newStore(t, nil, []*v1alpha1.ConnectionPolicy{
		connPolicy("billing", "to-ledger", "worker", nil, reach, func(s *v1alpha1.ConnectionPolicySpec) { s.Audience = "ledger.example.com" }),
	}, nil)
	snap := st.Snapshot()
	known := tokenFor("ledger.example.com", "j")
	if aud, err := peekAudienceIn(known, snap); err != nil || aud != "ledger.example.com" {
		t.Fatalf("peekAudienceIn = %q, %v", aud, err)
	}
	if n := testing.AllocsPerRun(100, func() { _, _ = peekAudienceIn(known, snap) }); n != 0 {
		t.Errorf("%v allocations reading a served audience, want 0", n)
	}
	for _, tc := range []struct{ token, want string }{
		{tokenFor("other.example.com", "j"), "other.example.com"},
		// An escaped audience is unescaped, not looked up as written.
		{rawJWT(`{"aud":"ledger.example.\u0063om"}`), "ledger.example.com"},
	} {
		if aud, err := peekAudienceIn(tc.token, snap); err != nil || aud != tc.want {
			t.Errorf("peekAudienceIn = %q, %v; want %q", aud, err, tc.want)
		}
		if aud, err := peekAudience(tc.token); err != nil || aud != tc.want {
			t.Errorf("peekAudience = %q, %v; want %q", aud, err, tc.want)
		}
	}
}

// rawJWT is a JWT-shaped token with exactly this payload.
func rawJWT(payload string) string {
	enc := base64.RawURLEncoding.EncodeToString
	return enc([]byte(`{"alg":"RS256"}`)) + "." + enc([]byte(payload)) + ".c2ln"
}
