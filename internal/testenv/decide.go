package testenv

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// Gate is one gate of a /v1/decide answer, as a client reads it.
type Gate struct {
	Allowed      bool   `json:"allowed"`
	Policy       string `json:"policy"`
	Identity     string `json:"identity"`
	CredentialID string `json:"credentialID"`
	Rule         string `json:"rule"`
	Reason       string `json:"reason"`
	Message      string `json:"message"`
}

// Answer is a /v1/decide answer, as a client reads it.
type Answer struct {
	DecisionID string `json:"decisionID"`
	Allowed    bool   `json:"allowed"`
	Connection Gate   `json:"connection"`
	Resource   Gate   `json:"resource"`
}

// Decide posts body to baseURL's /v1/decide and returns the answer, failing
// the test unless the server answers 200.
func Decide(t testing.TB, baseURL string, body any) Answer {
	t.Helper()
	raw, err := json.Marshal(body)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Post(baseURL+"/v1/decide", "application/json", bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	out, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/v1/decide: status %d: %s", resp.StatusCode, out)
	}
	var a Answer
	if err := json.Unmarshal(out, &a); err != nil {
		t.Fatalf("/v1/decide answer %s: %v", out, err)
	}
	return a
}

// WaitServing waits until the decision API at baseURL answers something
// other than 503 (what it says until its first snapshot is built).
func WaitServing(t testing.TB, baseURL string) {
	t.Helper()
	Eventually(t, 30*time.Second, func() error {
		resp, err := http.Post(baseURL+"/v1/decide", "application/json", strings.NewReader(`{}`))
		if err != nil {
			return err
		}
		_ = resp.Body.Close()
		if resp.StatusCode == http.StatusServiceUnavailable {
			return errors.New("the decision server is not ready")
		}
		return nil
	})
}
