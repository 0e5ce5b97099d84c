// Package decisionlog writes the decision log: one JSON line per decision,
// with both gates, so an auditor can tell why a connection was allowed and
// why an action was permitted or denied. It never writes a credential.
//
// Lines are encoded on the deciding goroutine and appended to a bounded
// queue; one writer goroutine writes what has gathered, in one write, about
// every millisecond (at once when the queue is half full). Waking the writer
// per line would cost every decision a switch between goroutines, which on
// a busy core shows in the latency tail. By default a full queue applies
// back-pressure (no decision goes unlogged); in drop mode a full queue drops
// the line and counts it, so logging can never slow decisions down.
package decisionlog

import (
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
	mode Mode
	dst  io.Writer
	// max is the queue's length in lines.
	max int
	// wake tells the writer that lines wait (the first of a batch) or
	// that the queue is half full; kick tells it to write at once.
	wake, kick chan struct{}
	done       chan struct{}

	// mu guards the queue: pending holds lines encoded one after the other,
	// lines counts them; room is signalled when the writer takes them.
	mu      sync.Mutex
	room    *sync.Cond
	pending []byte
	lines   int
	closed  bool

	closeOnce sync.Once
	dropped   atomic.Uint64
	err       atomic.Pointer[error]
}

// ErrClosed is returned by Log after Close.
var ErrClosed = errors.New("decision log closed")

var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}

// gather is how long the writer lets lines gather after the first of a
// batch: one write and one goroutine switch per millisecond, not per line.
const gather = time.Millisecond

// New starts a logger writing to w. Close flushes and stops it.
func New(w io.Writer, o Options) *Logger {
	if o.Mode == "" {
		o.Mode = ModeBlock
	}
	if o.QueueLength <= 0 {
		o.QueueLength = 4096
	}
	l := &Logger{
		mode: o.Mode,
		dst:  w,
		max:  o.QueueLength,
		wake: make(chan struct{}, 1),
		kick: make(chan struct{}, 1),
		done: make(chan struct{}),
	}
	l.room = sync.NewCond(&l.mu)
	go l.run()
	return l
}

// Log encodes one line and queues it. In block mode it waits while the
// queue is full; in drop mode it drops the line instead. It returns
// ErrClosed after Close.
func (l *Logger) Log(e *Entry) error {
	buf, ok := bufPool.Get().(*[]byte)
	if !ok {
		buf = new([]byte)
	}
	*buf = appendEntry((*buf)[:0], e)
	defer bufPool.Put(buf)

	l.mu.Lock()
	for l.lines >= l.max && !l.closed {
		if l.mode == ModeDrop {
			l.mu.Unlock()
			l.dropped.Add(1)
			dropped.Inc()
			return nil
		}
		signal(l.kick)
		l.room.Wait()
	}
	if l.closed {
		l.mu.Unlock()
		return ErrClosed
	}
	l.pending = append(l.pending, *buf...)
	l.lines++
	n := l.lines
	l.mu.Unlock()
	switch {
	case n == 1:
		signal(l.wake)
	case n >= l.max/2:
		signal(l.kick)
	}
	return nil
}

// signal sends on a channel of one without waiting: a token already there
// says the same.
func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
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

// run writes batches until Close: it waits for a first line, lets more
// gather for a moment (or until the queue is half full), then takes them
// all and writes them in one write.
func (l *Logger) run() {
	defer close(l.done)
	var spare []byte
	timer := time.NewTimer(gather)
	timer.Stop()
	for {
		<-l.wake
		timer.Reset(gather)
		select {
		case <-timer.C:
		case <-l.kick:
			timer.Stop()
		}
		l.mu.Lock()
		batch, n, closed := l.pending, l.lines, l.closed
		l.pending, l.lines = spare[:0], 0
		l.room.Broadcast()
		l.mu.Unlock()
		if n > 0 {
			if _, err := l.dst.Write(batch); err != nil {
				l.fail(err)
			} else {
				written.Add(float64(n))
			}
		}
		// A batch that grew very large once is not kept.
		if cap(batch) <= 4<<20 {
			spare = batch
		} else {
			spare = nil
		}
		if closed {
			return
		}
	}
}

func (l *Logger) fail(err error) {
	writeErrors.Inc()
	err = fmt.Errorf("write decision log: %w", err)
	l.err.CompareAndSwap(nil, &err)
}

// Close writes what is queued and stops the writer. Log calls after Close
// return ErrClosed.
func (l *Logger) Close() error {
	l.closeOnce.Do(func() {
		l.mu.Lock()
		l.closed = true
		l.room.Broadcast()
		l.mu.Unlock()
		signal(l.wake)
		signal(l.kick)
		<-l.done
	})
	return l.Err()
}
