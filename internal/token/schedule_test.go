package token

import (
	"testing"
	"time"

	testingclock "k8s.io/utils/clock/testing"
	"k8s.io/utils/ptr"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// fixed returns a random source that always answers v.
func fixed(v float64) func() float64 { return func() float64 { return v } }

func newScheduler(cfg Config, rnd float64) (*Scheduler, *testingclock.FakePassiveClock) {
	clk := testingclock.NewFakePassiveClock(t0)
	return NewScheduler(cfg, clk, fixed(rnd)), clk
}

func TestExpirationSeconds(t *testing.T) {
	for _, c := range []struct {
		in   *int64
		want int64
	}{
		{nil, 900},
		{ptr.To[int64](600), 600},
		{ptr.To[int64](599), 600},
		{ptr.To[int64](3600), 3600},
		{ptr.To[int64](3607), 3600},
		{ptr.To[int64](3608), 3608},
		{ptr.To[int64](172800), 172800},
	} {
		if got := ExpirationSeconds(c.in); got != c.want {
			t.Errorf("ExpirationSeconds(%v) = %d, want %d", ptr.Deref(c.in, -1), got, c.want)
		}
	}
}

func TestRenewAtIsTwoThirdsOfTheGrantedLifetimeLessJitter(t *testing.T) {
	for _, c := range []struct {
		name      string
		life      time.Duration
		rnd       float64
		wantAfter time.Duration // from issue
	}{
		{"no jitter", 900 * time.Second, 0, 600 * time.Second},
		{"full jitter: 10% of 900s", 900 * time.Second, 1, 510 * time.Second},
		{"half jitter", 900 * time.Second, 0.5, 555 * time.Second},
		{"1h", time.Hour, 0, 40 * time.Minute},
		{"1h full jitter: 6m, bounded at 5m", time.Hour, 1, 35 * time.Minute},
		// 10% of 48h is 4.8h; the jitter is bounded at 5m.
		{"48h full jitter is bounded", 48 * time.Hour, 1, 32*time.Hour - 5*time.Minute},
	} {
		t.Run(c.name, func(t *testing.T) {
			s, _ := newScheduler(Config{}, c.rnd)
			if got := s.RenewAt(t0, t0.Add(c.life)).Sub(t0); got != c.wantAfter {
				t.Errorf("RenewAt = issue + %s, want issue + %s", got, c.wantAfter)
			}
		})
	}
}

func TestRenewAtJitterStaysInBounds(t *testing.T) {
	life := 900 * time.Second
	for i := 0; i <= 100; i++ {
		s, _ := newScheduler(Config{}, float64(i)/100)
		got := s.RenewAt(t0, t0.Add(life)).Sub(t0)
		if got < 510*time.Second || got > 600*time.Second {
			t.Fatalf("rand %.2f: renewal at issue + %s, outside [510s, 600s]", float64(i)/100, got)
		}
		// Enough of the old token is left for the overlap and retries.
		if left := life - got; left < 300*time.Second {
			t.Fatalf("rand %.2f: only %s left at renewal", float64(i)/100, left)
		}
	}
}

func TestRenewAtFollowsAShortenedLifetime(t *testing.T) {
	// 3600 s requested; the API server granted 600 s (its
	// --service-account-max-token-expiration, say). The schedule follows
	// the granted lifetime.
	s, _ := newScheduler(Config{}, 0)
	if got := s.RenewAt(t0, t0.Add(600*time.Second)).Sub(t0); got != 400*time.Second {
		t.Errorf("RenewAt = issue + %s, want 400s", got)
	}
}

func TestRenewAtLeavesRoomForTheOverlap(t *testing.T) {
	s, _ := newScheduler(Config{Overlap: 2 * time.Minute}, 0)
	// 2/3 of 150 s is 100 s, but the 2 m overlap must fit before expiry.
	if got := s.RenewAt(t0, t0.Add(150*time.Second)).Sub(t0); got != 30*time.Second {
		t.Errorf("150s lifetime: RenewAt = issue + %s, want 30s", got)
	}
	// Shorter than the overlap: halfway.
	if got := s.RenewAt(t0, t0.Add(100*time.Second)).Sub(t0); got != 50*time.Second {
		t.Errorf("100s lifetime: RenewAt = issue + %s, want 50s", got)
	}
	// Nonsense times renew at once.
	if got := s.RenewAt(t0, t0.Add(-time.Second)); !got.Equal(t0) {
		t.Errorf("negative lifetime: RenewAt = %s, want %s", got, t0)
	}
}

func TestRevokeAt(t *testing.T) {
	s, clk := newScheduler(Config{Overlap: 90 * time.Second}, 0)
	clk.SetTime(t0.Add(10 * time.Minute))
	now := clk.Now()
	if got := s.RevokeAt(now.Add(5 * time.Minute)); !got.Equal(now.Add(90 * time.Second)) {
		t.Errorf("RevokeAt = now + %s, want now + 90s", got.Sub(now))
	}
	// Never past the old token's expiry.
	if got := s.RevokeAt(now.Add(30 * time.Second)); !got.Equal(now.Add(30 * time.Second)) {
		t.Errorf("RevokeAt = now + %s, want its expiry, now + 30s", got.Sub(now))
	}
	if got := s.RevokeAt(time.Time{}); !got.Equal(now.Add(90 * time.Second)) {
		t.Errorf("unknown expiry: RevokeAt = now + %s, want now + 90s", got.Sub(now))
	}
}

func TestBackoffSequenceAndCap(t *testing.T) {
	s, _ := newScheduler(Config{}, 0)
	want := []int{5, 10, 20, 40, 80, 160, 300, 300, 300}
	for i, w := range want {
		if got := s.Backoff(int32(i+1), time.Time{}); got != time.Duration(w)*time.Second {
			t.Errorf("without a valid token, failure %d: backoff %s, want %ds", i+1, got, w)
		}
	}
	if got := s.Backoff(1000, time.Time{}); got != 5*time.Minute {
		t.Errorf("failure 1000: backoff %s, want the 5m cap", got)
	}
	if got := s.Backoff(0, time.Time{}); got != 5*time.Second {
		t.Errorf("failure 0: backoff %s, want 5s", got)
	}
}

func TestBackoffIsCappedByTheRemainingLifetime(t *testing.T) {
	s, _ := newScheduler(Config{}, 0)
	// 300 s left (a 900 s token at its renewal): at most a quarter, 75 s.
	validUntil := t0.Add(300 * time.Second)
	want := []int{5, 10, 20, 40, 75, 75, 75}
	for i, w := range want {
		if got := s.Backoff(int32(i+1), validUntil); got != time.Duration(w)*time.Second {
			t.Errorf("300s left, failure %d: backoff %s, want %ds", i+1, got, w)
		}
	}
	// 8 s left: never below the base.
	if got := s.Backoff(6, t0.Add(8*time.Second)); got != 5*time.Second {
		t.Errorf("8s left: backoff %s, want 5s", got)
	}
	// An expired token does not cap.
	if got := s.Backoff(7, t0.Add(-time.Second)); got != 300*time.Second {
		t.Errorf("expired: backoff %s, want 300s", got)
	}
}

func TestBackoffJitter(t *testing.T) {
	s, _ := newScheduler(Config{}, 1)
	if got := s.Backoff(3, time.Time{}); got != 16*time.Second {
		t.Errorf("full jitter on 20s: %s, want 16s", got)
	}
	for i := 0; i <= 10; i++ {
		s, _ := newScheduler(Config{}, float64(i)/10)
		if got := s.Backoff(4, time.Time{}); got < 32*time.Second || got > 40*time.Second {
			t.Errorf("rand %.1f: backoff %s outside [32s, 40s]", float64(i)/10, got)
		}
	}
}

func TestPlan(t *testing.T) {
	cur := &Issued{Anchor: "a-1", IssuedAt: t0, ExpiresAt: t0.Add(900 * time.Second)}
	renew := t0.Add(600 * time.Second)
	for _, c := range []struct {
		name     string
		at       time.Duration // since t0
		st       State
		issue    bool
		why      Reason
		revoke   bool
		next     time.Time
		renewRec time.Time
	}{
		{name: "no token", st: State{}, issue: true, why: ReasonInitial},
		{name: "fresh token waits for its renewal", at: time.Minute,
			st: State{Current: cur, RenewAt: renew}, next: renew, renewRec: renew},
		{name: "renewal due", at: 600 * time.Second,
			st: State{Current: cur, RenewAt: renew}, issue: true, why: ReasonScheduled, renewRec: renew},
		{name: "expired", at: 901 * time.Second,
			st: State{Current: cur, RenewAt: renew}, issue: true, why: ReasonExpired, renewRec: renew},
		{name: "stale", at: time.Minute,
			st: State{Current: cur, Stale: true, RenewAt: renew}, issue: true, why: ReasonChanged, renewRec: renew},
		{name: "renew requested", at: time.Minute,
			st: State{Current: cur, RenewAt: renew, RenewRequested: true}, issue: true, why: ReasonRequested, renewRec: renew},
		{name: "backing off after failures", at: 610 * time.Second,
			st:   State{Current: cur, RenewAt: t0.Add(620 * time.Second), Failures: 2},
			next: t0.Add(620 * time.Second), renewRec: t0.Add(620 * time.Second)},
		{name: "backoff over", at: 620 * time.Second,
			st:    State{Current: cur, RenewAt: t0.Add(620 * time.Second), Failures: 2},
			issue: true, why: ReasonRetry, renewRec: t0.Add(620 * time.Second)},
		{name: "renew request cuts the backoff short", at: 610 * time.Second,
			st:    State{Current: cur, RenewAt: t0.Add(620 * time.Second), Failures: 2, RenewRequested: true},
			issue: true, why: ReasonRequested, renewRec: t0.Add(620 * time.Second)},
		{name: "policy change cuts the backoff short", at: 10 * time.Second,
			st:    State{RenewAt: t0.Add(40 * time.Second), Failures: 4, SpecChanged: true},
			issue: true, why: ReasonInitial, renewRec: t0.Add(40 * time.Second)},
		{name: "no token, backing off", at: 10 * time.Second,
			st:   State{RenewAt: t0.Add(40 * time.Second), Failures: 4},
			next: t0.Add(40 * time.Second), renewRec: t0.Add(40 * time.Second)},
		{name: "previous anchor waits for the overlap", at: 601 * time.Second,
			st:   State{Current: &Issued{Anchor: "a-2", IssuedAt: t0.Add(600 * time.Second), ExpiresAt: t0.Add(1500 * time.Second)}, RenewAt: t0.Add(1200 * time.Second), PreviousAnchor: "a-1", RevokePreviousAt: t0.Add(720 * time.Second)},
			next: t0.Add(720 * time.Second), renewRec: t0.Add(1200 * time.Second)},
		{name: "previous anchor revoked after the overlap", at: 720 * time.Second,
			st:     State{Current: &Issued{Anchor: "a-2", IssuedAt: t0.Add(600 * time.Second), ExpiresAt: t0.Add(1500 * time.Second)}, RenewAt: t0.Add(1200 * time.Second), PreviousAnchor: "a-1", RevokePreviousAt: t0.Add(720 * time.Second)},
			revoke: true, next: t0.Add(1200 * time.Second), renewRec: t0.Add(1200 * time.Second)},
	} {
		t.Run(c.name, func(t *testing.T) {
			s, clk := newScheduler(Config{}, 0)
			clk.SetTime(t0.Add(c.at))
			p := s.Plan(c.st)
			if p.Issue != c.issue || p.Why != c.why || p.RevokePrevious != c.revoke || !p.Next.Equal(c.next) || !p.RenewAt.Equal(c.renewRec) {
				t.Errorf("Plan = %+v; want issue=%v why=%q revoke=%v next=%s renewAt=%s", p, c.issue, c.why, c.revoke, c.next, c.renewRec)
			}
		})
	}
}

// A restarted operator rebuilds the state from the policy's status and the
// token Secret (whose expiresAt and token give Current) and issues nothing
// while the token is fresh.
func TestPlanAfterRestartDoesNotReissue(t *testing.T) {
	before, _ := newScheduler(Config{}, 0.37)
	iat, exp := t0, t0.Add(900*time.Second)
	recorded := before.RenewAt(iat, exp)

	for _, c := range []struct {
		name    string
		renewAt time.Time
		want    time.Time
	}{
		{"status intact", recorded, recorded},
		// Status lost its schedule (restored from a backup, say): derived
		// again from the Secret, within the same bounds.
		{"schedule derived from the Secret", time.Time{}, t0.Add(600*time.Second - time.Duration(0.9*90*float64(time.Second))).Truncate(time.Second)},
	} {
		t.Run(c.name, func(t *testing.T) {
			after, clk := newScheduler(Config{}, 0.9) // another random draw
			clk.SetTime(t0.Add(5 * time.Minute))
			p := after.Plan(State{Current: &Issued{Anchor: "a-1", IssuedAt: iat, ExpiresAt: exp}, RenewAt: c.renewAt})
			if p.Issue {
				t.Fatalf("restart reissued a fresh token: %+v", p)
			}
			if !p.Next.Equal(c.want) || !p.RenewAt.Equal(c.want) {
				t.Errorf("next %s, renewAt %s; want %s", p.Next, p.RenewAt, c.want)
			}
		})
	}
}

// Simulates many rotations with the fake clock, stepping to each planned
// time: every renewal lands in its window, the replaced token is revoked
// after the overlap and before it expires, and consumers always hold a
// valid token.
func TestSimulatedRotations(t *testing.T) {
	clk := testingclock.NewFakePassiveClock(t0)
	draws := []float64{0, 0.99, 0.5, 0.25, 0.75}
	n := 0
	s := NewScheduler(Config{}, clk, func() float64 { n++; return draws[n%len(draws)] })
	life := 900 * time.Second

	issue := func() State {
		now := clk.Now()
		return State{Current: &Issued{Anchor: now.String(), IssuedAt: now, ExpiresAt: now.Add(life)}, RenewAt: s.RenewAt(now, now.Add(life))}
	}
	st := issue()
	rotations := 0
	for steps := 0; rotations < 20 && steps < 1000; steps++ {
		p := s.Plan(st)
		if p.RevokePrevious {
			if clk.Now().Before(st.RevokePreviousAt) {
				t.Fatalf("revoked before the overlap ended")
			}
			st.PreviousAnchor, st.RevokePreviousAt = "", time.Time{}
		}
		if p.Issue {
			if p.Why != ReasonScheduled {
				t.Fatalf("issued for %s", p.Why)
			}
			old := st.Current
			age := clk.Now().Sub(old.IssuedAt)
			if age < 510*time.Second || age > 600*time.Second {
				t.Fatalf("renewed at age %s", age)
			}
			st = issue()
			st.PreviousAnchor, st.RevokePreviousAt = old.Anchor, s.RevokeAt(old.ExpiresAt)
			if st.RevokePreviousAt.After(old.ExpiresAt) || st.RevokePreviousAt.Sub(clk.Now()) != DefaultOverlap {
				t.Fatalf("previous revoked at now + %s", st.RevokePreviousAt.Sub(clk.Now()))
			}
			rotations++
			continue
		}
		if p.Next.IsZero() || !p.Next.After(clk.Now()) {
			t.Fatalf("no progress: %+v", p)
		}
		if !clk.Now().Before(st.Current.ExpiresAt) {
			t.Fatalf("consumers hold an expired token")
		}
		clk.SetTime(p.Next)
	}
	if rotations < 20 {
		t.Fatalf("only %d rotations", rotations)
	}
}
