// Package gctune sets the Go garbage collector for a decision server. The
// decision path allocates about a kilobyte a request while the live heap is
// small (the snapshot, a few caches), so with Go's default GOGC=100 the
// collector runs several times a second at a few thousand requests a
// second, and its pauses and assists show in the latency tail. A larger
// GOGC makes cycles rare at the cost of a heap a few times the live one
// (megabytes here); a memory limit below the container's keeps that bounded.
// It also says what to tell an operator running on a single processor,
// where no setting of the collector keeps its cycles out of the latency
// tail.
package gctune

import (
	"os"
	"runtime/debug"
	"strconv"
	"strings"
)

// DefaultGCPercent is the GOGC the operator runs with unless GOGC is set.
const DefaultGCPercent = 400

// memoryLimitFraction of the container's memory limit becomes the Go
// memory limit unless GOMEMLIMIT is set, so the collector works harder
// before the kernel would kill the process.
const memoryLimitFraction = 0.9

// cgroupMemoryMax is the cgroup v2 memory limit of the container.
var cgroupMemoryMax = "/sys/fs/cgroup/memory.max"

// Settings are what Apply set; zero values mean left as they were.
type Settings struct {
	GCPercent   int
	MemoryLimit int64
}

// Apply sets GOGC to DefaultGCPercent unless the GOGC environment variable
// is set, and the memory limit to 90% of the cgroup's memory limit unless
// GOMEMLIMIT is set or there is no limit. It returns what it set.
func Apply() Settings {
	var s Settings
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(DefaultGCPercent)
		s.GCPercent = DefaultGCPercent
	}
	if os.Getenv("GOMEMLIMIT") == "" {
		if limit, ok := containerMemoryLimit(); ok {
			s.MemoryLimit = int64(float64(limit) * memoryLimitFraction)
			debug.SetMemoryLimit(s.MemoryLimit)
		}
	}
	return s
}

// OneProcessorAdvice is what the operator logs when Go runs it on a single
// processor (GOMAXPROCS=1, as under a CPU limit below 2): there every
// collection cycle holds up decisions for a few milliseconds, since marking
// takes a quarter of the only processor and the background sweeper keeps
// the network poller from running until it is done (docs/benchmarks.md,
// "Where the due-time tail comes from"). Empty when procs is more than one.
func OneProcessorAdvice(procs int) string {
	if procs > 1 {
		return ""
	}
	return "Running on one processor (GOMAXPROCS=1, as under a CPU limit below 2): each garbage collection delays decisions by a few milliseconds; give the operator 2 CPUs or more where the decision API's latency tail matters"
}

// containerMemoryLimit reads the cgroup v2 memory limit; "max", a missing
// file or a malformed value mean none.
func containerMemoryLimit() (int64, bool) {
	raw, err := os.ReadFile(cgroupMemoryMax)
	if err != nil {
		return 0, false
	}
	v := strings.TrimSpace(string(raw))
	if v == "max" {
		return 0, false
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n <= 0 {
		return 0, false
	}
	return n, true
}
