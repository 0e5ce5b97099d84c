package credential

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// MaxTokenSize is the largest token, in bytes, that is parsed at all. The
// API server's service-account tokens are around 1 KiB; anything this large
// is refused before it is decoded, hashed or cached.
const MaxTokenSize = 16 << 10

// maxNumericDate is 9999-12-31T23:59:59Z: later timestamps are refused
// rather than risk overflowing time arithmetic.
const maxNumericDate = 253402300799

// Claims are the parts of a JWT that sallyport reads. ParseClaims returns
// them unverified; a Verifier returns them once the signature, issuer and
// validity period have been checked.
type Claims struct {
	// Issuer is the iss claim.
	Issuer string
	// Subject is the sub claim; for service-account tokens
	// system:serviceaccount:<namespace>:<name>.
	Subject string
	// Audiences is the aud claim, which a JWT may give as a string or as an
	// array of strings; nil when absent.
	Audiences []string
	// ID is the jti claim.
	ID string
	// IssuedAt, NotBefore and ExpiresAt are the iat, nbf and exp claims;
	// zero when absent.
	IssuedAt  time.Time
	NotBefore time.Time
	ExpiresAt time.Time
	// KeyID and Algorithm are the kid and alg of the JOSE header.
	KeyID     string
	Algorithm string
}

// jwt is a token split into its parts, with the claims decoded.
type jwt struct {
	claims Claims
	// signingInput is the token's "<header>.<payload>", the bytes the
	// signature covers.
	signingInput string
	signature    []byte
}

// b64 decodes the token's segments: base64url without padding, with no
// non-zero trailing bits, so one token has exactly one encoding.
var b64 = base64.RawURLEncoding.Strict()

// ParseClaims decodes a compact JWS token's header and claims without
// checking anything about it: use it to read the audience a token asks for
// before it is verified, never to trust it. Tokens larger than MaxTokenSize,
// not made of three base64url segments, or whose header or claims are not
// the JSON a JWT has are refused with an error wrapping ErrInvalid; the
// error never quotes the token.
func ParseClaims(token string) (*Claims, error) {
	t, err := parseJWT(token)
	if err != nil {
		return nil, err
	}
	return &t.claims, nil
}

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrInvalid}, args...)...)
}

func parseJWT(token string) (*jwt, error) {
	if token == "" {
		return nil, invalid("empty token")
	}
	if len(token) > MaxTokenSize {
		return nil, invalid("token is larger than %d bytes", MaxTokenSize)
	}
	h, rest, ok := strings.Cut(token, ".")
	if !ok {
		return nil, invalid("token is not a JWT: not three dot-separated segments")
	}
	p, s, ok := strings.Cut(rest, ".")
	if !ok || strings.Contains(s, ".") {
		return nil, invalid("token is not a JWT: not three dot-separated segments")
	}
	if h == "" || p == "" || s == "" {
		return nil, invalid("token is not a JWT: empty segment")
	}

	var header struct {
		Alg  *string         `json:"alg"`
		Kid  string          `json:"kid"`
		Crit json.RawMessage `json:"crit"`
	}
	if err := decodeSegment(h, &header, "alg", "kid", "crit"); err != nil {
		return nil, invalid("token header: %v", err)
	}
	if header.Alg == nil || *header.Alg == "" {
		return nil, invalid("token header has no alg")
	}
	if len(header.Crit) > 0 {
		// RFC 7515 §4.1.11: extensions a recipient does not understand
		// make the token invalid.
		return nil, invalid("token header names critical extensions")
	}

	var payload struct {
		Iss string       `json:"iss"`
		Sub string       `json:"sub"`
		Aud audience     `json:"aud"`
		Jti string       `json:"jti"`
		Iat *numericDate `json:"iat"`
		Nbf *numericDate `json:"nbf"`
		Exp *numericDate `json:"exp"`
	}
	if err := decodeSegment(p, &payload, "iss", "sub", "aud", "jti", "iat", "nbf", "exp"); err != nil {
		return nil, invalid("token claims: %v", err)
	}

	sig, err := b64.DecodeString(s)
	if err != nil {
		return nil, invalid("token signature is not base64url")
	}

	return &jwt{
		claims: Claims{
			Issuer:    payload.Iss,
			Subject:   payload.Sub,
			Audiences: payload.Aud,
			ID:        payload.Jti,
			IssuedAt:  payload.Iat.time(),
			NotBefore: payload.Nbf.time(),
			ExpiresAt: payload.Exp.time(),
			KeyID:     header.Kid,
			Algorithm: *header.Alg,
		},
		signingInput: token[:len(h)+1+len(p)],
		signature:    sig,
	}, nil
}

