// Command grpcload drives Envoy's ext_authz API
// (envoy.service.auth.v3.Authorization/Check) at a fixed concurrency and
// reports req/s, p50, p99 and p99.9 (see hack/bench/run.sh and
// docs/benchmarks.md). It is the gRPC counterpart of wrk in the saturation
// phase and is run with the same settings: -connections separate HTTP/2
// connections, each with one request in flight at a time (a closed loop,
// like wrk's connections), for a warm-up and then a measured duration.
//
// The CheckRequest is what Envoy sends for the benchmark request of
// hack/bench/decide: GET of the same path with the same bearer token, and
// the route's context extensions naming the namespace, the service and the
// scopes. It is built once from -body-file (the /v1/decide body) and shared
// by all workers; only its answer is checked.
//
// Its last line is one RESULT line in the format run.sh reads from wrk:
//
//	RESULT requests=… rps=… p50_us=… p99_us=… p999_us=… max_us=… errors=… non2xx=…
//
// where non2xx counts answers whose status is not OK (a denial).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/encoding/protojson"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "grpcload:", err)
		os.Exit(1)
	}
}

func run() error {
	addr := flag.String("addr", "", "ext_authz `host:port` (plain HTTP/2, loopback)")
	bodyFile := flag.String("body-file", "", "the /v1/decide request body (JSON) the CheckRequest is made from")
	connections := flag.Int("connections", 16, "gRPC connections, each with one request in flight")
	duration := flag.Duration("duration", 15*time.Second, "how long to measure, after the warm-up; 0: only warm up, report nothing")
	warmup := flag.Duration("warmup", 5*time.Second, "how long to send before measuring")
	check := flag.Bool("check", false, "send one request, print the answer, and fail unless it is OK")
	flag.Parse()
	if *addr == "" || *bodyFile == "" {
		return errors.New("-addr and -body-file are required")
	}
	if *connections < 1 {
		return errors.New("-connections must be at least 1")
	}
	body, err := os.ReadFile(*bodyFile)
	if err != nil {
		return fmt.Errorf("read the request body: %w", err)
	}
	req, err := checkRequest(body)
	if err != nil {
		return err
	}
	if *check {
		return checkOnce(*addr, req)
	}
	res, err := drive(*addr, req, *connections, *warmup, *duration)
	if err != nil {
		return err
	}
	if *duration <= 0 {
		fmt.Printf("warmed up for %s\n", *warmup)
		return nil
	}
	if len(res.latencies) == 0 {
		return errors.New("no request completed in the measured period")
	}
	res.print()
	return nil
}

// decideBody is the part of a /v1/decide body the CheckRequest carries.
type decideBody struct {
	Credential struct {
		Token string `json:"token"`
	} `json:"credential"`
	Resource struct {
		Namespace string `json:"namespace"`
		Service   string `json:"service"`
		Name      string `json:"name"`
	} `json:"resource"`
	Action string   `json:"action"`
	Scopes []string `json:"scopes"`
}

// checkRequest maps a /v1/decide body to the CheckRequest Envoy would send
// for the same request through a route that names the service.
func checkRequest(body []byte) (*authv3.CheckRequest, error) {
	var b decideBody
	if err := json.Unmarshal(body, &b); err != nil {
		return nil, fmt.Errorf("decode the request body: %w", err)
	}
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Id:     "bench",
			Method: b.Action,
			Path:   b.Resource.Name,
			Host:   b.Resource.Service + "." + b.Resource.Namespace + ".svc:8080",
			Scheme: "http",
			Headers: map[string]string{
				"authorization": "Bearer " + b.Credential.Token,
				":method":       b.Action,
				":path":         b.Resource.Name,
			},
		}},
		ContextExtensions: map[string]string{
			"namespace": b.Resource.Namespace,
			"service":   b.Resource.Service,
			"scopes":    strings.Join(b.Scopes, " "),
		},
	}}, nil
}

func dial(addr string) (*grpc.ClientConn, error) {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	return conn, nil
}

func checkOnce(addr string, req *authv3.CheckRequest) error {
	conn, err := dial(addr)
	if err != nil {
		return err
	}
	defer func() { _ = conn.Close() }()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := authv3.NewAuthorizationClient(conn).Check(ctx, req)
	if err != nil {
		return fmt.Errorf("check: %w", err)
	}
	fmt.Println(protojson.Format(resp))
	if c := codes.Code(resp.GetStatus().GetCode()); c != codes.OK {
		return fmt.Errorf("answer is %s, not OK: %s", c, resp.GetStatus().GetMessage())
	}
	return nil
}

// result is one measured run.
type result struct {
	elapsed   time.Duration
	latencies []time.Duration
	errors    int64
	denied    int64
}

// drive runs n workers, each on its own connection, for warmup+duration,
// and keeps the latencies of requests started after the warm-up.
func drive(addr string, req *authv3.CheckRequest, n int, warmup, duration time.Duration) (*result, error) {
	conns := make([]*grpc.ClientConn, n)
	for i := range conns {
		c, err := dial(addr)
		if err != nil {
			return nil, err
		}
		defer func() { _ = c.Close() }()
		// Connect now, not on the first request of the warm-up.
		c.Connect()
		conns[i] = c
	}
	start := time.Now()
	measureFrom := start.Add(warmup)
	end := measureFrom.Add(duration)
	var errs, denied atomic.Int64
	samples := make([][]time.Duration, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			client := authv3.NewAuthorizationClient(conns[i])
			lat := make([]time.Duration, 0, 1<<16)
			for {
				t0 := time.Now()
				if !t0.Before(end) {
					break
				}
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				resp, err := client.Check(ctx, req)
				cancel()
				t1 := time.Now()
				if t0.Before(measureFrom) {
					continue
				}
				switch {
				case err != nil:
					errs.Add(1)
				case resp.GetStatus().GetCode() != int32(codes.OK):
					denied.Add(1)
				}
				lat = append(lat, t1.Sub(t0))
			}
			samples[i] = lat
		})
	}
	wg.Wait()
	r := &result{elapsed: time.Since(measureFrom), errors: errs.Load(), denied: denied.Load()}
	for _, s := range samples {
		r.latencies = append(r.latencies, s...)
	}
	slices.Sort(r.latencies)
	return r, nil
}

// percentile returns the p-th percentile of sorted samples, in
// microseconds, by the nearest-rank method.
func percentile(sorted []time.Duration, p float64) int64 {
	i := int(math.Ceil(p/100*float64(len(sorted)))) - 1
	i = max(0, min(i, len(sorted)-1))
	return sorted[i].Microseconds()
}

func (r *result) print() {
	n := len(r.latencies)
	fmt.Printf("%d requests in %.2fs over gRPC ext_authz; %d errors, %d not OK\n", n, r.elapsed.Seconds(), r.errors, r.denied)
	fmt.Printf("RESULT requests=%d rps=%.1f p50_us=%d p99_us=%d p999_us=%d max_us=%d errors=%d non2xx=%d\n",
		n, float64(n)/r.elapsed.Seconds(),
		percentile(r.latencies, 50), percentile(r.latencies, 99), percentile(r.latencies, 99.9),
		r.latencies[n-1].Microseconds(), r.errors, r.denied)
}
