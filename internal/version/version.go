// Package version reports which build of sallyport is running.
package version

import (
	"fmt"
	"runtime"
	"runtime/debug"
)

// Version is stamped at build time with -ldflags "-X …/internal/version.Version=…";
// an unstamped build reports "dev".
var Version = "dev"

// Info describes the running build.
type Info struct {
	Version   string `json:"version"`
	Revision  string `json:"revision,omitempty"`
	Modified  bool   `json:"modified,omitempty"`
	GoVersion string `json:"goVersion"`
	Platform  string `json:"platform"`
}

// Get returns the build information, with the VCS revision when the binary
// was built from a checkout.
func Get() Info {
	info := Info{Version: Version, GoVersion: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				info.Revision = s.Value
			case "vcs.modified":
				info.Modified = s.Value == "true"
			}
		}
	}
	return info
}

// String formats the build information on one line.
func (i Info) String() string {
	s := fmt.Sprintf("sallyport %s (%s, %s)", i.Version, i.GoVersion, i.Platform)
	if i.Revision != "" {
		s += " revision " + i.Revision
		if i.Modified {
			s += " (modified)"
		}
	}
	return s
}
