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

// This file keeps the encoding/json decoder that parseDecideRequest
// replaced, as the reference the differential tests compare it with.

// referenceRequest is the body of POST /v1/decide as encoding/json saw it.
type referenceRequest struct {
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

// referenceDecode is the former decodeDecideRequest.
func referenceDecode(body io.Reader) (*decision.Request, error) {
	raw, err := io.ReadAll(body)
	if err != nil {
		return nil, err
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	var in referenceRequest
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
