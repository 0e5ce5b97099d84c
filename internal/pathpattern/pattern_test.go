package pathpattern

import (
	"slices"
	"strings"
	"testing"
)

func TestCompile(t *testing.T) {
	tests := []struct {
		pattern string
		wantErr string // substring; empty means valid
	}{
		{"/", ""},
		{"/**", ""},
		{"/*", ""},
		{"/entries", ""},
		{"/entries/*", ""},
		{"/entries/**", ""},
		{"/a/**/b/*/c", ""},
		{"/a/", ""},          // trailing slash
		{"/a/*/", ""},        // trailing slash after a wildcard
		{"/a.b/..c/c..", ""}, // dots inside a segment are literal
		{"/%2F/?x=1", ""},    // other bytes are literal
		{"", `must start with "/"`},
		{"entries", `must start with "/"`},
		{"*", `must start with "/"`},
		{"**/a", `must start with "/"`},
		{"/a*", `segment 1 ("a*"): "*" and "**" must be a whole segment`},
		{"/a/*b", `segment 2 ("*b"): "*" and "**" must be a whole segment`},
		{"/a/***", `segment 2 ("***")`},
		{"/a/b**", `segment 2 ("b**")`},
		{"/.", `segment 1: "." segments are not allowed`},
		{"/a/..", `segment 2: ".." segments are not allowed`},
		{"/a/./b", `segment 2: "." segments are not allowed`},
		{"//", "segment 1 is empty"},
		{"//a", "segment 1 is empty"},
		{"/a//b", "segment 2 is empty"},
		{"/a//", "segment 2 is empty"},
	}
	for _, tt := range tests {
		t.Run(tt.pattern, func(t *testing.T) {
			p, err := Compile(tt.pattern)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Compile(%q): %v", tt.pattern, err)
				}
				if p.String() != tt.pattern {
					t.Errorf("String() = %q", p.String())
				}
				return
			}
			if err == nil {
				t.Fatalf("Compile(%q) succeeded, want error %q", tt.pattern, tt.wantErr)
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("Compile(%q) error %q, want %q", tt.pattern, err, tt.wantErr)
			}
		})
	}
}

func TestSplit(t *testing.T) {
	tests := []struct {
		path string
		want []string
	}{
		{"/", nil},
		{"", nil},
		{"/a", []string{"a"}},
		{"/a/b", []string{"a", "b"}},
		{"/a/", []string{"a", ""}},
		{"/a//b", []string{"a", "", "b"}},
		{"a/b", []string{"a", "b"}},
	}
	for _, tt := range tests {
		if got := Split(tt.path); !slices.Equal(got, tt.want) || (tt.want == nil) != (got == nil) {
			t.Errorf("Split(%q) = %#v, want %#v", tt.path, got, tt.want)
		}
	}
}

func TestMatchPath(t *testing.T) {
	tests := []struct {
		pattern string
		match   []string
		noMatch []string
	}{
		{"/", []string{"/"}, []string{"/a", "//"}},
		{"/entries", []string{"/entries"}, []string{"/", "/entries/", "/entries/1", "/Entries", "/entriesx"}},
		{"/a/", []string{"/a/"}, []string{"/a", "/a/b"}},
		{"/*", []string{"/a", "/entries"}, []string{"/", "/a/b", "/a/"}},
		{"/entries/*", []string{"/entries/1", "/entries/abc"}, []string{"/entries", "/entries/", "/entries/1/2", "/other/1"}},
		{"/*/*", []string{"/a/b"}, []string{"/a", "/a/b/c", "/a/"}},
		{"/**", []string{"/", "/a", "/a/b/c", "/a/"}, nil},
		{"/entries/**", []string{"/entries", "/entries/1", "/entries/1/2/3", "/entries/"}, []string{"/", "/entriesx", "/other/entries"}},
		{"/**/history", []string{"/history", "/entries/history", "/a/b/c/history"}, []string{"/history/x", "/entries/historyx", "/"}},
		{"/entries/*/history", []string{"/entries/1/history"}, []string{"/entries/history", "/entries/1/2/history", "/entries/1/history/x"}},
		{"/entries/**/history", []string{"/entries/history", "/entries/1/history", "/entries/1/2/3/history"}, []string{"/entries/1/history/2", "/entries"}},
		{"/a/**/b/**/c", []string{"/a/b/c", "/a/x/b/y/c", "/a/b/b/c", "/a/b/c/b/c", "/a/x/b/y/b/z/c", "/a/b/x/c/c"}, []string{"/a/c", "/a/b", "/a/b/c/d", "/a/x/c", "/a/c/b"}},
		{"/**/*", []string{"/a", "/a/b"}, []string{"/"}},
		{"/*/**", []string{"/a", "/a/b/c"}, []string{"/"}},
		{"/**/**", []string{"/", "/a", "/a/b"}, nil},
		{"/a/*/", []string{"/a/b/"}, []string{"/a/b", "/a//"}},
		{"/**/a/*/c", []string{"/a/b/c", "/x/a/b/c", "/a/a/b/c", "/a/b/a/b/c"}, []string{"/a/b/c/d", "/a/c", "/a/b/b/c"}},
	}
	for _, tt := range tests {
		t.Run(tt.pattern, func(t *testing.T) {
			p, err := Compile(tt.pattern)
			if err != nil {
				t.Fatal(err)
			}
			for _, path := range tt.match {
				if !p.MatchPath(path) {
					t.Errorf("MatchPath(%q) = false, want true", path)
				}
				if !p.Match(Split(path)) {
					t.Errorf("Match(Split(%q)) = false, want true", path)
				}
			}
			for _, path := range tt.noMatch {
				if p.MatchPath(path) {
					t.Errorf("MatchPath(%q) = true, want false", path)
				}
				if p.Match(Split(path)) {
					t.Errorf("Match(Split(%q)) = true, want false", path)
				}
			}
		})
	}
}

