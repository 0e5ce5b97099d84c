package main

import (
	"context"
	"io"
	"testing"
	"time"
)

// TestSoakSmoke runs the soak for a few seconds so it cannot rot: every
// kind of the mix is sent and answered as expected, and the decision log
// holds one line per decision. Timing is reported, never asserted; the
// heap and goroutine criteria need minutes and are left to real runs.
func TestSoakSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a control plane")
	}
	res, err := Run(context.Background(), Config{
		Probe: 2 * time.Second, Duration: 3 * time.Second, Fraction: 0.3, Workers: 4,
		NewTokensPerSecond: 10, Sample: time.Second, Dir: t.TempDir(), Log: io.Discard,
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Errors != 0 {
		t.Errorf("%d errors: %v", res.Errors, res.FirstErrors)
	}
	if res.LogLines != res.Decisions || res.Decisions == 0 {
		t.Errorf("decision log: %d lines for %d decisions", res.LogLines, res.Decisions)
	}
	for _, k := range mix {
		if res.ByKind[k.name] == 0 {
			t.Errorf("no %s request was sent", k.name)
		}
	}
	t.Logf("capacity %.0f/s, %d requests, p99 %s", res.CapacityPerSecond, res.Requests, res.LatencyP99)
}

func TestHistogramQuantiles(t *testing.T) {
	var h histogram
	for i := 1; i <= 1000; i++ {
		h.add(time.Duration(i) * time.Millisecond)
	}
	for q, want := range map[float64]time.Duration{0.5: 500 * time.Millisecond, 0.99: 990 * time.Millisecond, 1: time.Second} {
		got := h.quantile(q)
		if got < want || float64(got) > float64(want)*1.021 {
			t.Errorf("quantile(%v) = %s, want %s within 2%%", q, got, want)
		}
	}
}
