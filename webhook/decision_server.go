package webhook

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/go-logr/logr"

	"github.com/sallyport/sallyport/internal/decision"
	"github.com/sallyport/sallyport/internal/decisionlog"
)

// Decider answers decision requests; *decision.Engine is one.
type Decider interface {
	Decide(ctx context.Context, req *decision.Request) *decision.Decision
}

// DecisionServerOptions configure the decision server.
type DecisionServerOptions struct {
	// BindAddress is host:port to listen on.
	BindAddress string
	// CertDir holds tls.crt and tls.key; they are reloaded when they change.
	CertDir string
	// Insecure serves plain HTTP. It is refused unless BindAddress is a
	// loopback address: tokens must not cross a network in the clear.
	Insecure bool
	// MaxBodyBytes bounds a request body; larger ones get 413. Default 64 KiB.
	MaxBodyBytes int64
}

// DecisionServer serves the decision API: POST /v1/decide and the forward-auth
// profiles under /v1/check/. It runs on every replica.
type DecisionServer struct {
	opts    DecisionServerOptions
	decider Decider
	log     *decisionlog.Logger
	ready   func() bool
	logger  logr.Logger
	now     func() time.Time
}

// DefaultMaxBodyBytes bounds a decision request: a token, a path and the
// bounded scopes and attributes fit well within it.
const DefaultMaxBodyBytes = 64 << 10

// NewDecisionServer returns a server that asks d and logs every decision to
// log. ready gates answers until the first policy snapshot is built.
func NewDecisionServer(o DecisionServerOptions, d Decider, log *decisionlog.Logger, ready func() bool, logger logr.Logger) *DecisionServer {
	if o.MaxBodyBytes <= 0 {
		o.MaxBodyBytes = DefaultMaxBodyBytes
	}
	return &DecisionServer{opts: o, decider: d, log: log, ready: ready, logger: logger, now: time.Now}
}

// NeedLeaderElection implements manager.LeaderElectionRunnable: every
// replica decides.
func (s *DecisionServer) NeedLeaderElection() bool { return false }

// Handler returns the HTTP handler of the decision API.
func (s *DecisionServer) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/decide", s.serveDecide)
	mux.HandleFunc("/v1/check/nginx", s.forwardAuth(nginxProfile))
	mux.HandleFunc("/v1/check/traefik", s.forwardAuth(traefikProfile))
	mux.HandleFunc("/v1/check/envoy/", s.forwardAuth(envoyProfile))
	mux.HandleFunc("/v1/check/envoy", s.forwardAuth(envoyProfile))
	return mux
}

// Start serves until ctx ends, then stops accepting and drains in-flight
// requests.
func (s *DecisionServer) Start(ctx context.Context) error {
	srv := &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      10 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    32 << 10,
	}
	// HTTP/1.1 and HTTP/2: gateways keep connections alive either way.
	ln, err := listen(ctx, "decision API", s.opts.BindAddress, s.opts.CertDir, s.opts.Insecure, []string{"h2", "http/1.1"}, s.logger)
	if err != nil {
		return err
	}
	s.logger.Info("Serving the decision API", "address", ln.Addr().String(), "tls", !s.opts.Insecure)

	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("serve decision API: %w", err)
	case <-ctx.Done():
	}
	shutdown, cancel := context.WithTimeout(context.Background(), 25*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdown); err != nil {
		return fmt.Errorf("drain decision API: %w", err)
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve decision API: %w", err)
	}
	return nil
}

// decide asks the decider, logs the decision and returns it.
func (s *DecisionServer) decide(ctx context.Context, req *decision.Request, start time.Time, endpoint string) *decision.Decision {
	d := s.decider.Decide(ctx, req)
	// One clock read: the metric and the log line report the same latency.
	latency := s.now().Sub(start)
	observeDecision(d, endpoint, latency)
	if err := s.log.Log(&decisionlog.Entry{
		Decision: d, Request: req, Latency: latency,
		Enforcement: "Enforce", Endpoint: endpoint,
	}); err != nil {
		s.logger.Error(err, "Could not log a decision", "decisionID", d.ID)
	}
	if d.DryRun != nil {
		observeDryRun(d)
		// Only disagreements are logged: they are what a team must see
		// before promoting a DryRun policy, and agreement would double the
		// log of every request a DryRun policy concerns.
		if dis := d.Disagreement(); dis != "" {
			shadow := &decision.Decision{ID: d.ID, Time: d.Time, Path: d.Path,
				Allowed: d.DryRun.Allowed, Connection: d.DryRun.Connection, Resource: d.DryRun.Resource}
			if err := s.log.Log(&decisionlog.Entry{
				Decision: shadow, Request: req, Latency: latency,
				Enforcement: "DryRun", Endpoint: endpoint, Disagreement: dis,
			}); err != nil {
				s.logger.Error(err, "Could not log a DryRun decision", "decisionID", d.ID)
			}
		}
	}
	return d
}