// segmentError is the only kind of error decodeSegment returns:
// encoding/json's own errors can quote the input, and so the token.
type segmentError string

func (e segmentError) Error() string { return string(e) }

const (
	errNotBase64     = segmentError("not base64url")
	errNotJSONObject = segmentError("not a JSON object of the expected claims")
	errAmbiguousKey  = segmentError("a member is given twice, or in another case")
)

// decodeSegment decodes one base64url segment holding a JSON object into v,
// whose members are named by fields. The members are read as the API
// server reads them: case-sensitively, and an object that gives a member
// twice, or one of fields in another case, is refused rather than guessed
// at (encoding/json alone would take the last, in any case).
func decodeSegment(seg string, v any, fields ...string) error {
	raw, err := b64.DecodeString(seg)
	if err != nil {
		return errNotBase64
	}
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || raw[0] != '{' {
		return errNotJSONObject
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return errNotJSONObject
	}
	return checkMembers(raw, fields)
}

// checkMembers refuses a JSON object (already known to be valid) that gives
// a member twice or one of fields in a case other than its own.
func checkMembers(raw []byte, fields []string) error {
	dec := json.NewDecoder(bytes.NewReader(raw))
	if _, err := dec.Token(); err != nil { // {
		return errNotJSONObject
	}
	seen := make(map[string]struct{}, len(fields))
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return errNotJSONObject
		}
		key, ok := tok.(string)
		if !ok {
			return errNotJSONObject
		}
		if _, dup := seen[key]; dup {
			return errAmbiguousKey
		}
		seen[key] = struct{}{}
		for _, f := range fields {
			if key != f && strings.EqualFold(key, f) {
				return errAmbiguousKey
			}
		}
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			return errNotJSONObject
		}
	}
	return nil
}

// audience is the aud claim: a string or an array of strings (RFC 7519
// §4.1.3).
type audience []string

// UnmarshalJSON implements json.Unmarshaler.
func (a *audience) UnmarshalJSON(b []byte) error {
	if bytes.Equal(bytes.TrimSpace(b), []byte("null")) {
		*a = nil
		return nil
	}
	var one string
	if err := json.Unmarshal(b, &one); err == nil {
		*a = audience{one}
		return nil
	}
	var many []string
	if err := json.Unmarshal(b, &many); err != nil {
		return errNotJSONObject
	}
	*a = many
	return nil
}

// numericDate is a JWT NumericDate: seconds since the epoch, possibly
// fractional (RFC 7519 §2).
type numericDate struct{ t time.Time }

// UnmarshalJSON implements json.Unmarshaler.
func (d *numericDate) UnmarshalJSON(b []byte) error {
	f, err := strconv.ParseFloat(string(bytes.TrimSpace(b)), 64)
	if err != nil || math.IsNaN(f) || f < 0 || f > maxNumericDate {
		return errNotJSONObject
	}
	sec := math.Floor(f)
	d.t = time.Unix(int64(sec), int64((f-sec)*1e9)).UTC()
	return nil
}

func (d *numericDate) time() time.Time {
	if d == nil {
		return time.Time{}
	}
	return d.t
}
