package main

import (
	"io"
	"os"
	"strings"
	"testing"
)

// runCaptured runs the command line and returns its exit code and what it
// wrote to standard error.
func runCaptured(t *testing.T, args ...string) (int, string) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr := os.Stderr
	os.Stderr = w
	code := run(args)
	os.Stderr = stderr
	_ = w.Close()
	out, _ := io.ReadAll(r)
	return code, string(out)
}

// Bad command lines exit 2 with a message naming what is wrong, before the
// manager touches a cluster.
func TestBadCommandLines(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "Usage:"},
		{[]string{"serve"}, `unknown command "serve"`},
		{[]string{"manager", "--decision-log-mode=lossy"}, "--decision-log-mode"},
		{[]string{"manager", "--cert-management=vault"}, "--cert-management must be"},
		{[]string{"manager", "--token-review-cache-ttl=0s"}, "--token-review-cache-ttl must be positive"},
		{[]string{"manager", "--shutdown-delay=-1s"}, "--shutdown-delay must not be negative"},
		{[]string{"manager", "--usage-interval=0s"}, "--usage-interval and --usage-window must be positive"},
		{[]string{"manager", "--usage-window=-1h"}, "--usage-interval and --usage-window must be positive"},
		{[]string{"manager", "--usage-namespace=sallyport-system", "--usage-replica= "}, "--usage-replica must not be empty"},
		{[]string{"manager", "stray"}, `unexpected arguments ["stray"]`},
		{[]string{"manager", "--no-such-flag"}, "flag provided but not defined: -no-such-flag"},
	} {
		code, out := runCaptured(t, tc.args...)
		if code != 2 || !strings.Contains(out, tc.want) {
			t.Errorf("sallyport %s: exit %d, stderr %q; want exit 2 naming %q", strings.Join(tc.args, " "), code, out, tc.want)
		}
	}
}
