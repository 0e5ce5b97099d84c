package webhook

import (
	"strconv"
	"strings"
	"unicode"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/sallyport/sallyport/internal/decision"
)

// This file is a single-pass JSON parser for exactly the body of
// POST /v1/decide. It replaces encoding/json, which scanned the body twice
// (once to find the end of the value, once to decode it) and decoded through
// reflection: about 9 µs of a 1.3 KB request, most of it spent walking the
// 1.1 KB token character by character.
//
// It accepts what encoding/json with DisallowUnknownFields accepted and
// decodes it to the same strings (escapes, surrogate pairs, U+FFFD for
// invalid UTF-8 and unpaired surrogates, case-insensitive keys, null for any
// field), and its errors name the field the way jsonError named it. It is
// stricter in two places, on purpose:
//
//   - A key given twice in one object (including "action" and "Action",
//     which encoding/json matched to the same field) is refused.
//     encoding/json kept the last value, so a request could mean one thing
//     to a proxy that reads the first and another to sallyport.
//   - Anything but white space after the object is refused. Decoder.More
//     treated a trailing "}" or "]" as the end of a stream and let it pass.
//
// Which error is reported follows encoding/json as well: a syntax error
// anywhere in the value wins, then the first type or unknown-field error in
// document order, then trailing data, then decision.Validate.

// maxDepth is encoding/json's nesting limit; deeper values are a syntax
// error there, so they are here.
const maxDepth = 10000

// parser walks one body. Decoded strings without escapes or invalid UTF-8
// are substrings of s, so they cost no allocation; s is the only copy of
// the body (see readBody).
type parser struct {
	s     string
	i     int
	depth int
	// err is the first type, unknown-field or duplicate-key error. Parsing
	// goes on after it so that a later syntax error still wins, as it did
	// when encoding/json checked the syntax of the whole value first.
	err error
	// scopeRoom, when set, is where the request's scopes go if they fit.
	scopeRoom *[inlineScopes]string
}

// inlineScopes is how many scopes a request holds without an allocation of
// their own: requests carry one or two.
const inlineScopes = 2

// requestAlloc is a request and room for its scopes in one allocation.
type requestAlloc struct {
	req    decision.Request
	scopes [inlineScopes]string
}

// fail records a semantic error; the first one is reported.
func (p *parser) fail(err error) {
	if p.err == nil {
		p.err = err
	}
}

// parseDecideRequest decodes and validates one body.
func parseDecideRequest(body string) (*decision.Request, error) {
	p := parser{s: body}
	if !p.ws() {
		return nil, &badRequest{Field: "body", Msg: "empty; a JSON object is required"}
	}
	// The scopes share the request's allocation: one allocation fewer per
	// request, at the price that a caller keeping only the scopes keeps
	// the (small) Request's memory too.
	ra := new(requestAlloc)
	req := &ra.req
	p.scopeRoom = &ra.scopes
	var err error
	switch p.s[p.i] {
	case '{':
		err = p.request(req)
	case 'n':
		// encoding/json decodes null into a struct as nothing at all;
		// Validate then names what is missing.
		err = p.literal("null")
	default:
		err = p.mismatch("body", "an object")
	}
	if err != nil {
		return nil, err
	}
	if p.err != nil {
		return nil, p.err
	}
	if p.ws() {
		return nil, &badRequest{Field: "body", Msg: "more than one JSON value"}
	}
	if err := decision.Validate(req); err != nil {
		return nil, err
	}
	return req, nil
}

// Bits of the fields seen in one object, to refuse duplicates.
const (
	seenCredential = 1 << iota
	seenResource
	seenAction
	seenScopes
	seenAttributes
	seenNamespace
	seenService
	seenHost
	seenName
	seenToken
)

func (p *parser) request(req *decision.Request) error {
	more, err := p.enterObject()
	var seen uint
	for more && err == nil {
		var key string
		if key, err = p.objectKey(); err != nil {
			return err
		}
		name, bit := requestField(key)
		switch {
		case bit == 0:
			p.fail(unknownField(key))
			err = p.skipValue()
		case seen&bit != 0:
			p.fail(duplicateKey(name))
			err = p.skipValue()
		default:
			seen |= bit
			switch bit {
			case seenCredential:
				err = p.credential(req)
			case seenResource:
				err = p.resource(&req.Target)
			case seenAction:
				err = p.stringValue("action", &req.Action)
			case seenScopes:
				err = p.scopes(req)
			case seenAttributes:
				err = p.attributes(req)
			}
		}
		if err != nil {
			return err
		}
		more, err = p.objectNext()
	}
	return err
}

