package jsonenc

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzAppendString checks that AppendString always yields one valid JSON
// string, with no raw line separator, that decodes back to the input (with
// invalid UTF-8 replaced).
func FuzzAppendString(f *testing.F) {
	for _, s := range []string{"", "plain", "quote\"back\\slash", "ctl\x00\x01\x1f\x7f", "nl\n\r\t", "bad\xff\xfeutf8", "sep\u2028\u2029", "ünïcödé 日本"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		b := AppendString(nil, s)
		var got string
		if err := json.Unmarshal(b, &got); err != nil {
			t.Fatalf("AppendString(%q) = %s: invalid JSON: %v", s, b, err)
		}
		if want := strings.ToValidUTF8(s, "\uFFFD"); utf8.ValidString(s) && got != want {
			t.Fatalf("round trip of %q gave %q", s, got)
		}
		if bytes.ContainsAny(b, "\n\r\u2028\u2029") {
			t.Fatalf("AppendString(%q) = %q holds a line separator", s, b)
		}
	})
}
