package decision

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/sallyport/sallyport/api/v1alpha1"
	"github.com/sallyport/sallyport/internal/credential"
	"github.com/sallyport/sallyport/internal/expr"
	"github.com/sallyport/sallyport/internal/store"
)

// maxTokenLength bounds a presented token: the authenticator's bound, so a
// token the engine reads the audience of is one it would also verify.
const maxTokenLength = credential.MaxTokenSize

// errNotJWT is wrapped by every error of peekAudience: the token is not a
// JWT with exactly one audience. None of them contains the token.
var errNotJWT = errors.New("not a JWT with exactly one audience")

// peekAudience returns the one audience of a JWT without verifying it. The
// audience only picks the candidate ConnectionPolicy; the Authenticator
// verifies the token for that audience, so a forged claim gains nothing but
// a refusal. Keys are case-sensitive, as in go-jose, which the API server
// parses tokens with, and a payload with "aud" twice is refused rather than
// guessed at.
func peekAudience(token string) (string, error) {
	return peekAudienceIn(token, nil)
}

// peekAudienceIn is peekAudience, returning the string of the enforced
// ConnectionPolicy that holds the audience when snap has one, so the common
// case allocates no string of its own; snap may be nil.
func peekAudienceIn(token string, snap *store.Snapshot) (string, error) {
	if len(token) > maxTokenLength {
		return "", fmt.Errorf("%w: token is %d bytes long, more than the %d allowed", errNotJWT, len(token), maxTokenLength)
	}
	header, rest, ok1 := strings.Cut(token, ".")
	seg, sig, ok2 := strings.Cut(rest, ".")
	if !ok1 || !ok2 || strings.IndexByte(sig, '.') >= 0 || header == "" || seg == "" || sig == "" {
		return "", fmt.Errorf("%w: not three non-empty dot-separated segments", errNotJWT)
	}
	// Service-account token payloads are well under 1 KiB; the stack buffer
	// spares an allocation for them.
	var stack [1024]byte
	var buf []byte
	if n := base64.RawURLEncoding.DecodedLen(len(seg)); n <= len(stack) {
		buf = stack[:n]
	} else {
		buf = make([]byte, n)
	}
	n, err := base64.RawURLEncoding.Decode(buf, []byte(seg))
	if err != nil {
		return "", fmt.Errorf("%w: payload is not base64url without padding", errNotJWT)
	}
	aud, err := audienceClaim(buf[:n], snap)
	if err != nil {
		return "", fmt.Errorf("%w: %w", errNotJWT, err)
	}
	if len(aud) > expr.MaxAudienceLength {
		return "", fmt.Errorf("%w: audience is %d bytes long, more than the %d allowed", errNotJWT, len(aud), expr.MaxAudienceLength)
	}
	return aud, nil
}

// maxJSONDepth bounds the nesting of claims values; service-account tokens
// nest three deep.
const maxJSONDepth = 32

// audienceClaim returns the single "aud" of a JSON claims object. It parses
// the object in one pass, skipping every other claim without decoding it;
// anything that is not structurally a JSON object is refused (scalars are
// checked loosely, see jsonWalker).
func audienceClaim(p []byte, snap *store.Snapshot) (string, error) {
	w := jsonWalker{p: p}
	w.space()
	if !w.consume('{') {
		return "", errors.New("payload is not a JSON object")
	}
	var raw []byte
	w.space()
	if !w.consume('}') {
		for {
			key, ok := w.str()
			w.space()
			if !ok || !w.consume(':') {
				return "", errors.New("payload is not JSON")
			}
			w.space()
			start := w.i
			if !w.value(1) {
				return "", errors.New("payload is not JSON")
			}
			isAud, ok := stringEquals(key, "aud")
			if !ok {
				return "", errors.New("payload is not JSON")
			}
			if isAud {
				if raw != nil {
					return "", errors.New(`"aud" appears twice`)
				}
				raw = p[start:w.i]
			}
			w.space()
			if w.consume('}') {
				break
			}
			if !w.consume(',') {
				return "", errors.New("payload is not JSON")
			}
			w.space()
		}
	}
	w.space()
	if w.i != len(p) {
		return "", errors.New("payload is not JSON: data after the object")
	}

	switch {
	case raw == nil || raw[0] == 'n':
		return "", errors.New("no audience")
	case raw[0] == '"':
		return singleAudience(raw, snap)
	case raw[0] == '[':
		a := jsonWalker{p: raw, i: 1}
		var first []byte
		count := 0
		a.space()
		for !a.consume(']') {
			s, ok := a.str()
			if !ok {
				return "", errors.New(`"aud" holds a value that is not a string`)
			}
			if count == 0 {
				first = s
			}
			count++
			a.space()
			a.consume(',') // well formed: value() checked the array
			a.space()
		}
		switch count {
		case 0:
			return "", errors.New("no audience")
		case 1:
			return singleAudience(first, snap)
		}
		return "", fmt.Errorf("%d audiences; a token for sallyport must carry exactly one", count)
	}
	return "", errors.New(`"aud" is neither a string nor an array of strings`)
}

