// Command floor is the floor of the decision API load runs (see
// hack/bench/run.sh and docs/benchmarks.md): the least a Go net/http server
// must do to answer a decision request. It decodes the same JSON request
// body as POST /v1/decide into a struct with encoding/json and encodes a
// response of the decision's shape and about its size, with no policy,
// credential or logging work. sallyport's throughput is reported as a
// fraction of this server's, measured on the same machine in the same run.
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime/pprof"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/sallyport/sallyport/internal/gctune"
)

// request is the body of POST /v1/decide.
type request struct {
	Credential *struct {
		Token string `json:"token"`
	} `json:"credential"`
	Resource struct {
		Namespace string `json:"namespace"`
		Service   string `json:"service"`
		Host      string `json:"host"`
		Name      string `json:"name"`
	} `json:"resource"`
	Action     string            `json:"action"`
	Scopes     []string          `json:"scopes"`
	Attributes map[string]string `json:"attributes"`
}

// response has the decision's shape; the values are fixed strings of the
// sizes sallyport's allowed answer has.
type response struct {
	DecisionID string `json:"decisionID"`
	Allowed    bool   `json:"allowed"`
	Connection struct {
		Allowed      bool   `json:"allowed"`
		Policy       string `json:"policy,omitempty"`
		Identity     string `json:"identity,omitempty"`
		CredentialID string `json:"credentialID,omitempty"`
		Reason       string `json:"reason"`
		Message      string `json:"message,omitempty"`
	} `json:"connection"`
	Resource struct {
		Allowed bool   `json:"allowed"`
		Policy  string `json:"policy,omitempty"`
		Rule    string `json:"rule,omitempty"`
		Reason  string `json:"reason"`
		Message string `json:"message,omitempty"`
	} `json:"resource"`
}

const (
	connMessage = "credential reviewed as the policy's ServiceAccount; lifetime, reach, scopes, classification and condition allow the connection"
	ruleMessage = "the rule allows the request and no Deny rule matches it"
)

var counter atomic.Uint64

func serve(w http.ResponseWriter, r *http.Request) {
	var in request
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10)).Decode(&in); err != nil {
		http.Error(w, `{"error":"body: invalid"}`, http.StatusBadRequest)
		return
	}
	var out response
	// A 32-hex-digit ID, like sallyport's, from a counter.
	id := strconv.AppendUint(make([]byte, 0, 32), 1<<63|counter.Add(1), 16)
	out.DecisionID = string(append(id, id[:16]...))
	out.Allowed = true
	out.Connection.Allowed = true
	out.Connection.Policy = in.Resource.Namespace + "/client"
	out.Connection.Identity = "system:serviceaccount:" + in.Resource.Namespace + ":worker"
	out.Connection.CredentialID = "JTI=5f0c7a52-3b1e-4f5d-9a43-bench0000001"
	out.Connection.Reason = "Matched"
	out.Connection.Message = connMessage
	out.Resource.Allowed = true
	out.Resource.Policy = in.Resource.Namespace + "/" + in.Resource.Service
	out.Resource.Rule = "read"
	out.Resource.Reason = "Matched"
	out.Resource.Message = ruleMessage
	body, err := json.Marshal(&out)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(append(body, '\n'))
}

func main() {
	addr := flag.String("addr", "127.0.0.1:0", "loopback `host:port` to serve on (port 0 picks a free one)")
	addrFile := flag.String("addr-file", "", "write the address actually listened on to this `file` once serving")
	cpuProfile := flag.String("cpuprofile", "", "write a CPU profile of the whole run to this `file` (stopped on SIGINT/SIGTERM)")
	flag.Parse()
	// The collector as the operator sets it (GOGC=400 unless GOGC is set),
	// for the floor as for sallyport: any Go decision service can.
	gctune.Apply()
	if err := run(*addr, *addrFile, *cpuProfile); err != nil {
		fmt.Fprintln(os.Stderr, "floor:", err)
		os.Exit(1)
	}
}

func run(addr, addrFile, cpuProfile string) error {
	if cpuProfile != "" {
		f, err := os.Create(cpuProfile)
		if err != nil {
			return err
		}
		defer func() { _ = f.Close() }()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	if tcp, ok := ln.Addr().(*net.TCPAddr); !ok || !tcp.IP.IsLoopback() {
		_ = ln.Close()
		return fmt.Errorf("%s is not a loopback address", ln.Addr())
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/decide", serve)
	// The same settings as sallyport's DecisionServer.
	srv := &http.Server{
		Handler:           mux,
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