// Matching agrees with a plain recursive definition on every pattern and
// path built from a small alphabet.
func TestMatchAgreesWithRecursiveDefinition(t *testing.T) {
	var ref func(pat, path []string) bool
	ref = func(pat, path []string) bool {
		if len(pat) == 0 {
			return len(path) == 0
		}
		switch pat[0] {
		case segAny:
			for i := 0; i <= len(path); i++ {
				if ref(pat[1:], path[i:]) {
					return true
				}
			}
			return false
		case segOne:
			return len(path) > 0 && path[0] != "" && ref(pat[1:], path[1:])
		}
		return len(path) > 0 && path[0] == pat[0] && ref(pat[1:], path[1:])
	}
	// All sequences of up to n items from alphabet.
	seqs := func(alphabet []string, n int) [][]string {
		out := [][]string{nil}
		prev := [][]string{nil}
		for range n {
			var next [][]string
			for _, s := range prev {
				for _, a := range alphabet {
					next = append(next, append(slices.Clone(s), a))
				}
			}
			out = append(out, next...)
			prev = next
		}
		return out
	}
	// Paths include empty segments, which only "**" and an empty literal
	// (a trailing slash) match.
	paths := seqs([]string{"a", "b", ""}, 5)
	checked := 0
	for _, segs := range seqs([]string{"a", "b", "*", "**"}, 4) {
		p, err := Compile("/" + strings.Join(segs, "/"))
		if err != nil {
			t.Fatalf("Compile(%q): %v", "/"+strings.Join(segs, "/"), err)
		}
		for _, path := range paths {
			want := ref(Split(p.String()), path)
			if got := p.Match(path); got != want {
				t.Errorf("%q.Match(%q) = %v, want %v", p, path, got, want)
			}
			joined := "/" + strings.Join(path, "/")
			if !slices.Equal(Split(joined), path) {
				continue // [""] and "/" are not the same path
			}
			if got := p.MatchPath(joined); got != want {
				t.Errorf("%q.MatchPath(%q) = %v, want %v", p, joined, got, want)
			}
			checked++
		}
	}
	if checked < 10000 {
		t.Fatalf("checked only %d cases", checked)
	}
}

// A pattern of many "**" against a long path that almost matches would take
// exponential time with naive backtracking; this one finishes at once.
func TestMatchPathological(t *testing.T) {
	p, err := Compile("/" + strings.Repeat("**/a/", 30) + "b")
	if err != nil {
		t.Fatal(err)
	}
	path := make([]string, 2000)
	for i := range path {
		path[i] = "a"
	}
	if p.Match(path) {
		t.Error("matched a path without b")
	}
	path[len(path)-1] = "b"
	if !p.Match(path) {
		t.Error("did not match a path of a's ending in b")
	}
	if p.Match(path[len(path)-30:]) {
		t.Error("matched with too few a's")
	}
	if !p.Match(path[len(path)-31:]) {
		t.Error("did not match exactly thirty a's then b")
	}

	many, err := Compile("/" + strings.Repeat("**/", 200) + "z")
	if err != nil {
		t.Fatal(err)
	}
	if many.MatchPath("/" + strings.Repeat("a/", 2000) + "y") {
		t.Error("matched a path without z")
	}
	if !many.MatchPath("/" + strings.Repeat("a/", 2000) + "z") {
		t.Error("did not match a path ending in z")
	}
}
