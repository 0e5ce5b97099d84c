package faults_test

import (
	"context"
	"os"
	"testing"

	"github.com/sallyport/sallyport/internal/testenv"
)

// TestZNoCredentialLeaks runs after the fault tests (files run in name
// order): no token they minted appears in the operator's log, the decision
// log, an Event or a policy status, whatever failed meanwhile.
func TestZNoCredentialLeaks(t *testing.T) {
	tokens := minted.all()
	if len(tokens) == 0 {
		t.Skip("no fault test minted a token (run with the others)")
	}
	sources, err := testenv.ClusterText(context.Background(), env.Client)
	if err != nil {
		t.Fatal(err)
	}
	sources["operator log"] = operatorLog.String()
	raw, err := os.ReadFile(logPath)
	if err != nil {
		t.Fatal(err)
	}
	sources["decision log"] = string(raw)
	if sources["operator log"] == "" || len(raw) == 0 {
		t.Fatal("nothing captured to scan")
	}
	for _, leak := range testenv.Leaks(tokens, sources) {
		t.Error(leak)
	}
}
