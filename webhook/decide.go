package webhook

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"

	"github.com/sallyport/sallyport/internal/decision"
)

// jsonContentType is shared by every answer rather than allocated per
// request; net/http only reads it.
var jsonContentType = []string{"application/json"}

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
	hint := r.ContentLength
	if hint > s.opts.MaxBodyBytes {
		// MaxBytesReader answers it with 413 after reading the limit.
		hint = s.opts.MaxBodyBytes
	}
	req, err := decodeDecideRequest(http.MaxBytesReader(w, r.Body, s.opts.MaxBodyBytes), hint)
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
// offending field; nothing is decided on a request that fails. sizeHint is
// the Content-Length when known (0 or -1 otherwise), already bounded by the
// caller's body limit: the body is read in one buffer of that size.
func decodeDecideRequest(body io.Reader, sizeHint int64) (*decision.Request, error) {
	raw, err := readBody(body, sizeHint)
	if err != nil {
		return nil, err
	}
	return parseDecideRequest(raw)
}

// bodyPool holds read buffers for request bodies. The parser works on one
// string copy of the body (its fields are substrings of it), so the buffer
// goes back to the pool as soon as the body is read.
var bodyPool = sync.Pool{New: func() any { b := make([]byte, 0, 4<<10); return &b }}

// maxPooledBody keeps buffers of unusually large bodies out of the pool.
const maxPooledBody = DefaultMaxBodyBytes + 1

// readBody reads all of r and returns it as a string. Unlike io.ReadAll it
// does not grow a buffer from 512 bytes: a pooled buffer is sized from
// sizeHint up front. Errors of r, such as *http.MaxBytesError, are returned
// as they are.
func readBody(r io.Reader, sizeHint int64) (string, error) {
	bp, ok := bodyPool.Get().(*[]byte)
	if !ok {
		bp = new([]byte)
	}
	defer func() {
		if cap(*bp) <= maxPooledBody {
			bodyPool.Put(bp)
		}
	}()
	buf := (*bp)[:0]
	// One byte more than the hint, so the read that reports EOF finds
	// room and needs no growth.
	if want := int(sizeHint) + 1; sizeHint > 0 && cap(buf) < want {
		buf = make([]byte, 0, want)
	}
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			break
		}
		if err != nil {
			*bp = buf
			return "", err
		}
	}
	*bp = buf
	return string(buf), nil
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
