package webhook

import (
	"sync"

	"github.com/sallyport/sallyport/internal/decision"
)

// appendDecision appends the /v1/decide answer; decision.AppendJSON writes
// it, so that `sallyport decide` prints exactly what this server returns.
func appendDecision(b []byte, d *decision.Decision) []byte { return decision.AppendJSON(b, d) }

var responsePool = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}

// ParseDecideRequest decodes and validates one /v1/decide request body with
// the server's own strict decoder, for `sallyport decide`, which must
// accept exactly what the server accepts. Its errors name the field, as the
// server's 400 answers do.
func ParseDecideRequest(body []byte) (*decision.Request, error) {
	return parseDecideRequest(string(body))
}
