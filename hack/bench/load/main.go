// Command load sends POST requests at a fixed rate and reports latency
// percentiles (see hack/bench/run.sh and docs/benchmarks.md). It is the
// constant-rate half of the load runs; wrk measures saturation throughput.
//
// It is open-loop, like wrk2: request i is due at start + i/rate, whatever
// happened to earlier requests. A dispatcher thread releases each request at
// its due time to whichever of -connections keep-alive connections is free;
// when none is, requests queue. Latency is counted from when the request was
// due, not from when it was sent, so a stall is charged to every request it
// delayed (no coordinated omission); the service time (from the write to
// the end of the answer) is reported beside it. Percentiles are read off all
// samples sorted, which is exact, not bucketed.
//
// To stay out of the way of the server on a small machine it speaks
// HTTP/1.1 itself over a raw connection with the request bytes built once,
// reading the status line, the headers and a Content-Length body.
package main

import (
	"bufio"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"net/url"
	"os"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "load:", err)
		os.Exit(1)
	}
}

type config struct {
	target      *url.URL
	body        []byte
	rate        float64
	duration    time.Duration
	warmup      time.Duration
	connections int
	expect      []byte
	slowFile    string
	slowOver    time.Duration
}

func run() error {
	rawURL := flag.String("url", "", "`URL` to POST to, http only")
	bodyFile := flag.String("body-file", "", "`file` holding the request body (JSON)")
	rate := flag.Float64("rate", 1000, "requests per second")
	duration := flag.Duration("duration", 30*time.Second, "how long to measure, after the warm-up")
	warmup := flag.Duration("warmup", 5*time.Second, "how long to send at the rate before measuring")
	connections := flag.Int("connections", 16, "keep-alive connections")
	expect := flag.String("expect", "", "count an answer whose body does not contain this `string` as an error")
	slowFile := flag.String("slow-file", "", "write every measured request slower than -slow-over from its due time to this `file`: its due time (Unix ns), its wait for a connection and its service time (µs), to line up with a server's execution trace (hack/bench/stalls)")
	slowOver := flag.Duration("slow-over", 2*time.Millisecond, "what -slow-file counts as slow, from the due time")
	check := flag.Bool("check", false, "send one request, print the answer, and fail unless it is 200 (and has -expect)")
	flag.Parse()

	if *rawURL == "" || *bodyFile == "" {
		return errors.New("-url and -body-file are required")
	}
	u, err := url.Parse(*rawURL)
	if err != nil {
		return err
	}
	if u.Scheme != "http" {
		return fmt.Errorf("-url: only http is supported, not %q", u.Scheme)
	}
	body, err := os.ReadFile(*bodyFile)
	if err != nil {
		return err
	}
	body = bytes.TrimRight(body, "\n")
	cfg := &config{target: u, body: body, rate: *rate, duration: *duration, warmup: *warmup,
		connections: *connections, expect: []byte(*expect), slowFile: *slowFile, slowOver: *slowOver}
	if *check {
		return checkOnce(cfg)
	}
	if err := cfg.check(); err != nil {
		return err
	}
	return measure(cfg)
}

// check refuses settings a measurement cannot use, naming the flag.
func (cfg *config) check() error {
	switch {
	case cfg.rate <= 0:
		return fmt.Errorf("-rate must be positive, not %v", cfg.rate)
	case cfg.connections <= 0:
		return fmt.Errorf("-connections must be positive, not %d", cfg.connections)
	case cfg.duration <= 0:
		return fmt.Errorf("-duration must be positive, not %s", cfg.duration)
	case cfg.warmup < 0:
		return fmt.Errorf("-warmup must not be negative, not %s", cfg.warmup)
	case cfg.slowOver <= 0:
		return fmt.Errorf("-slow-over must be positive, not %s", cfg.slowOver)
	}
	return nil
}

// requestBytes is the whole HTTP/1.1 request.
func requestBytes(cfg *config) []byte {
	path := cfg.target.RequestURI()
	var b bytes.Buffer
	fmt.Fprintf(&b, "POST %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: sallyport-bench-load\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n",
		path, cfg.target.Host, len(cfg.body))
	b.Write(cfg.body)
	return b.Bytes()
}

// conn is one keep-alive connection.
type conn struct {
	addr string
	req  []byte
	c    net.Conn
	r    *bufio.Reader
	body []byte
}

func (c *conn) dial() error {
	if c.c != nil {
		_ = c.c.Close()
	}
	nc, err := net.DialTimeout("tcp", c.addr, 5*time.Second)
	if err != nil {
		c.c = nil
		return err
	}
	c.c, c.r = nc, bufio.NewReaderSize(nc, 16<<10)
	return nil
}

