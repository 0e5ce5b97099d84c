package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/sallyport/sallyport/internal/decision"
	"github.com/sallyport/sallyport/internal/loader"
	"github.com/sallyport/sallyport/internal/policytest"
	"github.com/sallyport/sallyport/internal/store"
	"github.com/sallyport/sallyport/webhook"
)

const decideUsage = `Usage: sallyport decide -f <policy files or dirs> [--request FILE] [flags]

Answers one /v1/decide request offline, with the decision engine the cluster
runs, and prints the JSON answer the decision server would return.

The request is the /v1/decide request body (see docs/decision-api.md), read
from --request (default: standard input) and checked by the server's own
strict decoder. Its token comes from one of:

  --suite FILE --connection NAME
      the named connection fixture of a test suite (docs/policy-testing.md);
      the request must then carry no token.
  the request's credential.token
      a JWT whose claims (aud, sub, iat, exp, jti) are READ WITHOUT
      VERIFYING ITS SIGNATURE: offline there is no API server to review it.
      A forged token is accepted here that the cluster would refuse; use
      this to ask what a token's claims would be allowed, never to check a
      token.

Exit codes: 0 an answer was printed (allowed or denied; with --exit-code
only when allowed); 1 with --exit-code, the request was denied; 2 unusable
input (policies that do not load, a malformed request, bad flags).

Flags:
`

// stringList is a repeatable flag.
type stringList []string

func (l *stringList) String() string     { return strings.Join(*l, ",") }
func (l *stringList) Set(v string) error { *l = append(*l, v); return nil }

// newDecisionID makes decision IDs; tests replace it for stable output.
var newDecisionID = decision.NewDecisionID

// runDecide is `sallyport decide`.
func runDecide(args []string) int {
	return decideMain(context.Background(), args, os.Stdin, os.Stdout, os.Stderr)
}

func decideMain(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := commandFlags("sallyport decide", decideUsage, stderr)
	var policies stringList
	fs.Var(&policies, "f", "policy `file or directory` (repeatable); default: the --suite's policies")
	fs.Var(&policies, "filename", "same as -f")
	reqFile := fs.String("request", "-", "the /v1/decide request body, `file` or - for standard input")
	suiteFile := fs.String("suite", "", "test suite `file` whose connection fixtures --connection names")
	connName := fs.String("connection", "", "connection fixture `name` from --suite whose token the request presents")
	nowFlag := fs.String("now", "", "the clock, RFC 3339 `time`; default: the --suite's now, else the current time")
	trace := fs.Bool("trace", false, "also print the decision's trace to standard error")
	exitCode := fs.Bool("exit-code", false, "exit 1 when the request is denied")
	rest, err := parseInterspersed(fs, args)
	if err != nil {
		return parseExit(err)
	}
	fail := usageFailer("sallyport decide", stderr)
	if len(rest) > 0 {
		return fail("unexpected arguments %q; policies are given with -f", rest)
	}
	if *connName != "" && *suiteFile == "" {
		return fail("--connection needs --suite, the file that defines the fixture")
	}

	var suite *policytest.Suite
	if *suiteFile != "" {
		if suite, err = policytest.LoadSuite(*suiteFile); err != nil {
			return fail("--suite: %v", err)
		}
		if len(policies) == 0 {
			policies = suite.Policies
		}
	}
	if len(policies) == 0 {
		return fail("no policies: give -f <file or directory> (or --suite)")
	}
	now := time.Now()
	switch {
	case *nowFlag != "":
		if now, err = time.Parse(time.RFC3339, *nowFlag); err != nil {
			return fail("--now: %q is not an RFC 3339 time (2026-03-02T10:30:00Z)", *nowFlag)
		}
	case suite != nil:
		now = suite.Now
	}

	req, err := readDecideRequest(*reqFile, stdin)
	if err != nil {
		return fail("%v", err)
	}
	auth := policytest.NewAuthenticator(true)
	switch {
	case *connName != "":
		conn, ok := suite.Connections[*connName]
		if !ok {
			return fail("--connection: %s has no connection %q", suite.File, *connName)
		}
		if req.Token != "" {
			return fail("--connection %s: the request carries a token too; give one or the other", *connName)
		}
		req.Token = conn.Token(now)
		auth.Register(req.Token, conn.Review(now))
	case req.Token != "":
		fmt.Fprintln(stderr, "sallyport decide: warning: the request's token is not verified offline; its claims are taken as given")
	}

	ld, err := loader.New(loader.Options{})
	if err != nil {
		return fail("%v", err)
	}
	set, err := ld.Load(ctx, policies...)
	if err != nil {
		fmt.Fprintln(stderr, "sallyport decide: policies do not load:")
		if le, ok := errors.AsType[*loader.LoadError](err); ok {
			for _, p := range le.Problems {
				fmt.Fprintf(stderr, "  %s\n", p)
			}
		} else {
			fmt.Fprintf(stderr, "  %v\n", err)
		}
		return 2
	}
	st := store.New()
	st.Publish(set.Snapshot, true)
	engine := decision.NewEngine(st, auth, decision.Options{
		Clock: func() time.Time { return now },
		NewID: newDecisionID,
	})

	var d *decision.Decision
	if *trace {
		var tr *decision.Trace
		d, tr = engine.DecideTrace(ctx, req)
		fmt.Fprint(stderr, tr.Format(""))
	} else {
		d = engine.Decide(ctx, req)
	}
	if _, err := stdout.Write(decision.AppendJSON(nil, d)); err != nil {
		return fail("write the answer: %v", err)
	}
	if *exitCode && !d.Allowed {
		return 1
	}
	return 0
}

// readDecideRequest reads and decodes a request body with the decision
// server's decoder and its size limit.
func readDecideRequest(file string, stdin io.Reader) (*decision.Request, error) {
	r := stdin
	name := "standard input"
	if file != "-" {
		f, err := os.Open(file)
		if err != nil {
			return nil, fmt.Errorf("--request: %w", err)
		}
		defer func() { _ = f.Close() }()
		r, name = f, file
	}
	body, err := io.ReadAll(io.LimitReader(r, webhook.DefaultMaxBodyBytes+1))
	if err != nil {
		return nil, fmt.Errorf("--request: %w", err)
	}
	if len(body) > webhook.DefaultMaxBodyBytes {
		return nil, fmt.Errorf("%s: body: larger than %d bytes", name, webhook.DefaultMaxBodyBytes)
	}
	req, err := webhook.ParseDecideRequest(body)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return req, nil
}
