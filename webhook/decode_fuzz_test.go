package webhook

import (
	"errors"
	"strings"
	"testing"

	"github.com/sallyport/sallyport/internal/decision"
)

// FuzzDecodeDecideRequest checks the decoder of POST /v1/decide: it never
// panics, every request it returns is one the engine accepts as well formed,
// and every error names the field it is about.
func FuzzDecodeDecideRequest(f *testing.F) {
	for _, s := range []string{
		validBody,
		`{"resource":{"host":"ledger.example.com","name":"/"},"action":"GET"}`,
		`{"resource":{"namespace":"a","service":"b","name":"/x/../y"},"action":"GET"}`,
		`{"resource":{"namespace":"a","service":"b","name":"/x%2Fy"},"action":"GET"}`,
		`{"resource":{"namespace":"a","service":"b","name":"/x"},"action":"GET","scopes":["*"]}`,
		`{"credential":{"token":1}}`,
		`{"credential":null,"resource":{"namespace":"a","service":"b","name":"//x//y"},"action":"GET","attributes":{"k":"v"}}`,
		`{"action":"GET"} {"action":"PUT"}`,
		`[]`, `null`, `"x"`, ``, `{`, `{"unknown":true}`,
		"{\"resource\":{\"namespace\":\"a\",\"service\":\"b\",\"name\":\"/\u0000\"},\"action\":\"GET\"}",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		req, err := decodeDecideRequest(strings.NewReader(string(body)), 0)
		if err != nil {
			var br *badRequest
			var fe *decision.FieldError
			switch {
			case errors.As(err, &br):
				if br.Field == "" || br.Msg == "" {
					t.Fatalf("error without field or message: %#v", br)
				}
			case errors.As(err, &fe):
				if fe.Field == "" {
					t.Fatalf("field error without a field: %v", fe)
				}
			default:
				t.Fatalf("error of type %T does not name a field: %v", err, err)
			}
			if req != nil {
				t.Fatal("a request came back with an error")
			}
			return
		}
		if err := decision.Validate(req); err != nil {
			t.Fatalf("decoded request is not valid: %v", err)
		}
	})
}
