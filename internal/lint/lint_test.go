package lint_test

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/sallyport/sallyport/internal/lint"
	"github.com/sallyport/sallyport/internal/loader"
)

// wantMarker is a comment that says which findings a line must have:
// "# want: SP1004" in YAML, "// want: SP1008" inside a CEL expression.
var wantMarker = regexp.MustCompile(`(?:#|//) want: ((?:SP\d{4}\s*)+)`)

func run(t *testing.T, paths ...string) []lint.Finding {
	t.Helper()
	l, err := loader.New(loader.Options{})
	if err != nil {
		t.Fatal(err)
	}
	set, loadErr := l.Load(context.Background(), paths...)
	return lint.Run(set, loadErr, lint.Options{})
}

// Every case directory in testdata holds small policy files whose lines
// carry want markers; linting the directory must find exactly those
// findings, by file, line and code. There is one case per finding code.
func TestCases(t *testing.T) {
	dirs, err := os.ReadDir("testdata")
	if err != nil {
		t.Fatal(err)
	}
	tested := map[lint.Code]bool{}
	for _, d := range dirs {
		if !d.IsDir() {
			continue
		}
		dir := filepath.Join("testdata", d.Name())
		t.Run(d.Name(), func(t *testing.T) {
			var want []string
			files, _ := filepath.Glob(filepath.Join(dir, "*"))
			for _, f := range files {
				data, err := os.ReadFile(f)
				if err != nil {
					t.Fatal(err)
				}
				for i, line := range strings.Split(string(data), "\n") {
					if m := wantMarker.FindStringSubmatch(line); m != nil {
						for _, c := range strings.Fields(m[1]) {
							want = append(want, filepath.Base(f)+":"+strconv.Itoa(i+1)+": "+c)
						}
					}
				}
			}
			if d.Name() == "sp1001-unreadable-input" {
				want = append(want, ": SP1001")
			}
			var got []string
			for _, f := range run(t, dir) {
				if f.File == "" || f.Code == "" || f.Severity == "" || f.Check == "" || f.Message == "" || strings.Contains(f.Message, "\n") {
					t.Errorf("incomplete finding %+v", f)
				}
				tested[f.Code] = true
				loc := ""
				if rel, err := filepath.Rel(dir, f.File); err == nil && rel != "." {
					loc = rel + ":" + strconv.Itoa(f.Line)
				}
				got = append(got, loc+": "+string(f.Code))
				t.Logf("%s:%d: %s %s: %s (%s %s/%s %s)", f.File, f.Line, f.Severity, f.Code, f.Message, f.Kind, f.Namespace, f.Name, f.Field)
			}
			slices.Sort(got)
			slices.Sort(want)
			if !slices.Equal(got, want) {
				t.Errorf("findings\n  %s\nwant\n  %s", strings.Join(got, "\n  "), strings.Join(want, "\n  "))
			}
		})
	}
	tested[lint.AdmissionWarning] = true // TestAdmissionWarning
	for _, ci := range lint.Codes {
		if !tested[ci.Code] {
			t.Errorf("no case finds %s (%s)", ci.Code, ci.Check)
		}
	}
}

// The sample policies in config/samples are clean: only the documents
// that are not policies (the ServiceAccount, the kustomization) are noted.
func TestSamples(t *testing.T) {
	for _, f := range run(t, filepath.Join("..", "..", "config", "samples")) {
		if f.Code != lint.NotAPolicy {
			t.Errorf("%s:%d: %s %s: %s", f.File, f.Line, f.Severity, f.Code, f.Message)
		}
	}
}

// A warning of the admission webhook that no check covers is reported as
// it is; one a check covers is not reported twice.
func TestAdmissionWarning(t *testing.T) {
	l, err := loader.New(loader.Options{})
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join("testdata", "sp4003-no-scope-ceiling")
	set, loadErr := l.Load(context.Background(), dir)
	if loadErr != nil || len(set.Warnings) != 1 {
		t.Fatalf("load: %v, warnings %v", loadErr, set.Warnings)
	}
	extra := set.Warnings[0]
	extra.Field, extra.FieldLine, extra.Message = "spec.when", 7, "something new"
	set.Warnings = append(set.Warnings, extra)
	var got []string
	for _, f := range lint.Run(set, nil, lint.Options{}) {
		got = append(got, string(f.Code)+" "+f.Field+" "+strconv.Itoa(f.Line)+" "+f.Message)
	}
	if len(got) != 2 || got[0] != "SP4099 spec.when 7 something new" || !strings.HasPrefix(got[1], "SP4003 spec.reach[0].scopes[1] 11 ") {
		t.Errorf("findings = %q", got)
	}
}

func TestDisable(t *testing.T) {
	disable, err := lint.ParseCodes("SP3005, sp2004,broad-connection-selector")
	if err != nil {
		t.Fatal(err)
	}
	l, err := loader.New(loader.Options{})
	if err != nil {
		t.Fatal(err)
	}
	set, loadErr := l.Load(context.Background(), filepath.Join("testdata", "sp3005-unreachable-rule"))
	if fs := lint.Run(set, loadErr, lint.Options{Disable: disable}); len(fs) != 0 {
		t.Errorf("findings = %+v", fs)
	}
	if _, err := lint.ParseCodes("SP9999"); err == nil {
		t.Error("SP9999 parsed")
	}
}

// Codes are unique, in order, and each has a check name and a summary.
func TestCodes(t *testing.T) {
	seen := map[string]bool{}
	for i, ci := range lint.Codes {
		if seen[string(ci.Code)] || seen[ci.Check] || ci.Summary == "" || !regexp.MustCompile(`^SP\d{4}$`).MatchString(string(ci.Code)) {
			t.Errorf("code %+v", ci)
		}
		if i > 0 && lint.Codes[i-1].Code >= ci.Code {
			t.Errorf("%s out of order", ci.Code)
		}
		seen[string(ci.Code)], seen[ci.Check] = true, true
	}
}