// requestField maps a top-level key to its field. Exact names take the fast
// path; other spellings are matched case-insensitively (with Unicode simple
// folding, so "ſcopes" is "scopes") because encoding/json did so.
func requestField(key string) (string, uint) {
	switch key {
	case "credential":
		return key, seenCredential
	case "resource":
		return key, seenResource
	case "action":
		return key, seenAction
	case "scopes":
		return key, seenScopes
	case "attributes":
		return key, seenAttributes
	}
	for _, f := range [...]struct {
		name string
		bit  uint
	}{{"credential", seenCredential}, {"resource", seenResource}, {"action", seenAction}, {"scopes", seenScopes}, {"attributes", seenAttributes}} {
		if strings.EqualFold(key, f.name) {
			return f.name, f.bit
		}
	}
	return "", 0
}

func (p *parser) credential(req *decision.Request) error {
	switch p.s[p.i] {
	case 'n':
		return p.literal("null")
	case '{':
	default:
		return p.mismatch("credential", "an object")
	}
	more, err := p.enterObject()
	var seen uint
	for more && err == nil {
		var key string
		if key, err = p.objectKey(); err != nil {
			return err
		}
		switch {
		case key != "token" && !strings.EqualFold(key, "token"):
			p.fail(unknownField(key))
			err = p.skipValue()
		case seen != 0:
			p.fail(duplicateKey("credential.token"))
			err = p.skipValue()
		default:
			seen = seenToken
			err = p.stringValue("credential.token", &req.Token)
		}
		if err != nil {
			return err
		}
		more, err = p.objectNext()
	}
	return err
}

func (p *parser) resource(t *decision.Target) error {
	switch p.s[p.i] {
	case 'n':
		return p.literal("null")
	case '{':
	default:
		return p.mismatch("resource", "an object")
	}
	more, err := p.enterObject()
	var seen uint
	for more && err == nil {
		var key string
		if key, err = p.objectKey(); err != nil {
			return err
		}
		var dst *string
		var field string
		var bit uint
		switch {
		case key == "namespace" || strings.EqualFold(key, "namespace"):
			dst, field, bit = &t.Namespace, "resource.namespace", seenNamespace
		case key == "service" || strings.EqualFold(key, "service"):
			dst, field, bit = &t.Service, "resource.service", seenService
		case key == "host" || strings.EqualFold(key, "host"):
			dst, field, bit = &t.Host, "resource.host", seenHost
		case key == "name" || strings.EqualFold(key, "name"):
			dst, field, bit = &t.Name, "resource.name", seenName
		}
		switch {
		case bit == 0:
			p.fail(unknownField(key))
			err = p.skipValue()
		case seen&bit != 0:
			p.fail(duplicateKey(field))
			err = p.skipValue()
		default:
			seen |= bit
			err = p.stringValue(field, dst)
		}
		if err != nil {
			return err
		}
		more, err = p.objectNext()
	}
	return err
}

func (p *parser) scopes(req *decision.Request) error {
	switch p.s[p.i] {
	case 'n':
		req.Scopes = nil
		return p.literal("null")
	case '[':
	default:
		return p.mismatch("scopes", "a list")
	}
	// Collect on the stack and allocate the slice once, at its final size;
	// a request carries one or two scopes.
	var small [8]string
	list := small[:0]
	more, err := p.enterArray()
	for more && err == nil {
		var s string
		if err = p.stringValue("scopes", &s); err != nil {
			return err
		}
		list = append(list, s)
		more, err = p.arrayNext()
	}
	if err != nil {
		return err
	}
	// [] is an empty, non-nil list, as encoding/json made it. The slice's
	// capacity is its length either way, so an append by a caller copies
	// rather than writing into the room.
	if p.scopeRoom != nil && len(list) <= len(p.scopeRoom) {
		n := copy(p.scopeRoom[:], list)
		req.Scopes = p.scopeRoom[:n:n]
		return nil
	}
	req.Scopes = make([]string, len(list))
	copy(req.Scopes, list)
	return nil
}

