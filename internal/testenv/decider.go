package testenv

import (
	"os"
	"path/filepath"

	"github.com/sallyport/sallyport/internal/manager"
)

// Decider is an operator the end-to-end suites ask for decisions.
type Decider struct {
	Op *manager.Operator
	// URL is the decision API's base URL (plain HTTP, loopback).
	URL string
	// GRPCAddr is the ext_authz address; empty when it is off.
	GRPCAddr string
	// LogPath is the decision log file.
	LogPath string
}

// StartDecider starts the operator as StartOperator does, serving the
// decision API over plain HTTP on a free loopback address (and ext_authz on
// another when grpc is set), with its decision log in a new temporary
// directory; o's other fields are kept. stop stops the operator and removes
// the directory.
func (e *Env) StartDecider(o manager.Options, grpc bool) (d *Decider, stop func(), err error) {
	d = &Decider{}
	httpAddr, err := FreeLoopbackAddr()
	if err != nil {
		return nil, nil, err
	}
	o.GRPCBindAddress = "0"
	if grpc {
		if d.GRPCAddr, err = FreeLoopbackAddr(); err != nil {
			return nil, nil, err
		}
		o.GRPCBindAddress = d.GRPCAddr
	}
	dir, err := os.MkdirTemp("", "sallyport-decider-")
	if err != nil {
		return nil, nil, err
	}
	d.URL, d.LogPath = "http://"+httpAddr, filepath.Join(dir, "decisions.log")
	o.DecisionBindAddress, o.DecisionInsecure, o.DecisionLog = httpAddr, true, d.LogPath
	op, stopOp, err := e.StartOperator(o)
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, nil, err
	}
	d.Op = op
	return d, func() {
		stopOp()
		_ = os.RemoveAll(dir)
	}, nil
}
