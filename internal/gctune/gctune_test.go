package gctune

import (
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"testing"
)

func TestApply(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(100))
	defer debug.SetMemoryLimit(debug.SetMemoryLimit(-1))
	dir := t.TempDir()
	cgroupMemoryMax = filepath.Join(dir, "memory.max")
	t.Cleanup(func() { cgroupMemoryMax = "/sys/fs/cgroup/memory.max" })

	for _, tc := range []struct {
		name, gogc, gomemlimit, file string
		want                         Settings
	}{
		{"defaults, 512 MiB container", "", "", "536870912\n", Settings{GCPercent: 400, MemoryLimit: 483183820}},
		{"no container limit", "", "", "max\n", Settings{GCPercent: 400}},
		{"no cgroup file", "", "", "", Settings{GCPercent: 400}},
		{"GOGC and GOMEMLIMIT set by the user", "50", "100MiB", "536870912\n", Settings{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("GOGC", tc.gogc)
			t.Setenv("GOMEMLIMIT", tc.gomemlimit)
			_ = os.Remove(cgroupMemoryMax)
			if tc.file != "" {
				if err := os.WriteFile(cgroupMemoryMax, []byte(tc.file), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			if got := Apply(); got != tc.want {
				t.Errorf("Apply() = %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestOneProcessorAdvice(t *testing.T) {
	if got := OneProcessorAdvice(1); !strings.Contains(got, "GOMAXPROCS=1") || !strings.Contains(got, "2 CPUs") {
		t.Errorf("OneProcessorAdvice(1) = %q, want advice naming GOMAXPROCS=1 and 2 CPUs", got)
	}
	for _, procs := range []int{2, 64} {
		if got := OneProcessorAdvice(procs); got != "" {
			t.Errorf("OneProcessorAdvice(%d) = %q, want none", procs, got)
		}
	}
}
