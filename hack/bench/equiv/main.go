// Command equiv checks that two decision services decide alike (see
// hack/bench/run.sh): it sends the benchmark request and variants of it
// that each gate must deny for a different reason to sallyport's
// /v1/decide and to OPA's data API running hack/bench/opa/policy.rego, and
// compares the allowed flags and the two gates' reason codes. It exits 1 on
// the first difference, so a load run never compares services that do not
// make the same decisions.
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "equiv:", err)
		os.Exit(1)
	}
}

// decision is what both services answer, reasons only.
type decision struct {
	Allowed    bool `json:"allowed"`
	Connection struct {
		Reason string `json:"reason"`
	} `json:"connection"`
	Resource struct {
		Reason string `json:"reason"`
	} `json:"resource"`
}

func (d decision) String() string {
	return fmt.Sprintf("allowed=%t connection=%s resource=%s", d.Allowed, d.Connection.Reason, d.Resource.Reason)
}

// body is a /v1/decide body.
type body struct {
	Credential struct {
		Token string `json:"token"`
	} `json:"credential"`
	Resource struct {
		Namespace string `json:"namespace"`
		Service   string `json:"service"`
		Name      string `json:"name"`
	} `json:"resource"`
	Action     string            `json:"action"`
	Scopes     []string          `json:"scopes"`
	Attributes map[string]string `json:"attributes,omitempty"`
}

// variant changes the benchmark request into another question.
type variant struct {
	name   string
	change func(*body)
}

func variants() []variant {
	return []variant{
		{"the benchmark request", func(*body) {}},
		{"DELETE under a Deny rule", func(b *body) {
			b.Action, b.Resource.Name, b.Scopes = "DELETE", "/archive/2020", []string{}
		}},
		{"a source outside 10.", func(b *body) { b.Attributes = map[string]string{"sourceIP": "192.168.1.1"} }},
		{"no source attribute", func(b *body) { b.Attributes = nil }},
		{"a path no rule serves", func(b *body) { b.Resource.Name = "/other/x" }},
		{"an Allow rule's other action", func(b *body) { b.Action, b.Resource.Name = "PUT", "/entries/1" }},
		{"a scope outside the reach", func(b *body) { b.Scopes = []string{"ledger.admin"} }},
		{"a scope the matching rule lacks", func(b *body) { b.Scopes = []string{"ledger.write"} }},
		{"a service no policy serves", func(b *body) { b.Resource.Service = "nope" }},
		{"a forged signature", func(b *body) {
			t := b.Credential.Token
			b.Credential.Token = t[:len(t)-8] + "AAAAAAAA"
		}},
	}
}

func run() error {
	sallyport := flag.String("sallyport", "", "`URL` of sallyport's /v1/decide")
	opa := flag.String("opa", "", "`URL` of OPA's data API entry point (…/v1/data/sallyport/verified)")
	bodyFile := flag.String("body-file", "", "the benchmark's /v1/decide body")
	flag.Parse()
	if *sallyport == "" || *opa == "" || *bodyFile == "" {
		return errors.New("-sallyport, -opa and -body-file are required")
	}
	raw, err := os.ReadFile(*bodyFile)
	if err != nil {
		return fmt.Errorf("read the request body: %w", err)
	}
	client := &http.Client{Timeout: 10 * time.Second}
	for _, v := range variants() {
		var b body
		if err := json.Unmarshal(raw, &b); err != nil {
			return fmt.Errorf("decode the request body: %w", err)
		}
		v.change(&b)
		req, err := json.Marshal(&b)
		if err != nil {
			return err
		}
		var s decision
		if err := post(client, *sallyport, req, &s); err != nil {
			return fmt.Errorf("%s: sallyport: %w", v.name, err)
		}
		var o struct {
			Result *decision `json:"result"`
		}
		if err := post(client, *opa, append(append([]byte(`{"input":`), req...), '}'), &o); err != nil {
			return fmt.Errorf("%s: OPA: %w", v.name, err)
		}
		if o.Result == nil {
			return fmt.Errorf("%s: OPA's policy gave no result", v.name)
		}
		if s != *o.Result {
			return fmt.Errorf("%s: sallyport %s, OPA %s", v.name, s, *o.Result)
		}
		fmt.Printf("same decision for %-32s %s\n", v.name+":", s)
	}
	return nil
}

func post(c *http.Client, url string, body []byte, out any) error {
	resp, err := c.Post(url, "application/json", bytes.NewReader(body))
	if err != nil {
		return err
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %d: %s", resp.StatusCode, b)
	}
	return json.Unmarshal(b, out)
}
