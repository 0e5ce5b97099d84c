// Package liveheap measures a bench server's live heap: the bytes the
// collector marks on every cycle, which set how long each of its mark
// phases takes (see docs/benchmarks.md, "Where the due-time tail comes
// from").
package liveheap

import (
	"runtime"
	"runtime/metrics"
)

const liveBytes = "/gc/heap/live:bytes"

// Measure runs a full collection and returns the heap it found live.
func Measure() uint64 {
	runtime.GC()
	s := []metrics.Sample{{Name: liveBytes}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindUint64 {
		return 0
	}
	return s[0].Value.Uint64()
}
