// Command floor is the floor of the decision API load runs (see
// hack/bench/run.sh and docs/benchmarks.md): the least a Go net/http server
// must do to answer a decision request (package floorapi), in a process
// that holds nothing else. sallyport's throughput is reported as a fraction
// of this server's, measured on the same machine in the same run.
package main

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/sallyport/sallyport/hack/bench/internal/floorapi"
	"github.com/sallyport/sallyport/hack/bench/internal/liveheap"
	"github.com/sallyport/sallyport/hack/bench/internal/recording"
	"github.com/sallyport/sallyport/internal/gctune"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:0", "loopback `host:port` to serve on (port 0 picks a free one)")
	addrFile := flag.String("addr-file", "", "write the address actually listened on to this `file` once serving")
	cpuProfile := flag.String("cpuprofile", "", "write a CPU profile of the whole run to this `file` (stopped on SIGINT/SIGTERM)")
	traceFile := flag.String("trace", "", "write an execution trace (runtime/trace) of the whole run to this `file`, for hack/bench/stalls")
	flag.Parse()
	// The collector as the operator sets it (GOGC=400 unless GOGC is set),
	// for the floor as for sallyport: any Go decision service can.
	gctune.Apply()
	if err := run(*addr, *addrFile, *cpuProfile, *traceFile); err != nil {
		fmt.Fprintln(os.Stderr, "floor:", err)
		os.Exit(1)
	}
}

func run(addr, addrFile, cpuProfile, traceFile string) error {
	stopRecording, err := recording.Start(cpuProfile, traceFile)
	if err != nil {
		return err
	}
	defer func() {
		if err := stopRecording(); err != nil {
			fmt.Fprintln(os.Stderr, "floor:", err)
		}
	}()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	if tcp, ok := ln.Addr().(*net.TCPAddr); !ok || !tcp.IP.IsLoopback() {
		_ = ln.Close()
		return fmt.Errorf("%s is not a loopback address", ln.Addr())
	}
	// The same settings as sallyport's DecisionServer.
	srv := &http.Server{
		Handler:           floorapi.Handler(),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      10 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    32 << 10,
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	if addrFile != "" {
		if err := os.WriteFile(addrFile+".tmp", []byte(ln.Addr().String()+"\n"), 0o600); err != nil {
			return err
		}
		if err := os.Rename(addrFile+".tmp", addrFile); err != nil {
			return err
		}
	}
	fmt.Fprintf(os.Stderr, "floor: serving POST http://%s/v1/decide\n", ln.Addr())
	fmt.Fprintf(os.Stderr, "floor: live heap %d bytes\n", liveheap.Measure())

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	select {
	case err := <-errc:
		return err
	case <-sig:
	}
	if err := srv.Close(); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
