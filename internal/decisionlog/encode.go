package decisionlog

import (
	"strconv"
	"time"
	"unicode/utf8"
)

// appendEntry appends one JSON line. It is written by hand because it runs
// once per decision: no reflection, no intermediate maps, one buffer.
func appendEntry(b []byte, e *Entry) []byte {
	d := e.Decision
	b = append(b, `{"schemaVersion":`...)
	b = strconv.AppendInt(b, SchemaVersion, 10)
	b = append(b, `,"time":"`...)
	b = d.Time.UTC().AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","decisionID":`...)
	b = appendString(b, d.ID)
	b = append(b, `,"endpoint":`...)
	b = appendString(b, e.Endpoint)
	b = append(b, `,"enforcement":`...)
	b = appendString(b, e.Enforcement)
	b = append(b, `,"allowed":`...)
	b = strconv.AppendBool(b, d.Allowed)
	b = append(b, `,"identity":`...)
	b = appendString(b, d.Connection.Identity)
	b = append(b, `,"credentialID":`...)
	b = appendString(b, d.Connection.CredentialID)
	if r := e.Request; r != nil {
		b = append(b, `,"action":`...)
		b = appendString(b, r.Action)
		b = append(b, `,"scopes":[`...)
		for i, s := range r.Scopes {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendString(b, s)
		}
		b = append(b, `],"target":{"namespace":`...)
		b = appendString(b, r.Target.Namespace)
		b = append(b, `,"service":`...)
		b = appendString(b, r.Target.Service)
		b = append(b, `,"host":`...)
		b = appendString(b, r.Target.Host)
		b = append(b, `,"name":`...)
		b = appendString(b, d.Path)
		b = append(b, '}')
	}
	c := &d.Connection
	b = append(b, `,"connection":{"allowed":`...)
	b = strconv.AppendBool(b, c.Allowed)
	b = append(b, `,"policy":`...)
	b = appendString(b, c.Policy)
	b = append(b, `,"generation":`...)
	b = strconv.AppendInt(b, c.Generation, 10)
	b = append(b, `,"reason":`...)
	b = appendString(b, c.Reason)
	b = append(b, `,"message":`...)
	b = appendString(b, c.Message)
	r := &d.Resource
	b = append(b, `},"resource":{"allowed":`...)
	b = strconv.AppendBool(b, r.Allowed)
	b = append(b, `,"policy":`...)
	b = appendString(b, r.Policy)
	b = append(b, `,"generation":`...)
	b = strconv.AppendInt(b, r.Generation, 10)
	b = append(b, `,"rule":`...)
	b = appendString(b, r.Rule)
	b = append(b, `,"reason":`...)
	b = appendString(b, r.Reason)
	b = append(b, `,"message":`...)
	b = appendString(b, r.Message)
	b = append(b, `},"latency":`...)
	b = strconv.AppendFloat(b, e.Latency.Seconds(), 'f', -1, 64)
	b = append(b, "}\n"...)
	return b
}

const hex = "0123456789abcdef"

// appendString appends s as a JSON string. Invalid UTF-8 becomes U+FFFD, and
// U+2028/U+2029 are escaped, so every line is valid JSON for any reader.
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hex[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
