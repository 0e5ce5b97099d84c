// Command stalls reads a bench server's execution trace (hack/bench/decide
// -trace, Go's runtime/trace) and says where the latency tail of a load run
// came from (see docs/benchmarks.md, "Where the due-time tail comes from"):
//
//   - the collector's cycles: mark phases, the background sweeper's runs and
//     stop-the-world pauses;
//   - how the processors' time was spent during mark phases (handlers,
//     system calls, the collector's workers, the sweeper, idle);
//   - how long runnable goroutines waited for a processor, inside and
//     outside mark phases;
//   - with -slow (hack/bench/load -slow-file, from the same run), what each
//     request slower than the load generator's threshold overlapped.
//
// It is a module of its own so that the trace parser
// (golang.org/x/exp/trace) stays out of sallyport's go.mod:
//
//	cd hack/bench/stalls && go run . -trace FILE [-slow FILE]
package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
)

func main() {
	if err := run(os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "stalls:", err)
		os.Exit(1)
	}
}

func run(w io.Writer) error {
	tracePath := flag.String("trace", "", "execution trace `file` of the server (required)")
	slowPath := flag.String("slow", "", "slow requests `file` written by hack/bench/load -slow-file during the traced run")
	flag.Parse()
	if *tracePath == "" {
		return errors.New("-trace is required")
	}
	f, err := os.Open(*tracePath)
	if err != nil {
		return err
	}
	defer func() { _ = f.Close() }()
	tl, err := readTrace(bufio.NewReaderSize(f, 1<<20))
	if err != nil {
		return fmt.Errorf("%s: %w", *tracePath, err)
	}
	report(w, tl)
	if *slowPath == "" {
		return nil
	}
	slow, err := readSlow(*slowPath)
	if err != nil {
		return err
	}
	reportSlow(w, tl, slow)
	return nil
}

// readSlow reads hack/bench/load's -slow-file.
func readSlow(path string) ([]request, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer func() { _ = f.Close() }()
	var out []request
	sc := bufio.NewScanner(f)
	for line := 1; sc.Scan(); line++ {
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		fields := strings.Fields(text)
		if len(fields) != 3 {
			return nil, fmt.Errorf("%s:%d: want 3 fields (due_unix_ns queue_us service_us), got %d", path, line, len(fields))
		}
		var v [3]int64
		for i, s := range fields {
			if v[i], err = strconv.ParseInt(s, 10, 64); err != nil {
				return nil, fmt.Errorf("%s:%d: field %d: %w", path, line, i+1, err)
			}
		}
		out = append(out, request{due: v[0], queue: v[1] * 1e3, service: v[2] * 1e3})
	}
	return out, sc.Err()
}

func report(w io.Writer, tl *timeline) {
	ms := func(ns int64) string { return strconv.FormatFloat(float64(ns)/1e6, 'f', 2, 64) + " ms" }
	var markTotal int64
	for _, m := range tl.marks {
		markTotal += m.end - m.start
	}
	var sweepTotal int64
	for _, s := range tl.sweeps {
		sweepTotal += s.end - s.start
	}
	var stwTotal, stwMax int64
	for _, s := range tl.stws {
		stwTotal += s.end - s.start
		stwMax = max(stwMax, s.end-s.start)
	}
	fmt.Fprintf(w, "trace: %s of wall time on %d processors\n", ms(tl.end-tl.start), tl.procs)
	if n := int64(len(tl.marks)); n > 0 {
		fmt.Fprintf(w, "collector: %d mark phases, %s in all (%s each on average, %.1f%% of the time)\n",
			n, ms(markTotal), ms(markTotal/n), 100*float64(markTotal)/float64(tl.end-tl.start))
		fmt.Fprintf(w, "collector: background sweeper ran %s in all (%s per cycle)\n", ms(sweepTotal), ms(sweepTotal/n))
	}
	fmt.Fprintf(w, "collector: %d stop-the-world pauses, %s in all, longest %s\n", len(tl.stws), ms(stwTotal), ms(stwMax))

	if markTotal > 0 {
		// Each category's share of the processors' time during mark phases
		// and over the whole trace.
		marks := map[string]int64{}
		for _, c := range tl.busyDuring(tl.marks) {
			marks[c.name] = c.ns
		}
		wholeCap := float64(tl.end-tl.start) * float64(tl.procs)
		markCap := float64(markTotal) * float64(tl.procs)
		fmt.Fprintf(w, "share of the processors' time:\n  %12s %12s\n", "mark phases", "whole trace")
		for _, c := range tl.busyDuring([]span{{tl.start, tl.end}}) {
			m, all := float64(marks[c.name])/markCap, float64(c.ns)/wholeCap
			if m < 0.001 && all < 0.001 {
				continue
			}
			fmt.Fprintf(w, "  %11.1f%% %11.1f%%  %s\n", 100*m, 100*all, c.name)
		}
	}

	in, out := tl.waitsInOut()
	fmt.Fprintf(w, "waits of runnable goroutines for a processor:\n")
	for _, s := range []struct {
		name string
		v    []int64
	}{{"inside mark phases", in}, {"outside mark phases", out}} {
		if len(s.v) == 0 {
			continue
		}
		slices.Sort(s.v)
		q := func(p float64) string { return ms(s.v[int(p*float64(len(s.v)-1))]) }
		fmt.Fprintf(w, "  %-20s %8d waits  p50 %s  p99 %s  p99.9 %s  max %s\n", s.name, len(s.v), q(0.5), q(0.99), q(0.999), ms(s.v[len(s.v)-1]))
	}
}

func reportSlow(w io.Writer, tl *timeline, slow []request) {
	var in []request
	for _, r := range slow {
		if r.due >= tl.start && r.due+r.queue+r.service <= tl.end {
			in = append(in, r)
		}
	}
	fmt.Fprintf(w, "slow requests: %d in the slow file, %d within the trace\n", len(slow), len(in))
	if len(in) == 0 {
		return
	}
	counts := attribute(tl, in)
	for _, c := range causes {
		fmt.Fprintf(w, "  %5.1f%%  %6d  %s\n", 100*float64(counts[c])/float64(len(in)), counts[c], c)
	}
	if n := len(tl.marks); n > 0 {
		fmt.Fprintf(w, "  %.0f slow requests per collector cycle\n", float64(len(in))/float64(n))
	}
}
