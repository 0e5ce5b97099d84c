package webhook

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/sallyport/sallyport/internal/decision"
)

// A shadow decision never changes the answer; one that disagrees adds a
// DryRun line with the same decision ID to the log, marked with how it
// disagrees, and every shadow is counted.
func TestDryRunDisagreementsAreLoggedAndCounted(t *testing.T) {
	for _, tc := range []struct {
		name    string
		shadow  *decision.Shadow
		lines   int
		wantDis string
		result  string
	}{
		{"agreeing shadow", &decision.Shadow{Allowed: true,
			Connection: decision.Connection{Allowed: true, Policy: "billing/b2l-next", Reason: decision.ReasonMatched},
			Resource:   decision.Resource{Allowed: true, Policy: "ledger/api", Rule: "read", Reason: decision.ReasonMatched}}, 1, "", "Agree"},
		{"shadow that would deny", &decision.Shadow{
			Connection: decision.Connection{Allowed: false, Policy: "billing/b2l-next", Reason: decision.ReasonScopeNotReachable},
			Resource:   decision.Resource{Policy: "ledger/api", Reason: decision.ReasonNotEvaluated}}, 2, decision.DisagreementWouldDeny, decision.DisagreementWouldDeny},
	} {
		t.Run(tc.name, func(t *testing.T) {
			answer := allowed
			answer.DryRun = tc.shadow
			s, _, logBuf := newTestServer(t, answer, true)
			counter := dryRunTotal.WithLabelValues(tc.shadow.Connection.Policy, tc.shadow.Resource.Policy, tc.result)
			before := testutil.ToFloat64(counter)

			w := do(t, s.Handler(), httptest.NewRequest(http.MethodPost, "/v1/decide", strings.NewReader(validBody)))
			if w.Code != http.StatusOK || !strings.Contains(w.Body.String(), `"allowed":true`) || strings.Contains(w.Body.String(), "b2l-next") {
				t.Fatalf("answer %d %s: the shadow must not change or appear in it", w.Code, w.Body.String())
			}
			if got := testutil.ToFloat64(counter) - before; got != 1 {
				t.Errorf("sallyport_dryrun_decisions_total{result=%q} rose by %v, want 1", tc.result, got)
			}
			if err := s.log.Close(); err != nil {
				t.Fatal(err)
			}
			lines := bytes.Split(bytes.TrimSpace(logBuf.Bytes()), []byte("\n"))
			if len(lines) != tc.lines {
				t.Fatalf("%d log lines, want %d:\n%s", len(lines), tc.lines, logBuf.String())
			}
			if tc.lines == 2 {
				var first, dry map[string]any
				if err := json.Unmarshal(lines[0], &first); err != nil {
					t.Fatal(err)
				}
				if err := json.Unmarshal(lines[1], &dry); err != nil {
					t.Fatal(err)
				}
				if dry["decisionID"] != first["decisionID"] || dry["enforcement"] != "DryRun" || dry["disagreement"] != tc.wantDis || dry["allowed"] != false {
					t.Errorf("DryRun line %s after %s", lines[1], lines[0])
				}
			}
		})
	}
}