func (p *parser) attributes(req *decision.Request) error {
	switch p.s[p.i] {
	case 'n':
		req.Attributes = nil
		return p.literal("null")
	case '{':
	default:
		return p.mismatch("attributes", "an object")
	}
	// No size hint: a map of up to 8 entries is one group however it is
	// made, and {} must still be an empty, non-nil map.
	m := make(map[string]string)
	req.Attributes = m
	more, err := p.enterObject()
	for more && err == nil {
		var k, v string
		if k, err = p.objectKey(); err != nil {
			return err
		}
		if err = p.stringValue("attributes", &v); err != nil {
			return err
		}
		if _, dup := m[k]; dup {
			p.fail(duplicateKey("attributes[" + strconv.Quote(k) + "]"))
		}
		m[k] = v
		more, err = p.objectNext()
	}
	return err
}

// stringValue decodes a string into *dst. null leaves *dst alone, as
// encoding/json did for strings.
func (p *parser) stringValue(field string, dst *string) error {
	switch p.s[p.i] {
	case '"':
		s, err := p.str()
		if err != nil {
			return err
		}
		*dst = s
		return nil
	case 'n':
		return p.literal("null")
	}
	return p.mismatch(field, "a string")
}

// mismatch records that the value at p.i is not what field wants, in
// jsonError's words, and skips it.
func (p *parser) mismatch(field, want string) error {
	var got string
	switch p.s[p.i] {
	case '"':
		got = "string"
	case '{':
		got = "object"
	case '[':
		got = "array"
	case 't', 'f':
		got = "bool"
	default:
		got = "number"
	}
	if err := p.skipValue(); err != nil {
		return err
	}
	p.fail(&badRequest{Field: field, Msg: "must be " + want + ", not " + got})
	return nil
}

// unknownField names the key the way jsonError did, from encoding/json's
// `unknown field %q`.
func unknownField(key string) error {
	if name := strings.Trim(strconv.Quote(key), `"`); name != "" {
		return &badRequest{Field: name, Msg: "unknown field"}
	}
	return &badRequest{Field: "body", Msg: `unknown field ""`}
}

func duplicateKey(field string) error {
	return &badRequest{Field: field, Msg: "given more than once; a request must not be ambiguous"}
}

// ws skips white space and reports whether anything follows.
func (p *parser) ws() bool {
	for p.i < len(p.s) {
		switch p.s[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return true
		}
	}
	return false
}

// syntaxErr reports the byte at p.i as encoding/json's scanner did, with
// the 1-based offset it gave; at the end of the body the JSON is truncated.
func (p *parser) syntaxErr(context string) error {
	if p.i >= len(p.s) {
		return truncated()
	}
	return &badRequest{Field: "body", Msg: "invalid JSON at byte " + strconv.Itoa(p.i+1) +
		": invalid character " + quoteChar(p.s[p.i]) + " " + context}
}

func truncated() error { return &badRequest{Field: "body", Msg: "truncated JSON"} }

// quoteChar is encoding/json's.
func quoteChar(c byte) string {
	if c == '\'' {
		return `'\''`
	}
	if c == '"' {
		return `'"'`
	}
	s := strconv.Quote(string(rune(c)))
	return "'" + s[1:len(s)-1] + "'"
}

// enterObject consumes '{' and reports whether a member follows; p.i is
// then at its key.
func (p *parser) enterObject() (bool, error) {
	if p.depth++; p.depth > maxDepth {
		return false, p.syntaxErr("exceeded max depth")
	}
	p.i++
	if !p.ws() {
		return false, truncated()
	}
	switch p.s[p.i] {
	case '}':
		p.i++
		p.depth--
		return false, nil
	case '"':
		return true, nil
	}
	return false, p.syntaxErr("looking for beginning of object key string")
}

// objectKey decodes a key and its ':'; p.i is then at the value.
func (p *parser) objectKey() (string, error) {
	key, err := p.str()
	if err != nil {
		return "", err
	}
	if !p.ws() {
		return "", truncated()
	}
	if p.s[p.i] != ':' {
		return "", p.syntaxErr("after object key")
	}
	p.i++
	if !p.ws() {
		return "", truncated()
	}
	return key, nil
}

