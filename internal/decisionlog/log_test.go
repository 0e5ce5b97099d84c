package decisionlog

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sallyport/sallyport/internal/decision"
)

const secretToken = "eyJhbGciOiJSUzI1NiJ9.eyJhdWQiOiJzZWNyZXQifQ.c2lnbmF0dXJl"

func entry(i int) *Entry {
	return &Entry{
		Decision: &decision.Decision{
			ID:      "d-" + string(rune('a'+i%26)),
			Allowed: false,
			Time:    time.Date(2026, 12, 4, 21, 0, 0, 123456789, time.UTC),
			Path:    "/entries/42",
			Connection: decision.Connection{
				Allowed: true, Policy: "billing/billing-to-ledger", Generation: 3,
				Identity: "system:serviceaccount:billing:billing-worker", CredentialID: "JTI=abc",
				Reason: decision.ReasonMatched, Message: "connection allowed",
			},
			Resource: decision.Resource{
				Allowed: false, Policy: "ledger/ledger-api", Generation: 7, Rule: "no-deletes",
				Reason: decision.ReasonDeniedByRule, Message: "denied by \"no-deletes\"\n",
			},
		},
		Request: &decision.Request{
			Token:  secretToken,
			Target: decision.Target{Namespace: "ledger", Service: "ledger-api", Name: "/entries//42?x=1"},
			Action: "DELETE", Scopes: []string{"ledger.write", "ledger.read"},
			Attributes: map[string]string{"sourceIP": "10.1.2.3"},
		},
		Latency:     87 * time.Microsecond,
		Enforcement: "Enforce",
		Endpoint:    "decide",
	}
}

func TestLineFormat(t *testing.T) {
	line := appendEntry(nil, entry(0))
	if !bytes.HasSuffix(line, []byte("}\n")) || bytes.Count(line, []byte("\n")) != 1 {
		t.Fatalf("not one line: %q", line)
	}
	if bytes.Contains(line, []byte(secretToken)) || bytes.Contains(line, []byte("eyJ")) {
		t.Fatalf("the line contains the token: %s", line)
	}
	var got map[string]any
	if err := json.Unmarshal(line, &got); err != nil {
		t.Fatalf("invalid JSON %s: %v", line, err)
	}
	want := map[string]any{
		"schemaVersion": 1.0, "time": "2026-12-04T21:00:00.123456789Z", "decisionID": "d-a",
		"endpoint": "decide", "enforcement": "Enforce", "allowed": false,
		"identity": "system:serviceaccount:billing:billing-worker", "credentialID": "JTI=abc",
		"action": "DELETE", "scopes": []any{"ledger.write", "ledger.read"},
		"target": map[string]any{"namespace": "ledger", "service": "ledger-api", "host": "", "name": "/entries/42"},
		"connection": map[string]any{"allowed": true, "policy": "billing/billing-to-ledger", "generation": 3.0,
			"reason": "Matched", "message": "connection allowed"},
		"resource": map[string]any{"allowed": false, "policy": "ledger/ledger-api", "generation": 7.0,
			"rule": "no-deletes", "reason": "DeniedByRule", "message": "denied by \"no-deletes\"\n"},
		"latency": 0.000087,
	}
	gotJSON, _ := json.Marshal(got)
	wantJSON, _ := json.Marshal(want)
	if !bytes.Equal(gotJSON, wantJSON) {
		t.Errorf("line\n got %s\nwant %s", gotJSON, wantJSON)
	}
	if _, ok := got["attributes"]; ok {
		t.Error("attributes are logged")
	}
	if _, ok := got["disagreement"]; ok {
		t.Error("an Enforce line carries a disagreement")
	}

	// A DryRun line says how it disagrees.
	e := entry(0)
	e.Enforcement, e.Disagreement = "DryRun", "WouldDeny"
	var dry map[string]any
	if err := json.Unmarshal(appendEntry(nil, e), &dry); err != nil {
		t.Fatal(err)
	}
	if dry["enforcement"] != "DryRun" || dry["disagreement"] != "WouldDeny" {
		t.Errorf("DryRun line: enforcement %v, disagreement %v", dry["enforcement"], dry["disagreement"])
	}
}