// do sends the request and reads the answer; it returns the status code and
// the body, which is valid until the next call.
func (c *conn) do() (int, []byte, error) {
	if c.c == nil {
		if err := c.dial(); err != nil {
			return 0, nil, err
		}
	}
	_ = c.c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.c.Write(c.req); err != nil {
		return 0, nil, c.fail(err)
	}
	line, err := c.r.ReadSlice('\n')
	if err != nil {
		return 0, nil, c.fail(err)
	}
	// "HTTP/1.1 200 OK\r\n"
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) {
		return 0, nil, c.fail(fmt.Errorf("bad status line %q", line))
	}
	code, err := strconv.Atoi(string(line[9:12]))
	if err != nil {
		return 0, nil, c.fail(fmt.Errorf("bad status line %q", line))
	}
	length, closing := -1, false
	for {
		h, err := c.r.ReadSlice('\n')
		if err != nil {
			return 0, nil, c.fail(err)
		}
		h = bytes.TrimRight(h, "\r\n")
		if len(h) == 0 {
			break
		}
		name, value, ok := bytes.Cut(h, []byte(":"))
		if !ok {
			continue
		}
		value = bytes.TrimSpace(value)
		switch {
		case bytes.EqualFold(name, []byte("Content-Length")):
			if length, err = strconv.Atoi(string(value)); err != nil {
				return 0, nil, c.fail(fmt.Errorf("bad Content-Length %q", value))
			}
		case bytes.EqualFold(name, []byte("Transfer-Encoding")):
			return 0, nil, c.fail(fmt.Errorf("transfer encoding %q is not supported", value))
		case bytes.EqualFold(name, []byte("Connection")) && bytes.EqualFold(value, []byte("close")):
			closing = true
		}
	}
	if length < 0 {
		return 0, nil, c.fail(errors.New("answer without Content-Length"))
	}
	if cap(c.body) < length {
		c.body = make([]byte, length)
	}
	c.body = c.body[:length]
	if _, err := io.ReadFull(c.r, c.body); err != nil {
		return 0, nil, c.fail(err)
	}
	if closing {
		_ = c.c.Close()
		c.c = nil
	}
	return code, c.body, nil
}

func (c *conn) fail(err error) error {
	if c.c != nil {
		_ = c.c.Close()
		c.c = nil
	}
	return err
}

func checkOnce(cfg *config) error {
	c := &conn{addr: cfg.target.Host, req: requestBytes(cfg)}
	code, body, err := c.do()
	if c.c != nil {
		_ = c.c.Close()
	}
	if err != nil {
		return err
	}
	fmt.Printf("%d %s\n", code, bytes.TrimRight(body, "\n"))
	if code != 200 {
		return fmt.Errorf("status %d", code)
	}
	if len(cfg.expect) > 0 && !bytes.Contains(body, cfg.expect) {
		return fmt.Errorf("the answer does not contain %q", cfg.expect)
	}
	return nil
}

// worker results.
type result struct {
	latency, service []time.Duration // measured requests only
	slow             []slowRequest   // with -slow-file
	errors           int
	firstErr         error
}

// slowRequest is a measured request slower than -slow-over.
type slowRequest struct {
	due            time.Time
	queue, service time.Duration
}

