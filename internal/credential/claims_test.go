package credential

import (
	"encoding/base64"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestParseClaimsAudienceForms(t *testing.T) {
	for name, tc := range map[string]struct {
		aud  any
		want []string
	}{
		"string":       {aud: "sallyport.dev/billing/ledger", want: []string{"sallyport.dev/billing/ledger"}},
		"array of one": {aud: []string{"a"}, want: []string{"a"}},
		"array":        {aud: []string{"a", "b"}, want: []string{"a", "b"}},
		"empty array":  {aud: []string{}, want: []string{}},
		"absent":       {aud: nil, want: nil},
	} {
		t.Run(name, func(t *testing.T) {
			c := claims(tc.aud, nil)
			if tc.aud == nil {
				delete(c, "aud")
			}
			got, err := ParseClaims(unsigned(t, c))
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got.Audiences, tc.want) || (tc.want == nil) != (got.Audiences == nil) {
				t.Fatalf("Audiences = %#v, want %#v", got.Audiences, tc.want)
			}
		})
	}
}

func TestParseClaimsFields(t *testing.T) {
	tok := b64json(t, map[string]any{"alg": "RS256", "kid": "key-1", "typ": "JWT"}) + "." +
		b64json(t, map[string]any{
			"iss": testIssuer, "sub": "system:serviceaccount:a:b", "aud": "x", "jti": "j-1",
			"iat": 1900000000, "nbf": 1899999990.5, "exp": 1900000600,
			"kubernetes.io": map[string]any{"namespace": "a"},
		}) + ".c2ln"
	c, err := ParseClaims(tok)
	if err != nil {
		t.Fatal(err)
	}
	want := Claims{
		Issuer: testIssuer, Subject: "system:serviceaccount:a:b", Audiences: []string{"x"}, ID: "j-1",
		IssuedAt:  time.Unix(1900000000, 0).UTC(),
		NotBefore: time.Unix(1899999990, 5e8).UTC(),
		ExpiresAt: time.Unix(1900000600, 0).UTC(),
		KeyID:     "key-1", Algorithm: "RS256",
	}
	if c.Issuer != want.Issuer || c.Subject != want.Subject || c.ID != want.ID || c.KeyID != want.KeyID ||
		c.Algorithm != want.Algorithm || !slices.Equal(c.Audiences, want.Audiences) ||
		!c.IssuedAt.Equal(want.IssuedAt) || !c.NotBefore.Equal(want.NotBefore) || !c.ExpiresAt.Equal(want.ExpiresAt) {
		t.Fatalf("claims = %+v, want %+v", *c, want)
	}

	// Absent times are zero.
	c, err = ParseClaims(unsigned(t, claims("x", map[string]any{"iat": nil, "nbf": nil, "exp": nil})))
	if err != nil {
		t.Fatal(err)
	}
	if !c.IssuedAt.IsZero() || !c.NotBefore.IsZero() || !c.ExpiresAt.IsZero() {
		t.Fatalf("absent times not zero: %+v", *c)
	}
}

