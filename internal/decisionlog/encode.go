package decisionlog

import (
	"strconv"
	"time"

	"github.com/sallyport/sallyport/internal/jsonenc"
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
	b = jsonenc.AppendString(b, d.ID)
	b = append(b, `,"endpoint":`...)
	b = jsonenc.AppendString(b, e.Endpoint)
	b = append(b, `,"enforcement":`...)
	b = jsonenc.AppendString(b, e.Enforcement)
	if e.Disagreement != "" {
		b = append(b, `,"disagreement":`...)
		b = jsonenc.AppendString(b, e.Disagreement)
	}
	b = append(b, `,"allowed":`...)
	b = strconv.AppendBool(b, d.Allowed)
	b = append(b, `,"identity":`...)
	b = jsonenc.AppendString(b, d.Connection.Identity)
	b = append(b, `,"credentialID":`...)
	b = jsonenc.AppendString(b, d.Connection.CredentialID)
	if r := e.Request; r != nil {
		b = append(b, `,"action":`...)
		b = jsonenc.AppendString(b, r.Action)
		b = append(b, `,"scopes":[`...)
		for i, s := range r.Scopes {
			if i > 0 {
				b = append(b, ',')
			}
			b = jsonenc.AppendString(b, s)
		}
		b = append(b, `],"target":{"namespace":`...)
		b = jsonenc.AppendString(b, r.Target.Namespace)
		b = append(b, `,"service":`...)
		b = jsonenc.AppendString(b, r.Target.Service)
		b = append(b, `,"host":`...)
		b = jsonenc.AppendString(b, r.Target.Host)
		b = append(b, `,"name":`...)
		b = jsonenc.AppendString(b, d.Path)
		b = append(b, '}')
	}
	c := &d.Connection
	b = append(b, `,"connection":{"allowed":`...)
	b = strconv.AppendBool(b, c.Allowed)
	b = append(b, `,"policy":`...)
	b = jsonenc.AppendString(b, c.Policy)
	b = append(b, `,"generation":`...)
	b = strconv.AppendInt(b, c.Generation, 10)
	b = append(b, `,"reason":`...)
	b = jsonenc.AppendString(b, c.Reason)
	b = append(b, `,"message":`...)
	b = jsonenc.AppendString(b, c.Message)
	r := &d.Resource
	b = append(b, `},"resource":{"allowed":`...)
	b = strconv.AppendBool(b, r.Allowed)
	b = append(b, `,"policy":`...)
	b = jsonenc.AppendString(b, r.Policy)
	b = append(b, `,"generation":`...)
	b = strconv.AppendInt(b, r.Generation, 10)
	b = append(b, `,"rule":`...)
	b = jsonenc.AppendString(b, r.Rule)
	b = append(b, `,"reason":`...)
	b = jsonenc.AppendString(b, r.Reason)
	b = append(b, `,"message":`...)
	b = jsonenc.AppendString(b, r.Message)
	b = append(b, `},"latency":`...)
	b = strconv.AppendFloat(b, e.Latency.Seconds(), 'f', -1, 64)
	b = append(b, "}\n"...)
	return b
}