// objectNext consumes ',' or '}' after a member and reports whether
// another member follows.
func (p *parser) objectNext() (bool, error) { return p.arrayOrObjectNext(true) }

// enterArray consumes '[' and reports whether an element follows.
func (p *parser) enterArray() (bool, error) {
	if p.depth++; p.depth > maxDepth {
		return false, p.syntaxErr("exceeded max depth")
	}
	p.i++
	if !p.ws() {
		return false, truncated()
	}
	if p.s[p.i] == ']' {
		p.i++
		p.depth--
		return false, nil
	}
	return true, nil
}

func (p *parser) arrayNext() (bool, error) { return p.arrayOrObjectNext(false) }

func (p *parser) arrayOrObjectNext(object bool) (bool, error) {
	if !p.ws() {
		return false, truncated()
	}
	c := p.s[p.i]
	switch {
	case c == ',':
		p.i++
		if !p.ws() {
			return false, truncated()
		}
		if object && p.s[p.i] != '"' {
			return false, p.syntaxErr("looking for beginning of object key string")
		}
		return true, nil
	case object && c == '}', !object && c == ']':
		p.i++
		p.depth--
		return false, nil
	case object:
		return false, p.syntaxErr("after object key:value pair")
	}
	return false, p.syntaxErr("after array element")
}

// skipValue checks the syntax of the value at p.i and steps over it.
func (p *parser) skipValue() error {
	switch c := p.s[p.i]; c {
	case '"':
		_, _, err := p.scanString()
		return err
	case '{':
		more, err := p.enterObject()
		for more && err == nil {
			if _, _, err = p.scanString(); err != nil {
				return err
			}
			if !p.ws() {
				return truncated()
			}
			if p.s[p.i] != ':' {
				return p.syntaxErr("after object key")
			}
			p.i++
			if !p.ws() {
				return truncated()
			}
			if err = p.skipValue(); err != nil {
				return err
			}
			more, err = p.objectNext()
		}
		return err
	case '[':
		more, err := p.enterArray()
		for more && err == nil {
			if err = p.skipValue(); err != nil {
				return err
			}
			more, err = p.arrayNext()
		}
		return err
	case 't':
		return p.literal("true")
	case 'f':
		return p.literal("false")
	case 'n':
		return p.literal("null")
	case '-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9':
		return p.number()
	}
	return p.syntaxErr("looking for beginning of value")
}

// literal consumes true, false or null; its first byte is at p.i.
func (p *parser) literal(word string) error {
	for k := 1; k < len(word); k++ {
		p.i++
		if p.i >= len(p.s) {
			return truncated()
		}
		if p.s[p.i] != word[k] {
			return p.syntaxErr("in literal " + word + " (expecting " + quoteChar(word[k]) + ")")
		}
	}
	p.i++
	return nil
}

// number consumes a number in JSON's grammar; the value is never used.
func (p *parser) number() error {
	s := p.s
	if s[p.i] == '-' {
		p.i++
		if p.i >= len(s) {
			return truncated()
		}
		if c := s[p.i]; c < '0' || c > '9' {
			return p.syntaxErr("in numeric literal")
		}
	}
	if s[p.i] == '0' {
		p.i++
	} else {
		p.digits()
	}
	if p.i < len(s) && s[p.i] == '.' {
		p.i++
		if p.i >= len(s) {
			return truncated()
		}
		if c := s[p.i]; c < '0' || c > '9' {
			return p.syntaxErr("after decimal point in numeric literal")
		}
		p.digits()
	}
	if p.i < len(s) && (s[p.i] == 'e' || s[p.i] == 'E') {
		p.i++
		if p.i < len(s) && (s[p.i] == '+' || s[p.i] == '-') {
			p.i++
		}
		if p.i >= len(s) {
			return truncated()
		}
		if c := s[p.i]; c < '0' || c > '9' {
			return p.syntaxErr("in exponent of numeric literal")
		}
		p.digits()
	}
	return nil
}

func (p *parser) digits() {
	for p.i < len(p.s) && '0' <= p.s[p.i] && p.s[p.i] <= '9' {
		p.i++
	}
}

