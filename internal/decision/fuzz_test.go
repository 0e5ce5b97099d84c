package decision

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/sallyport/sallyport/internal/expr"
)

func FuzzCanonicalPath(f *testing.F) {
	for _, s := range []string{
		"", "/", "/a/b", "/a/b/", "//a///b", "/a?b=/../c", "/a%2fb", "/a%2Fb", "/%2e%2e/x", "/a/%2E",
		"/a%252e%252e", "/a%", "/a%4", "/a%zz", "/%C3%A9", "/%FF", "/a\\..\\b", "/..;/x", "/a#/../b",
		"/a%3F/..", "/%00", "a/b", "/a/./b", "/.../", "/%25%32%46", "/%2525",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		out, err := CanonicalPath(in)
		if err != nil {
			if !errors.Is(err, ErrMalformedPath) || out != "" {
				t.Fatalf("CanonicalPath(%q) = %q, %v", in, out, err)
			}
			return
		}
		if !strings.HasPrefix(out, "/") || strings.Contains(out, "//") ||
			strings.Contains(out+"/", "/./") || strings.Contains(out+"/", "/../") {
			t.Fatalf("CanonicalPath(%q) = %q: not canonical", in, out)
		}
		if !utf8.ValidString(out) || len(out) > expr.MaxObjectNameLength {
			t.Fatalf("CanonicalPath(%q) = %q: invalid or too long", in, out)
		}
		for i := 0; i < len(out); i++ {
			if out[i] < 0x20 || out[i] == 0x7f {
				t.Fatalf("CanonicalPath(%q) = %q: control character", in, out)
			}
		}
		// The path is decoded exactly once, so a canonical path with "%" or
		// "?" in it is not its own canonical form; re-encoded, it is.
		if again, err := CanonicalPath(escapePath(out)); err != nil || again != out {
			t.Fatalf("CanonicalPath(escape(%q)) = %q, %v; want it unchanged", out, again, err)
		}
		if !strings.ContainsAny(out, "%?") {
			if again, err := CanonicalPath(out); err != nil || again != out {
				t.Fatalf("CanonicalPath(CanonicalPath(%q)) = %q, %v; want %q", in, again, err, out)
			}
		}
		// The path without its query and percent-encoding decodes to the
		// same path: decoding is over the bytes, not their spelling.
		if strings.IndexByte(in, '%') < 0 && in != "" {
			raw, _, _ := strings.Cut(in, "?")
			if !strings.Contains(raw, "//") && raw != out {
				t.Fatalf("CanonicalPath(%q) = %q; want the raw path %q", in, out, raw)
			}
		}
	})
}

// escapePath percent-encodes the bytes canonicalisation would otherwise
// read as syntax.
func escapePath(p string) string {
	var b strings.Builder
	for i := 0; i < len(p); i++ {
		switch c := p[i]; c {
		case '%', '?':
			b.WriteString("%")
			b.WriteString(strings.ToUpper(string("0123456789abcdef"[c>>4]) + string("0123456789abcdef"[c&0xf])))
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

func FuzzPeekAudience(f *testing.F) {
	for _, s := range []string{
		`{"aud":"a"}`, `{"aud":["a"]}`, `{"aud":["a","b"]}`, `{"aud":"a","aud":"b"}`, `{"\u0061ud":"a"}`,
		`{"aud":"\u0061"}`, `{"x":{"aud":"y"},"aud":"a"}`, `{"aud":null}`, `{}`, `[]`, `{"aud":[1]}`,
		`{"aud":"a",}`, `{"aud":"a"} x`, `{"a":[[[[[[]]]]]],"aud":"b"}`, `{"aud":"a\"}`, `{"aud":"\ud800"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, payload []byte) {
		tok := "e30." + base64.RawURLEncoding.EncodeToString(payload) + ".c2ln"
		aud, err := peekAudience(tok)
		if err != nil {
			if !errors.Is(err, errNotJWT) || aud != "" {
				t.Fatalf("peekAudience(%q) = %q, %v", payload, aud, err)
			}
		} else if aud == "" || len(aud) > expr.MaxAudienceLength {
			t.Fatalf("peekAudience(%q) = %q", payload, aud)
		}
		if !json.Valid(payload) {
			return
		}
		// On valid JSON, agree with encoding/json read case-sensitively
		// (through a map), except that a repeated "aud" is refused.
		var claims map[string]json.RawMessage
		if json.Unmarshal(payload, &claims) != nil {
			if err == nil {
				t.Fatalf("peekAudience(%q) = %q for a payload that is not an object", payload, aud)
			}
			return
		}
		want, ok := "", false
		if raw, has := claims["aud"]; has {
			var s string
			var l []string
			switch {
			case json.Unmarshal(raw, &s) == nil:
				want, ok = s, s != ""
			case json.Unmarshal(raw, &l) == nil && len(l) == 1 && bytes.HasPrefix(bytes.TrimSpace(raw), []byte("[")):
				want, ok = l[0], l[0] != ""
			}
			ok = ok && len(want) <= expr.MaxAudienceLength
		}
		switch {
		case err == nil && (!ok || aud != want):
			t.Fatalf("peekAudience(%q) = %q; encoding/json reads %q (usable %v)", payload, aud, want, ok)
		case err != nil && ok && !strings.Contains(err.Error(), "twice") && utf8.ValidString(want):
			t.Fatalf("peekAudience(%q) = %v; encoding/json reads %q", payload, err, want)
		}
	})
}
