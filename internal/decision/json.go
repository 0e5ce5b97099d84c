package decision

import (
	"strconv"

	"github.com/sallyport/sallyport/internal/jsonenc"
)

// AppendJSON appends the /v1/decide answer for d, followed by a newline:
// the same document encoding/json makes of a Decision (a webhook test holds
// them equal), without reflection, since it is written once per decision.
// The decision server and `sallyport decide` both print it, so an offline
// answer is byte for byte what the cluster returns.
func AppendJSON(b []byte, d *Decision) []byte {
	b = append(b, `{"decisionID":`...)
	b = jsonenc.AppendString(b, d.ID)
	b = append(b, `,"allowed":`...)
	b = strconv.AppendBool(b, d.Allowed)
	c := &d.Connection
	b = append(b, `,"connection":{"allowed":`...)
	b = strconv.AppendBool(b, c.Allowed)
	b = appendOptional(b, "policy", c.Policy)
	b = appendOptional(b, "identity", c.Identity)
	b = appendOptional(b, "credentialID", c.CredentialID)
	b = append(b, `,"reason":`...)
	b = jsonenc.AppendString(b, c.Reason)
	b = appendOptional(b, "message", c.Message)
	r := &d.Resource
	b = append(b, `},"resource":{"allowed":`...)
	b = strconv.AppendBool(b, r.Allowed)
	b = appendOptional(b, "policy", r.Policy)
	b = appendOptional(b, "rule", r.Rule)
	b = append(b, `,"reason":`...)
	b = jsonenc.AppendString(b, r.Reason)
	b = appendOptional(b, "message", r.Message)
	return append(b, "}}\n"...)
}

// appendOptional appends ,"key":"value" unless value is empty (omitempty).
func appendOptional(b []byte, key, value string) []byte {
	if value == "" {
		return b
	}
	b = append(b, ',', '"')
	b = append(b, key...)
	b = append(b, '"', ':')
	return jsonenc.AppendString(b, value)
}
