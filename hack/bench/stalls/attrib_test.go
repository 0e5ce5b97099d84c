package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestOverlap(t *testing.T) {
	spans := []span{{10, 20}, {30, 40}, {50, 60}}
	for _, c := range []struct {
		start, end, want int64
	}{
		{0, 10, 0},
		{0, 11, 1},
		{15, 35, 10},
		{20, 30, 0},
		{0, 100, 30},
		{55, 58, 3},
		{60, 70, 0},
	} {
		if got := overlap(spans, c.start, c.end); got != c.want {
			t.Errorf("overlap(%d, %d) = %d, want %d", c.start, c.end, got, c.want)
		}
	}
}

func TestCauseOf(t *testing.T) {
	const ms = 1_000_000
	tl := &timeline{
		marks:  []span{{100 * ms, 110 * ms}},
		sweeps: []span{{110 * ms, 112 * ms}},
		stws:   []span{{200 * ms, 200*ms + 100_000}},
	}
	for _, c := range []struct {
		name string
		r    request
		want string
	}{
		{"during the sweep", request{due: 110 * ms, service: 3 * ms}, causeSweep},
		{"just after the sweep, in its backlog", request{due: 112*ms + 500_000, service: 2 * ms}, causeSweep},
		{"a sweep overlapping less than 0.3 ms", request{due: 112*ms + 800_000, service: 2 * ms}, causeMark},
		{"during the mark", request{due: 104 * ms, queue: 1 * ms, service: 1 * ms}, causeMark},
		{"due just under 3 ms after the mark ended", request{due: 112*ms + 900_000, service: 2 * ms}, causeMark},
		{"due 3 ms after the mark ended", request{due: 113*ms + 100_000, service: 2 * ms}, causeOther},
		{"long after the mark", request{due: 150 * ms, service: 3 * ms}, causeOther},
		{"at a pause", request{due: 199*ms + 500_000, service: 2 * ms}, causeSTW},
		{"before anything", request{due: 10 * ms, service: 3 * ms}, causeOther},
	} {
		if got := causeOf(tl, c.r); got != c.want {
			t.Errorf("%s: cause %q, want %q", c.name, got, c.want)
		}
	}
}

func TestReadSlow(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good")
	if err := os.WriteFile(good, []byte("# header\n1700000000000000000 1500 700\n\n1700000000001000000 0 2100\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := readSlow(good)
	if err != nil {
		t.Fatal(err)
	}
	want := []request{{1700000000000000000, 1_500_000, 700_000}, {1700000000001000000, 0, 2_100_000}}
	if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] {
		t.Fatalf("readSlow = %v, want %v", got, want)
	}

	for name, text := range map[string]string{
		"two fields":  "1700000000000000000 1500\n",
		"not numbers": "1700000000000000000 x 700\n",
	} {
		bad := filepath.Join(dir, "bad")
		if err := os.WriteFile(bad, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := readSlow(bad); err == nil {
			t.Errorf("%s: readSlow accepted %q", name, text)
		}
	}
}

func TestReadTraceRefusesWhatIsNotATrace(t *testing.T) {
	if _, err := readTrace(strings.NewReader("load: 1000 answers\n")); err == nil {
		t.Error("readTrace accepted a text file")
	}
}
