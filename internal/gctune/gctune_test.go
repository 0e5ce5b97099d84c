package gctune

import (
	"os"
	"path/filepath"
	"runtime/debug"
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