func measure(cfg *config) error {
	interval := time.Duration(float64(time.Second) / cfg.rate)
	if interval <= 0 {
		return errors.New("-rate is too high")
	}
	total := int64(math.Ceil(cfg.rate * (cfg.warmup + cfg.duration).Seconds()))
	req := requestBytes(cfg)

	conns := make([]*conn, cfg.connections)
	for i := range conns {
		conns[i] = &conn{addr: cfg.target.Host, req: req}
		if err := conns[i].dial(); err != nil {
			return fmt.Errorf("connect: %w", err)
		}
	}
	start := time.Now().Add(50 * time.Millisecond)
	measureFrom := start.Add(cfg.warmup)

	// The schedule: due times, in order, taken by whichever connection is
	// free. A full backlog means the server is far past saturation.
	work := make(chan time.Time, min(total, 1<<20))
	var late atomic.Int64
	go dispatch(work, start, interval, total, &late)

	perConn := int(total)/cfg.connections + 1
	results := make([]result, cfg.connections)
	var wg sync.WaitGroup
	for k := range cfg.connections {
		wg.Go(func() {
			res := &results[k]
			res.latency = make([]time.Duration, 0, perConn)
			res.service = make([]time.Duration, 0, perConn)
			c := conns[k]
			for due := range work {
				sent := time.Now()
				code, body, err := c.do()
				done := time.Now()
				if err == nil && code != 200 {
					err = fmt.Errorf("status %d", code)
				}
				if err == nil && len(cfg.expect) > 0 && !bytes.Contains(body, cfg.expect) {
					err = fmt.Errorf("the answer does not contain %q", cfg.expect)
				}
				if due.Before(measureFrom) {
					continue
				}
				if err != nil {
					res.errors++
					if res.firstErr == nil {
						res.firstErr = err
					}
					continue
				}
				res.latency = append(res.latency, done.Sub(due))
				res.service = append(res.service, done.Sub(sent))
				if cfg.slowFile != "" && done.Sub(due) > cfg.slowOver {
					res.slow = append(res.slow, slowRequest{due: due, queue: sent.Sub(due), service: done.Sub(sent)})
				}
			}
			if c.c != nil {
				_ = c.c.Close()
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(measureFrom)

	var latency, service []time.Duration
	var slow []slowRequest
	errCount := 0
	var firstErr error
	for i := range results {
		latency = append(latency, results[i].latency...)
		service = append(service, results[i].service...)
		slow = append(slow, results[i].slow...)
		errCount += results[i].errors
		if firstErr == nil {
			firstErr = results[i].firstErr
		}
	}
	if len(latency) == 0 {
		return fmt.Errorf("no request succeeded: %w", firstErr)
	}
	slices.Sort(latency)
	slices.Sort(service)
	n := len(latency)
	fmt.Printf("load: %s for %s (after %s warm-up) at %.0f req/s over %d connections\n",
		cfg.target, cfg.duration, cfg.warmup, cfg.rate, cfg.connections)
	fmt.Printf("load: %d answers, %d errors, achieved %.0f req/s; the generator dispatched %d requests more than 1 ms after they were due\n",
		n, errCount, float64(n+errCount)/elapsed.Seconds(), late.Load())
	if firstErr != nil {
		fmt.Printf("load: first error: %v\n", firstErr)
	}
	fmt.Printf("load: %-28s %9s %9s %9s %9s %9s %9s\n", "", "p50", "p90", "p99", "p99.9", "p99.99", "max")
	for _, s := range []struct {
		name string
		v    []time.Duration
	}{{"latency (from due time)", latency}, {"service time (from write)", service}} {
		fmt.Printf("load: %-28s %9s %9s %9s %9s %9s %9s\n", s.name,
			ms(pct(s.v, 50)), ms(pct(s.v, 90)), ms(pct(s.v, 99)), ms(pct(s.v, 99.9)), ms(pct(s.v, 99.99)), ms(s.v[len(s.v)-1]))
	}
	// One line for scripts; microseconds.
	fmt.Printf("RESULT rate=%.0f answers=%d errors=%d p50_us=%d p90_us=%d p99_us=%d p999_us=%d max_us=%d svc_p50_us=%d svc_p99_us=%d svc_p999_us=%d\n",
		cfg.rate, n, errCount,
		pct(latency, 50).Microseconds(), pct(latency, 90).Microseconds(), pct(latency, 99).Microseconds(),
		pct(latency, 99.9).Microseconds(), latency[n-1].Microseconds(),
		pct(service, 50).Microseconds(), pct(service, 99).Microseconds(), pct(service, 99.9).Microseconds())
	if cfg.slowFile != "" {
		if err := writeSlow(cfg.slowFile, cfg.slowOver, slow); err != nil {
			return err
		}
	}
	if errCount > 0 {
		return fmt.Errorf("%d requests failed, the first with: %w", errCount, firstErr)
	}
	return nil
}

// writeSlow writes the slow requests in due-time order, one per line: the
// due time in Unix nanoseconds (wall clock, which an execution trace's clock
// snapshots map to), then the wait for a free connection and the service
// time in microseconds.
func writeSlow(path string, over time.Duration, slow []slowRequest) error {
	slices.SortFunc(slow, func(a, b slowRequest) int { return a.due.Compare(b.due) })
	var b bytes.Buffer
	fmt.Fprintf(&b, "# requests slower than %s from their due time: due_unix_ns queue_us service_us\n", over)
	for _, r := range slow {
		fmt.Fprintf(&b, "%d %d %d\n", r.due.UnixNano(), r.queue.Microseconds(), r.service.Microseconds())
	}
	if err := os.WriteFile(path, b.Bytes(), 0o600); err != nil {
		return fmt.Errorf("-slow-file: %w", err)
	}
	return nil
}

// dispatch sends the due time of request i, start + i*interval, at that
// time. It sleeps on its own OS thread with nanosleep(2): the Go runtime's
// timers wake up to a millisecond late on Linux (the network poller waits
// in whole milliseconds), which would be charged to the server. It counts
// the requests it could not send within 1 ms of their due time: a
// generator that falls behind is not measuring the server any more.
func dispatch(work chan<- time.Time, start time.Time, interval time.Duration, total int64, late *atomic.Int64) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	defer close(work)
	for i := range total {
		due := start.Add(time.Duration(i) * interval)
		if d := time.Until(due); d > 0 {
			ts := syscall.NsecToTimespec(d.Nanoseconds())
			// On EINTR, ts holds what is left to sleep.
			err := syscall.Nanosleep(&ts, &ts)
			for errors.Is(err, syscall.EINTR) {
				err = syscall.Nanosleep(&ts, &ts)
			}
		} else if -d > time.Millisecond {
			late.Add(1)
		}
		work <- due
	}
}

// pct is the q-th percentile of sorted samples: the smallest sample that at
// least q% of the samples do not exceed.
func pct(sorted []time.Duration, q float64) time.Duration {
	i := int(math.Ceil(q/100*float64(len(sorted)))) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

func ms(d time.Duration) string {
	return strconv.FormatFloat(float64(d)/float64(time.Millisecond), 'f', 3, 64) + "ms"
}