// plain marks the bytes a string can hold as they are: not '"', '\\', a
// control character, or the start of a multi-byte sequence that must be
// checked for valid UTF-8.
var plain = func() (t [256]bool) {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// str decodes the string at p.i. Without escapes or invalid UTF-8 it is a
// substring of the body: no allocation, which matters most for the token.
func (p *parser) str() (string, error) {
	start := p.i + 1
	s := p.s
	j := start
	for j < len(s) && plain[s[j]] {
		j++
	}
	if j < len(s) && s[j] == '"' {
		p.i = j + 1
		return s[start:j], nil
	}
	// Resume the careful scan where the quick one stopped: the bytes
	// before j are plain.
	p.i = j - 1
	end, clean, err := p.scanString()
	if err != nil {
		return "", err
	}
	if clean {
		return s[start : end-1], nil
	}
	return unquote(s[start : end-1]), nil
}

// scanString checks the syntax of the string at p.i and steps over it. It
// returns the index after the closing quote and whether the contents can be
// used as they are (no escapes, valid UTF-8).
func (p *parser) scanString() (end int, clean bool, err error) {
	s := p.s
	clean = true
	p.i++
	for p.i < len(s) {
		c := s[p.i]
		switch {
		case c == '"':
			p.i++
			return p.i, clean, nil
		case c == '\\':
			clean = false
			p.i++
			if p.i >= len(s) {
				return 0, false, truncated()
			}
			switch s[p.i] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				p.i++
			case 'u':
				p.i++
				for k := 0; k < 4; k++ {
					if p.i >= len(s) {
						return 0, false, truncated()
					}
					if unhex(s[p.i]) < 0 {
						return 0, false, p.syntaxErr(`in \u hexadecimal character escape`)
					}
					p.i++
				}
			default:
				return 0, false, p.syntaxErr("in string escape code")
			}
		case c < ' ':
			return 0, false, p.syntaxErr("in string literal")
		case c < utf8.RuneSelf:
			p.i++
		default:
			r, size := utf8.DecodeRuneInString(s[p.i:])
			if r == utf8.RuneError && size == 1 {
				clean = false
			}
			p.i += size
		}
	}
	return 0, false, truncated()
}

func unhex(c byte) rune {
	switch {
	case '0' <= c && c <= '9':
		return rune(c - '0')
	case 'a' <= c && c <= 'f':
		return rune(c - 'a' + 10)
	case 'A' <= c && c <= 'F':
		return rune(c - 'A' + 10)
	}
	return -1
}

// getu4 decodes \uXXXX at the start of s, or returns -1.
func getu4(s string) rune {
	if len(s) < 6 || s[0] != '\\' || s[1] != 'u' {
		return -1
	}
	var r rune
	for _, c := range []byte(s[2:6]) {
		h := unhex(c)
		if h < 0 {
			return -1
		}
		r = r<<4 | h
	}
	return r
}

// unquote decodes the contents of a string that scanString accepted,
// exactly as encoding/json's unquote does: a surrogate pair is one rune, an
// unpaired surrogate and each byte of invalid UTF-8 are U+FFFD.
func unquote(s string) string {
	var b strings.Builder
	b.Grow(len(s) + 2*utf8.UTFMax)
	for r := 0; r < len(s); {
		c := s[r]
		switch {
		case c == '\\':
			switch e := s[r+1]; e {
			case 'b':
				b.WriteByte('\b')
			case 'f':
				b.WriteByte('\f')
			case 'n':
				b.WriteByte('\n')
			case 'r':
				b.WriteByte('\r')
			case 't':
				b.WriteByte('\t')
			case 'u':
				rr := getu4(s[r:])
				r += 6
				if utf16.IsSurrogate(rr) {
					if dec := utf16.DecodeRune(rr, getu4(s[r:])); dec != unicode.ReplacementChar {
						r += 6
						b.WriteRune(dec)
						continue
					}
					rr = unicode.ReplacementChar
				}
				b.WriteRune(rr)
				continue
			default: // '"', '\\', '/'
				b.WriteByte(e)
			}
			r += 2
		case c < utf8.RuneSelf:
			b.WriteByte(c)
			r++
		default:
			rr, size := utf8.DecodeRuneInString(s[r:])
			b.WriteRune(rr)
			r += size
		}
	}
	return b.String()
}
