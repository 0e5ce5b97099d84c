package webhook

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/sallyport/sallyport/internal/decision"
)

// jsonContentType is shared by every answer rather than allocated per
// request; net/http only reads it.
var jsonContentType = []string{"application/json"}

// decideRequest is the body of POST /v1/decide.
type decideRequest struct {
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

// badRequest is a malformed request: the field and what is wrong with it.
type badRequest struct {
	Field string
	Msg   string
}

func (e *badRequest) Error() string {
	if e.Field == "" {
		return e.Msg
	}
	return e.Field + ": " + e.Msg
}

func (s *DecisionServer) serveDecide(w http.ResponseWriter, r *http.Request) {
	start := s.now()
	if !s.ready() {
		writeError(w, http.StatusServiceUnavailable, errors.New("not ready: the first policy snapshot is not built yet"))
		return
	}
	if ct := r.Header.Get("Content-Type"); ct != "" && !strings.HasPrefix(ct, "application/json") {
		writeError(w, http.StatusUnsupportedMediaType, fmt.Errorf("Content-Type %q: must be application/json", ct))
		return
	}
	req, err := decodeDecideRequest(http.MaxBytesReader(w, r.Body, s.opts.MaxBodyBytes))
	if err != nil {
		if mbe, ok := errors.AsType[*http.MaxBytesError](err); ok {
			writeError(w, http.StatusRequestEntityTooLarge, fmt.Errorf("body: larger than %d bytes", mbe.Limit))
			return
		}
		writeError(w, http.StatusBadRequest, err)
		return
	}
	d := s.decide(r.Context(), req, start, "decide")
	buf, ok := responsePool.Get().(*[]byte)
	if !ok {
		buf = new([]byte)
	}
	*buf = appendDecision((*buf)[:0], d)
	h := w.Header()
	h["Content-Type"] = jsonContentType
	h.Set("X-Sallyport-Decision-Id", d.ID)
	_, _ = w.Write(*buf)
	if cap(*buf) <= 16<<10 {
		responsePool.Put(buf)
	}
}

// decodeDecideRequest reads and validates one request. Every error names the
// offending field; nothing is decided on a request that fails.
func decodeDecideRequest(body io.Reader) (*decision.Request, error) {
	raw, err := io.ReadAll(body)
	if err != nil {
		return nil, err
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	var in decideRequest
	if err := dec.Decode(&in); err != nil {
		return nil, jsonError(err)
	}
	if dec.More() {
		return nil, &badRequest{Field: "body", Msg: "more than one JSON value"}
	}
	req := &decision.Request{
		Target: decision.Target{
			Namespace: in.Resource.Namespace, Service: in.Resource.Service,
			Host: in.Resource.Host, Name: in.Resource.Name,
		},
		Action:     in.Action,
		Scopes:     in.Scopes,
		Attributes: in.Attributes,
	}
	if in.Credential != nil {
		req.Token = in.Credential.Token
	}
	if err := decision.Validate(req); err != nil {
		return nil, err
	}
	return req, nil
}

// jsonError names the field a decoding error is about.
func jsonError(err error) error {
	if te, ok := errors.AsType[*json.UnmarshalTypeError](err); ok {
		field := te.Field
		if field == "" {
			field = "body"
		}
		return &badRequest{Field: field, Msg: fmt.Sprintf("must be %s, not %s", jsonType(te.Type.Kind().String()), te.Value)}
	}
	if se, ok := errors.AsType[*json.SyntaxError](err); ok {
		return &badRequest{Field: "body", Msg: fmt.Sprintf("invalid JSON at byte %d: %v", se.Offset, se)}
	}
	if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
		return err
	}
	if errors.Is(err, io.EOF) {
		return &badRequest{Field: "body", Msg: "empty; a JSON object is required"}
	}
	if errors.Is(err, io.ErrUnexpectedEOF) {
		return &badRequest{Field: "body", Msg: "truncated JSON"}
	}
	msg := err.Error()
	// encoding/json reports unknown fields as `json: unknown field "x"`.
	if f, ok := strings.CutPrefix(msg, "json: unknown field "); ok {
		if name := strings.Trim(f, `"`); name != "" {
			return &badRequest{Field: name, Msg: "unknown field"}
		}
		return &badRequest{Field: "body", Msg: `unknown field ""`}
	}
	return &badRequest{Field: "body", Msg: strings.TrimPrefix(msg, "json: ")}
}

func jsonType(kind string) string {
	switch kind {
	case "string":
		return "a string"
	case "slice":
		return "a list"
	case "map", "struct", "ptr":
		return "an object"
	}
	return kind
}

func writeError(w http.ResponseWriter, code int, err error) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	body, _ := json.Marshal(struct {
		Error string `json:"error"`
	}{err.Error()})
	_, _ = w.Write(append(body, '\n'))
}
