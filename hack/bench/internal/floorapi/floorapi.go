// Package floorapi is the floor of the decision API load runs (see
// hack/bench/run.sh and docs/benchmarks.md): the least a Go net/http handler
// must do to answer a decision request. It decodes the same JSON request
// body as POST /v1/decide into a struct with encoding/json and encodes a
// response of the decision's shape and about its size, with no policy,
// credential or logging work.
//
// hack/bench/floor serves it from a process of its own; hack/bench/decide
// serves it with -handler floor from a process that holds everything
// sallyport's does (its imports and a compiled store), which tells the cost
// of the decision apart from the cost of the process's live heap.
package floorapi

import (
	"encoding/json"
	"net/http"
	"strconv"
	"sync/atomic"
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

// Handler serves POST /v1/decide as the floor: decode, build an answer of
// the decision's shape, encode.
func Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/decide", serve)
	return mux
}

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