func singleAudience(tok []byte, snap *store.Snapshot) (string, error) {
	if body := tok[1 : len(tok)-1]; snap != nil && len(body) > 0 && !containsByte(body, '\\') {
		if cp, ok := snap.ConnectionByAudienceBytes(v1alpha1.EnforcementEnforce, body); ok {
			return cp.Audience, nil
		}
	}
	aud, ok := unquote(tok)
	switch {
	case !ok:
		return "", errors.New("payload is not JSON: invalid string escape")
	case aud == "":
		return "", errors.New("empty audience")
	}
	return aud, nil
}

// jsonWalker checks and skips JSON values in p from i. It checks structure
// (objects, arrays, strings and their ends) and leaves scalars loosely
// checked: the claims are verified by the authenticator, so a lax scalar
// costs nothing, while structure decides which "aud" is read.
type jsonWalker struct {
	p []byte
	i int
}

func (w *jsonWalker) space() {
	for w.i < len(w.p) && (w.p[w.i] == ' ' || w.p[w.i] == '\t' || w.p[w.i] == '\n' || w.p[w.i] == '\r') {
		w.i++
	}
}

func (w *jsonWalker) consume(c byte) bool {
	if w.i < len(w.p) && w.p[w.i] == c {
		w.i++
		return true
	}
	return false
}

// str skips a string and returns its token, quotes included.
func (w *jsonWalker) str() ([]byte, bool) {
	start := w.i
	if !w.consume('"') {
		return nil, false
	}
	for w.i < len(w.p) {
		switch c := w.p[w.i]; {
		case c == '"':
			w.i++
			return w.p[start:w.i], true
		case c == '\\':
			w.i += 2
		case c < 0x20:
			return nil, false
		default:
			w.i++
		}
	}
	return nil, false
}

// value skips one value at nesting depth.
func (w *jsonWalker) value(depth int) bool {
	if w.i >= len(w.p) || depth > maxJSONDepth {
		return false
	}
	switch w.p[w.i] {
	case '"':
		_, ok := w.str()
		return ok
	case '{':
		w.i++
		w.space()
		if w.consume('}') {
			return true
		}
		for {
			if _, ok := w.str(); !ok {
				return false
			}
			w.space()
			if !w.consume(':') {
				return false
			}
			w.space()
			if !w.value(depth + 1) {
				return false
			}
			w.space()
			if w.consume('}') {
				return true
			}
			if !w.consume(',') {
				return false
			}
			w.space()
		}
	case '[':
		w.i++
		w.space()
		if w.consume(']') {
			return true
		}
		for {
			if !w.value(depth + 1) {
				return false
			}
			w.space()
			if w.consume(']') {
				return true
			}
			if !w.consume(',') {
				return false
			}
			w.space()
		}
	}
	// A number, true, false or null.
	start := w.i
	for w.i < len(w.p) {
		c := w.p[w.i]
		scalar := '0' <= c && c <= '9' || 'a' <= c && c <= 'z' || c == '-' || c == '+' || c == '.' || c == 'E'
		if !scalar {
			break
		}
		w.i++
	}
	return w.i > start
}

// stringEquals reports whether a JSON string token decodes to s; ok is
// false for an invalid escape.
func stringEquals(tok []byte, s string) (equal, ok bool) {
	body := tok[1 : len(tok)-1]
	if !containsByte(body, '\\') {
		return string(body) == s, true
	}
	u, ok := unquote(tok)
	return u == s, ok
}

// unquote decodes a JSON string token; ok is false for an invalid escape.
func unquote(tok []byte) (string, bool) {
	body := tok[1 : len(tok)-1]
	if !containsByte(body, '\\') {
		return string(body), true
	}
	var s string
	// A copy, so tok (on the caller's stack) does not escape through
	// json.Unmarshal; escaped strings are rare in tokens.
	if err := json.Unmarshal(bytes.Clone(tok), &s); err != nil {
		return "", false
	}
	return s, true
}

func containsByte(b []byte, c byte) bool {
	for _, x := range b {
		if x == c {
			return true
		}
	}
	return false
}