func TestParseClaimsMalformed(t *testing.T) {
	enc := base64.RawURLEncoding.EncodeToString
	hdr := b64json(t, map[string]any{"alg": "ES256", "kid": "k"})
	pay := b64json(t, claims("aud", nil))
	for name, tok := range map[string]string{
		"empty":                       "",
		"one segment":                 pay,
		"two segments":                hdr + "." + pay,
		"four segments":               hdr + "." + pay + ".c2ln.c2ln",
		"empty signature":             hdr + "." + pay + ".",
		"empty header":                "." + pay + ".c2ln",
		"padded base64":               hdr + "." + pay + ".c2lnbg==",
		"standard base64 alphabet":    hdr + "." + pay + ".c2l+/w",
		"non-canonical trailing bits": hdr + "." + pay + ".c2lnbh",
		"header not JSON":             enc([]byte("not json")) + "." + pay + ".c2ln",
		"header array":                enc([]byte(`["alg"]`)) + "." + pay + ".c2ln",
		"header without alg":          b64json(t, map[string]any{"kid": "k"}) + "." + pay + ".c2ln",
		"header alg not string":       b64json(t, map[string]any{"alg": 256}) + "." + pay + ".c2ln",
		"header with crit":            b64json(t, map[string]any{"alg": "ES256", "crit": []string{"exp"}}) + "." + pay + ".c2ln",
		"payload not JSON":            hdr + "." + enc([]byte("{{{")) + ".c2ln",
		"payload array":               hdr + "." + enc([]byte(`[1,2]`)) + ".c2ln",
		"payload trailing data":       hdr + "." + enc([]byte(`{"iss":"x"} {}`)) + ".c2ln",
		"aud number":                  hdr + "." + b64json(t, claims(42, nil)) + ".c2ln",
		"aud array of numbers":        hdr + "." + b64json(t, claims([]int{1, 2}, nil)) + ".c2ln",
		"aud object":                  hdr + "." + b64json(t, claims(map[string]any{"a": 1}, nil)) + ".c2ln",
		"iss number":                  hdr + "." + b64json(t, claims("a", map[string]any{"iss": 7})) + ".c2ln",
		"exp string":                  hdr + "." + b64json(t, claims("a", map[string]any{"exp": "1900000000"})) + ".c2ln",
		"exp negative":                hdr + "." + b64json(t, claims("a", map[string]any{"exp": -5})) + ".c2ln",
		"exp past year 9999":          hdr + "." + b64json(t, claims("a", map[string]any{"exp": 1e17})) + ".c2ln",
		"iat boolean":                 hdr + "." + b64json(t, claims("a", map[string]any{"iat": true})) + ".c2ln",
		"aud given twice":             hdr + "." + enc([]byte(`{"aud":"a","aud":"b","iss":"x"}`)) + ".c2ln",
		"aud in another case":         hdr + "." + enc([]byte(`{"aud":"a","AUD":"b","iss":"x"}`)) + ".c2ln",
		"only Aud":                    hdr + "." + enc([]byte(`{"Aud":"b","iss":"x"}`)) + ".c2ln",
		"unknown member twice":        hdr + "." + enc([]byte(`{"aud":"a","x":1,"x":2}`)) + ".c2ln",
		"alg given twice":             enc([]byte(`{"alg":"ES256","alg":"none"}`)) + "." + pay + ".c2ln",
		"Kid in another case":         enc([]byte(`{"alg":"ES256","kid":"a","KID":"b"}`)) + "." + pay + ".c2ln",
	} {
		t.Run(name, func(t *testing.T) {
			_, err := ParseClaims(tok)
			expectErr(t, err, ErrInvalid, tok)
		})
	}
}

func TestParseClaimsOversized(t *testing.T) {
	big := strings.Repeat("x", MaxTokenSize)
	tok := unsigned(t, claims("aud", map[string]any{"padding": big}))
	_, err := ParseClaims(tok)
	expectErr(t, err, ErrInvalid, tok)
	if !strings.Contains(err.Error(), "larger than") {
		t.Fatalf("error %q does not say the token is too large", err)
	}

	// Just under the bound parses.
	c := claims("aud", map[string]any{"padding": ""})
	base := len(unsigned(t, c))
	c["padding"] = strings.Repeat("x", (MaxTokenSize-base)*3/4)
	if tok := unsigned(t, c); len(tok) > MaxTokenSize {
		t.Fatalf("test token of %d bytes is over the bound", len(tok))
	} else if _, err := ParseClaims(tok); err != nil {
		t.Fatalf("token of %d bytes: %v", len(tok), err)
	}
}

// FuzzParseClaims feeds arbitrary strings to the claim parser: it never
// panics, refuses with ErrInvalid, never quotes the token in its error, and
// what it accepts is three base64url segments whose claims it read.
func FuzzParseClaims(f *testing.F) {
	enc := base64.RawURLEncoding.EncodeToString
	f.Add(enc([]byte(`{"alg":"RS256","kid":"k"}`)) + "." + enc([]byte(`{"aud":["a"],"sub":"system:serviceaccount:ns:sa","iat":1,"exp":2,"jti":"x"}`)) + ".c2ln")
	f.Add(enc([]byte(`{"alg":"none"}`)) + "." + enc([]byte(`{"aud":"a","exp":1e30}`)) + ".")
	f.Add("a.b.c")
	f.Add("..")
	f.Add(enc([]byte(`{"alg":"RS256"}`)) + "." + enc([]byte(`{"aud":[1,2],"iat":"x"}`)) + ".c2ln")
	f.Fuzz(func(t *testing.T, token string) {
		c, err := ParseClaims(token)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error does not wrap ErrInvalid: %v", err)
			}
			if len(token) >= 8 && strings.Contains(err.Error(), token) {
				t.Fatalf("error quotes the token: %v", err)
			}
			return
		}
		if c == nil {
			t.Fatal("no claims and no error")
		}
		if strings.Count(token, ".") != 2 {
			t.Fatalf("accepted %q, which is not three segments", token)
		}
	})
}
