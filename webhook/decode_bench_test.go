package webhook

import (
	"strings"
	"testing"
)

// benchBody is a realistic POST /v1/decide body of about 1.3 KB: a
// 1,100-byte JWT, a target, an action, two scopes and one attribute.
var benchBody = `{"credential":{"token":"eyJhbGciOiJSUzI1NiIsImtpZCI6IjRmM2E5YjE3YzBkMmU4NjVhMWI0YzdkOWUyZjYwODNhIn0.` +
	strings.Repeat("eyJhdWQiOlsibGVkZ2VyLmV4YW1wbGUuY29tIl0sImV4cCI6MTcwMDAwMzYwMCwiaWF0IjoxNzAwMDAwMDAwLCJpc3Mi", 9)[:760] +
	"." + strings.Repeat("Zm9vYmFyYmF6cXV4", 16)[:250] +
	`"},"resource":{"namespace":"ledger","service":"ledger-api","name":"/entries/42?page=2"},"action":"POST","scopes":["ledger.read","ledger.write"],"attributes":{"sourceIP":"10.1.2.3"}}`

func BenchmarkDecodeDecideRequest(b *testing.B) {
	if n := len(benchBody); n < 1200 || n > 1400 {
		b.Fatalf("body is %d bytes", n)
	}
	b.Run("encoding-json", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(benchBody)))
		r := strings.NewReader(benchBody)
		for b.Loop() {
			r.Reset(benchBody)
			if _, err := referenceDecode(r); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("parser", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(benchBody)))
		r := strings.NewReader(benchBody)
		for b.Loop() {
			r.Reset(benchBody)
			if _, err := decodeDecideRequest(r, int64(len(benchBody))); err != nil {
				b.Fatal(err)
			}
		}
	})
}
