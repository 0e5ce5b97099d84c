package e2e

import (
	"io"
	"sync"
)

var logMu sync.Mutex

// syncWriter serialises writes of the process's two output streams.
type syncWriter struct{ w io.Writer }

func (s *syncWriter) Write(p []byte) (int, error) {
	logMu.Lock()
	defer logMu.Unlock()
	return s.w.Write(p)
}
