package certs

import (
	"bytes"
	"crypto/x509"
	"net"
	"strings"
	"testing"
	"time"
)

var testPolicy = Policy{
	CADuration:   360 * 24 * time.Hour,
	LeafDuration: 90 * 24 * time.Hour,
	DNSNames:     ServiceNames("sallyport-webhook-service", "sallyport-system"),
	IPs:          []net.IP{net.ParseIP("127.0.0.1")},
}

func plan(t *testing.T, p Policy, now time.Time, s State, rotate bool) (State, []string) {
	t.Helper()
	next, reasons, err := p.Plan(now, s, rotate)
	if err != nil {
		t.Fatalf("Plan: %v", err)
	}
	if (len(reasons) == 0) != next.Equal(s) {
		t.Fatalf("reasons %q do not match whether the state changed", reasons)
	}
	if err := p.Usable(now, next); err != nil {
		t.Fatalf("planned state cannot serve: %v", err)
	}
	return next, reasons
}

func TestPlanFromNothing(t *testing.T) {
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	s, reasons := plan(t, testPolicy, now, State{}, false)
	if len(reasons) == 0 {
		t.Fatal("no reasons for a new state")
	}
	leaf, _ := parseCert(s.Cert)
	if leaf.NotAfter.Sub(now) != testPolicy.LeafDuration {
		t.Errorf("leaf lasts until %s", leaf.NotAfter)
	}
	if leaf.IsCA || len(leaf.ExtKeyUsage) != 1 || leaf.ExtKeyUsage[0] != x509.ExtKeyUsageServerAuth {
		t.Errorf("leaf usages: CA %v, ext %v", leaf.IsCA, leaf.ExtKeyUsage)
	}
	if !bytes.Equal(s.Bundle(now), s.CACert) {
		t.Error("bundle is not the CA alone")
	}
	// Nothing to do right after, with or without rotation.
	for _, rotate := range []bool{false, true} {
		if _, reasons := plan(t, testPolicy, now.Add(time.Hour), s, rotate); len(reasons) != 0 {
			t.Errorf("rotate=%v: unexpected reasons %q", rotate, reasons)
		}
	}
}

func TestPlanLeafRenewal(t *testing.T) {
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	s, _ := plan(t, testPolicy, now, State{}, false)
	// Two thirds of the leaf's life (counted from its backdated start).
	due := now.Add(-backdate).Add((testPolicy.LeafDuration + backdate) * 2 / 3)
	if _, r := plan(t, testPolicy, due.Add(-time.Minute), s, true); len(r) != 0 {
		t.Fatalf("renewed early: %q", r)
	}
	if _, r := plan(t, testPolicy, due, s, false); len(r) != 0 {
		t.Fatalf("bootstrap renewed a usable certificate: %q", r)
	}
	r2, r := plan(t, testPolicy, due, s, true)
	if len(r) != 1 || !strings.Contains(r[0], "due for renewal") {
		t.Fatalf("reasons %q", r)
	}
	if !bytes.Equal(r2.CACert, s.CACert) || bytes.Equal(r2.Cert, s.Cert) {
		t.Fatal("renewal changed the CA or kept the leaf")
	}
	// An expired leaf is repaired even without rotation.
	expired := now.Add(testPolicy.LeafDuration + time.Second)
	if _, r := plan(t, testPolicy, expired, s, false); len(r) == 0 {
		t.Fatal("expired leaf not repaired")
	}
}

func TestPlanNamesChanged(t *testing.T) {
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	s, _ := plan(t, testPolicy, now, State{}, false)
	p := testPolicy
	p.DNSNames = append(append([]string(nil), p.DNSNames...), "sallyport-decision-service.sallyport-system.svc")
	s2, r := plan(t, p, now, s, false)
	if len(r) == 0 || !bytes.Equal(s2.CACert, s.CACert) {
		t.Fatalf("a new name must reissue the leaf from the same CA: %q", r)
	}
}

func TestPlanCARotation(t *testing.T) {
	start := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	s0, _ := plan(t, testPolicy, start, State{}, false)
	ca0, _ := parseCert(s0.CACert)
	life := ca0.NotAfter.Sub(ca0.NotBefore)

	// Step through the CA's life one day at a time, as the leader would.
	s, now := s0, start
	var made, promoted time.Time
	for now.Before(ca0.NotAfter.Add(48 * time.Hour)) {
		now = now.Add(24 * time.Hour)
		next, reasons := plan(t, testPolicy, now, s, true)
		for _, r := range reasons {
			switch r {
			case "next CA made":
				if made.IsZero() {
					made = now
				}
			case "next CA promoted":
				promoted = now
				if !bytes.Equal(next.PreviousCACert, s.CACert) || !bytes.Equal(next.CACert, s.NextCACert) {
					t.Fatal("promotion did not shift the CAs")
				}
			}
		}
		// The bundle always verifies the leaf, and during the overlap
		// carries both CAs.
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(next.Bundle(now))
		leaf, _ := parseCert(next.Cert)
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, CurrentTime: now}); err != nil {
			t.Fatalf("%s: leaf does not verify against the bundle: %v", now, err)
		}
		s = next
	}
	if made.IsZero() || promoted.IsZero() {
		t.Fatalf("made %s, promoted %s", made, promoted)
	}
	if got := made.Sub(ca0.NotBefore); got < life*2/3 || got > life*2/3+24*time.Hour {
		t.Errorf("next CA made %s into the CA's life of %s", got, life)
	}
	if got := promoted.Sub(made); got < life/6-24*time.Hour {
		t.Errorf("next CA promoted only %s after it was published", got)
	}
	if len(s.PreviousCACert) != 0 && bytes.Equal(s.PreviousCACert, s0.CACert) {
		t.Error("the first CA is still in the bundle after it expired")
	}
}

func TestPlanRepairsGarbage(t *testing.T) {
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	s, r := plan(t, testPolicy, now, State{CACert: []byte("x"), CAKey: []byte("y"), Cert: []byte("z")}, false)
	if len(r) == 0 || len(s.CACert) < 10 {
		t.Fatal("garbage not replaced")
	}
	if _, _, err := (Policy{}).Plan(now, State{}, false); err == nil {
		t.Error("zero durations accepted")
	}
}
