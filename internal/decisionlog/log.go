// Package decisionlog writes the decision log: one JSON line per decision,
// with both gates, so an auditor can tell why a connection was allowed and
// why an action was permitted or denied. It never writes a credential.
//
// Lines are encoded on the deciding goroutine and written by one writer
// goroutine through a bounded queue. By default a full queue applies
// back-pressure (no decision goes unlogged); in drop mode a full queue drops
// the line and counts it, so logging can never slow decisions down.
package decisionlog

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/sallyport/sallyport/internal/decision"
)

// SchemaVersion is the version of the line format. It changes only when a
// field changes meaning or goes away; new fields may appear within a version.
const SchemaVersion = 1

// Mode says what a full queue does.
type Mode string

const (
	// ModeBlock makes the deciding goroutine wait for room: no line is lost.
	ModeBlock Mode = "block"
	// ModeDrop drops the line and counts it in
	// sallyport_decision_log_dropped_total.
	ModeDrop Mode = "drop"
)

// ParseMode parses a --decision-log-mode value.
func ParseMode(s string) (Mode, error) {
	switch Mode(s) {
	case ModeBlock, ModeDrop:
		return Mode(s), nil
	}
	return "", fmt.Errorf("decision log mode %q: must be %q or %q", s, ModeBlock, ModeDrop)
}

// Options configure a Logger.
type Options struct {
	Mode Mode
	// QueueLength is how many encoded lines may wait for the writer; default
	// 4096.
	QueueLength int
}

// Entry is what one line records besides the decision itself.
type Entry struct {
	Decision *decision.Decision
	Request  *decision.Request
	// Latency is the time from receiving the request to the decision.
	Latency time.Duration
	// Enforcement is "Enforce", or "DryRun" for a shadow decision.
	Enforcement string
	// Endpoint is the API the decision was asked through ("decide",
	// "check/nginx", "grpc", …).
	Endpoint string
	// Disagreement marks a DryRun line: "WouldDeny" or "WouldAllow", how
	// the shadow decision differs from the enforced one with the same
	// decisionID. Empty on Enforce lines.
	Disagreement string
}

var (
	written = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "sallyport_decision_log_lines_total",
		Help: "Decision log lines written.",
	})
	dropped = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "sallyport_decision_log_dropped_total",
		Help: "Decision log lines dropped because the queue was full (drop mode only).",
	})
	writeErrors = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "sallyport_decision_log_write_errors_total",
		Help: "Failed writes to the decision log destination.",
	})
)

func init() {
	metrics.Registry.MustRegister(written, dropped, writeErrors)
}

// Logger writes decision lines to one destination.
type Logger struct {
	mode  Mode
	queue chan *[]byte
	dst   io.Writer
	w     *bufio.Writer
	done  chan struct{}

	closeOnce sync.Once
	closed    atomic.Bool
	// mu orders Log's sends against Close's close of the queue.
	mu sync.RWMutex

	dropped atomic.Uint64
	err     atomic.Pointer[error]
}

// ErrClosed is returned by Log after Close.
var ErrClosed = errors.New("decision log closed")

var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}

// New starts a logger writing to w. Close flushes and stops it.
func New(w io.Writer, o Options) *Logger {
	if o.Mode == "" {
		o.Mode = ModeBlock
	}
	if o.QueueLength <= 0 {
		o.QueueLength = 4096
	}
	l := &Logger{
		mode:  o.Mode,
		queue: make(chan *[]byte, o.QueueLength),
		dst:   w,
		w:     bufio.NewWriterSize(w, 64<<10),
		done:  make(chan struct{}),
	}
	go l.run()
	return l
}

// Log encodes e and queues it. In block mode it waits for room; in drop mode
// it drops the line when the queue is full and returns nil.
func (l *Logger) Log(e *Entry) error {
	buf, ok := bufPool.Get().(*[]byte)
	if !ok {
		buf = new([]byte)
	}
	*buf = appendEntry((*buf)[:0], e)
	l.mu.RLock()
	defer l.mu.RUnlock()
	if l.closed.Load() {
		bufPool.Put(buf)
		return ErrClosed
	}
	if l.mode == ModeDrop {
		select {
		case l.queue <- buf:
		default:
			bufPool.Put(buf)
			l.dropped.Add(1)
			dropped.Inc()
		}
		return nil
	}
	l.queue <- buf
	return nil
}

// Dropped returns how many lines this logger dropped.
func (l *Logger) Dropped() uint64 { return l.dropped.Load() }

// Err returns the first write error, if any. Writing goes on after an error:
// a destination that recovers (a full disk freed) gets the later lines.
func (l *Logger) Err() error {
	if p := l.err.Load(); p != nil {
		return *p
	}
	return nil
}

func (l *Logger) run() {
	defer close(l.done)
	for buf := range l.queue {
		l.write(buf)
		// Flush when the queue is momentarily empty: lines reach the
		// destination promptly at low rates and in large writes at high ones.
		if len(l.queue) == 0 {
			l.flush()
		}
	}
	l.flush()
}

func (l *Logger) write(buf *[]byte) {
	if _, err := l.w.Write(*buf); err != nil {
		l.fail(err)
	} else {
		written.Inc()
	}
	if cap(*buf) <= 64<<10 {
		bufPool.Put(buf)
	}
}

func (l *Logger) flush() {
	if err := l.w.Flush(); err != nil {
		l.fail(err)
	}
}

func (l *Logger) fail(err error) {
	writeErrors.Inc()
	err = fmt.Errorf("write decision log: %w", err)
	l.err.CompareAndSwap(nil, &err)
	// bufio.Writer keeps its error forever; start over so later lines can
	// still be written when the destination recovers.
	l.w.Reset(l.dst)
}

// Close writes what is queued, flushes, and stops the writer. Log calls
// after Close return ErrClosed.
func (l *Logger) Close() error {
	l.closeOnce.Do(func() {
		l.mu.Lock()
		l.closed.Store(true)
		close(l.queue)
		l.mu.Unlock()
		<-l.done
	})
	return l.Err()
}
