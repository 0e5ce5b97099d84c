package main

import "sort"

// request is a slow request from hack/bench/load -slow-file: its due time
// on the wall clock and its wait for a connection and service time, all in
// nanoseconds.
type request struct {
	due, queue, service int64
}

func (r request) done() int64 { return r.due + r.queue + r.service }

// What a slow request is charged to, in this order: the first that applies.
// A request is charged to what happened during its life (from its due time
// to its answer) or shortly before it, since the backlog a stall leaves
// behind takes a while to drain.
const (
	causeSweep = "sweeper: the background sweeper ran 0.3 ms or more from 1 ms before the request was due to its answer"
	causeMark  = "mark: a mark phase overlapped the request or the 3 ms before it was due"
	causeSTW   = "stop-the-world: a pause overlapped the request or the 1 ms before it was due"
	causeOther = "other: none of these (the machine, the load generator, the handlers)"
)

// causes in report order.
var causes = []string{causeSweep, causeMark, causeSTW, causeOther}

const (
	sweepLookback = 1_000_000 // ns
	sweepMinimum  = 300_000
	markLookback  = 3_000_000
	stwLookback   = 1_000_000
)

// attribute counts the requests by cause.
func attribute(tl *timeline, reqs []request) map[string]int {
	counts := make(map[string]int, len(causes))
	for _, r := range reqs {
		counts[causeOf(tl, r)]++
	}
	return counts
}

func causeOf(tl *timeline, r request) string {
	switch {
	case overlap(tl.sweeps, r.due-sweepLookback, r.done()) >= sweepMinimum:
		return causeSweep
	case overlap(tl.marks, r.due-markLookback, r.done()) > 0:
		return causeMark
	case overlap(tl.stws, r.due-stwLookback, r.done()) > 0:
		return causeSTW
	}
	return causeOther
}

// overlap is how much of [start, end) the sorted, non-overlapping spans
// cover.
func overlap(spans []span, start, end int64) int64 {
	i := sort.Search(len(spans), func(i int) bool { return spans[i].end > start })
	var d int64
	for ; i < len(spans) && spans[i].start < end; i++ {
		d += min(spans[i].end, end) - max(spans[i].start, start)
	}
	return d
}