// Block mode loses nothing, even with many concurrent writers and a small
// queue.
func TestBlockModeLosesNothing(t *testing.T) {
	var out safeBuffer
	l := New(&out, Options{Mode: ModeBlock, QueueLength: 2})
	const writers, each = 8, 500
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				if err := l.Log(entry(w*each + i)); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	lines := 0
	sc := bufio.NewScanner(bytes.NewReader(out.Bytes()))
	for sc.Scan() {
		if !json.Valid(sc.Bytes()) {
			t.Fatalf("invalid line %q", sc.Text())
		}
		lines++
	}
	if lines != writers*each || l.Dropped() != 0 {
		t.Errorf("%d lines, %d dropped; want %d, 0", lines, l.Dropped(), writers*each)
	}
	if err := l.Log(entry(0)); !errors.Is(err, ErrClosed) {
		t.Errorf("Log after Close = %v", err)
	}
}

// Drop mode never blocks: with the writer stuck, lines beyond the queue are
// dropped and counted, and everything queued is written once it resumes.
func TestDropModeCountsDrops(t *testing.T) {
	gate := make(chan struct{})
	w := &gatedWriter{gate: gate}
	l := New(w, Options{Mode: ModeDrop, QueueLength: 4})
	const n = 50
	for i := range n {
		if err := l.Log(entry(i)); err != nil {
			t.Fatal(err)
		}
	}
	close(gate)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	lines := bytes.Count(w.buf.Bytes(), []byte("\n"))
	if uint64(lines)+l.Dropped() != n || l.Dropped() == 0 {
		t.Errorf("%d written + %d dropped, want %d with some dropped", lines, l.Dropped(), n)
	}
}

func TestWriteErrorsAreReportedAndWritingGoesOn(t *testing.T) {
	w := &failingWriter{failures: 1}
	l := New(w, Options{})
	_ = l.Log(entry(0))
	// Let the first line hit the failing write before the second is queued.
	for w.calls() == 0 {
		time.Sleep(time.Millisecond)
	}
	_ = l.Log(entry(1))
	err := l.Close()
	if err == nil || !strings.Contains(err.Error(), "write decision log") {
		t.Fatalf("Close = %v, want the write error", err)
	}
	if !bytes.Contains(w.buf.Bytes(), []byte(`"decisionID":"d-b"`)) {
		t.Errorf("the line after the failure was not written: %q", w.buf.String())
	}
}

func TestParseMode(t *testing.T) {
	for _, s := range []string{"block", "drop"} {
		if m, err := ParseMode(s); err != nil || string(m) != s {
			t.Errorf("ParseMode(%q) = %q, %v", s, m, err)
		}
	}
	if _, err := ParseMode("lossy"); err == nil || !strings.Contains(err.Error(), "lossy") {
		t.Errorf("ParseMode(lossy) = %v", err)
	}
}

type safeBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (s *safeBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.Write(p)
}

func (s *safeBuffer) Bytes() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return bytes.Clone(s.buf.Bytes())
}

type gatedWriter struct {
	gate chan struct{}
	buf  bytes.Buffer
}

func (g *gatedWriter) Write(p []byte) (int, error) {
	<-g.gate
	return g.buf.Write(p)
}

type failingWriter struct {
	mu       sync.Mutex
	failures int
	n        int
	buf      bytes.Buffer
}

func (f *failingWriter) Write(p []byte) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.n++
	if f.failures > 0 {
		f.failures--
		return 0, io.ErrShortWrite
	}
	return f.buf.Write(p)
}

func (f *failingWriter) calls() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.n
}
