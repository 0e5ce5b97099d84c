package main

import (
	"errors"
	"io"
	"slices"
	"strings"

	"golang.org/x/exp/trace"
)

// span is a stretch of time in Unix nanoseconds (wall clock).
type span struct{ start, end int64 }

// stretch is a goroutine's stretch on a processor.
type stretch struct {
	span
	g trace.GoID
}

// timeline is what the trace says about the collector and the scheduler,
// on the wall clock.
type timeline struct {
	start, end int64
	procs      int
	marks      []span // "GC concurrent mark phase"
	sweeps     []span // runs of runtime.bgsweep
	stws       []span // "stop-the-world (…)"
	runs       []stretch
	idle       []span // processors' idle stretches
	waits      []span // runnable goroutines' waits for a processor
	category   map[trace.GoID]string
}

// Goroutine categories, by the function a goroutine started in (the
// outermost frame of any stack the trace shows for it).
const (
	catHandler = "HTTP handlers (net/http.(*conn).serve)"
	catMark    = "collector: mark workers (runtime.gcBgMarkWorker)"
	catSweep   = "collector: background sweeper (runtime.bgsweep)"
	catSyscall = "system calls and the scheduler (no goroutine running, processor not idle)"
	catIdle    = "idle"
)

func categoryOf(outermost string) string {
	switch outermost {
	case "net/http.(*conn).serve":
		return catHandler
	case "runtime.gcBgMarkWorker":
		return catMark
	case "runtime.bgsweep":
		return catSweep
	case "":
		return "unknown goroutines"
	}
	return outermost
}

// readTrace reads a whole execution trace.
func readTrace(r io.Reader) (*timeline, error) {
	tr, err := trace.NewReader(r)
	if err != nil {
		return nil, err
	}
	tl := &timeline{category: map[trace.GoID]string{}}
	var (
		offset     int64 // wall = trace time + offset
		haveClock  bool
		first      = true
		markStart  int64
		stwStart   int64
		runningAt  = map[trace.GoID]int64{}
		runnableAt = map[trace.GoID]int64{}
		procs      = map[trace.ProcID]bool{}
		outermost  = map[trace.GoID]string{}
		idleAt     = map[trace.ProcID]int64{}
	)
	for {
		ev, err := tr.ReadEvent()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, err
		}
		if ev.Kind() == trace.EventSync {
			if cs := ev.Sync().ClockSnapshot; cs != nil && !haveClock {
				offset, haveClock = cs.Wall.UnixNano()-int64(cs.Trace), true
			}
			continue
		}
		if !haveClock {
			return nil, errors.New("the trace has no clock snapshot (traces from Go 1.25 on have one)")
		}
		now := int64(ev.Time()) + offset
		if first {
			tl.start, first = now, false
		}
		tl.end = now
		if p := ev.Proc(); p != trace.NoProc {
			procs[p] = true
		}
		switch ev.Kind() {
		case trace.EventRangeBegin, trace.EventRangeActive:
			name := ev.Range().Name
			if name == "GC concurrent mark phase" {
				markStart = now
			} else if strings.HasPrefix(name, "stop-the-world") {
				stwStart = now
			}
		case trace.EventRangeEnd:
			name := ev.Range().Name
			if name == "GC concurrent mark phase" && markStart != 0 {
				tl.marks = append(tl.marks, span{markStart, now})
				markStart = 0
			} else if strings.HasPrefix(name, "stop-the-world") && stwStart != 0 {
				tl.stws = append(tl.stws, span{stwStart, now})
				stwStart = 0
			}
		case trace.EventStateTransition:
			st := ev.StateTransition()
			if st.Resource.Kind == trace.ResourceProc {
				p := st.Resource.Proc()
				from, to := st.Proc()
				if at, ok := idleAt[p]; ok && from == trace.ProcIdle {
					tl.idle = append(tl.idle, span{at, now})
					delete(idleAt, p)
				}
				if to == trace.ProcIdle {
					idleAt[p] = now
				}
				continue
			}
			if st.Resource.Kind != trace.ResourceGoroutine {
				continue
			}
			g := st.Resource.Goroutine()
			if _, ok := outermost[g]; !ok {
				for f := range st.Stack.Frames() {
					outermost[g] = f.Func // frames run innermost first
				}
			}
			from, to := st.Goroutine()
			switch from {
			case trace.GoRunning:
				if at, ok := runningAt[g]; ok {
					tl.runs = append(tl.runs, stretch{span: span{at, now}, g: g})
					delete(runningAt, g)
				}
			case trace.GoRunnable:
				if at, ok := runnableAt[g]; ok && to == trace.GoRunning {
					tl.waits = append(tl.waits, span{at, now})
				}
				delete(runnableAt, g)
			}
			switch to {
			case trace.GoRunning:
				runningAt[g] = now
			case trace.GoRunnable:
				runnableAt[g] = now
			}
		}
	}
	if first {
		return nil, errors.New("the trace has no events")
	}
	for g, name := range outermost {
		tl.category[g] = categoryOf(name)
	}
	for _, r := range tl.runs {
		if tl.category[r.g] == catSweep {
			tl.sweeps = append(tl.sweeps, r.span)
		}
	}
	tl.procs = max(1, len(procs))
	for _, s := range [][]span{tl.marks, tl.sweeps, tl.stws} {
		slices.SortFunc(s, func(a, b span) int { return int(a.start - b.start) })
	}
	return tl, nil
}

// busy is one category's share of processor time.
type busy struct {
	name string
	ns   int64
}

// busyDuring sums the processors' time within spans by what they did,
// largest first: running goroutines by category, idle, and the rest
// (system calls, which a goroutine makes holding its processor, and the
// scheduler itself).
func (tl *timeline) busyDuring(spans []span) []busy {
	sum := map[string]int64{}
	var total int64
	for _, s := range spans {
		total += (s.end - s.start) * int64(tl.procs)
	}
	rest := total
	for _, r := range tl.runs {
		if d := overlap(spans, r.start, r.end); d > 0 {
			sum[tl.category[r.g]] += d
			rest -= d
		}
	}
	for _, s := range tl.idle {
		if d := overlap(spans, s.start, s.end); d > 0 {
			sum[catIdle] += d
			rest -= d
		}
	}
	sum[catSyscall] += max(0, rest)
	out := make([]busy, 0, len(sum))
	for name, ns := range sum {
		out = append(out, busy{name, ns})
	}
	slices.SortFunc(out, func(a, b busy) int {
		if a.ns != b.ns {
			return int(b.ns - a.ns)
		}
		return strings.Compare(a.name, b.name)
	})
	return out
}

// waitsInOut splits the waits for a processor by whether they ended inside
// a mark phase.
func (tl *timeline) waitsInOut() (in, out []int64) {
	for _, w := range tl.waits {
		if overlap(tl.marks, w.end-1, w.end) > 0 {
			in = append(in, w.end-w.start)
		} else {
			out = append(out, w.end-w.start)
		}
	}
	return in, out
}
