package usage

import (
	"bytes"
	"compress/gzip"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// A usage report is read from a ConfigMap, which anyone with write access
// to the operator's namespace can change: decoding anything must end in a
// report or an error, never a panic, and a report that decodes must merge
// and encode again.
func FuzzDecodeReport(f *testing.F) {
	gz := func(s string) []byte {
		var b bytes.Buffer
		zw := gzip.NewWriter(&b)
		_, _ = zw.Write([]byte(s))
		_ = zw.Close()
		return b.Bytes()
	}
	f.Add(gz(`{"schemaVersion":1,"replica":"r","policies":{"u":{"kind":"ResourcePolicy","namespace":"n","name":"p","grants":{"read":{"n":3,"last":100,"since":50}}}}}`))
	f.Add(gz(`{"schemaVersion":1,"policies":{"u":{"kind":"ConnectionPolicy","shadow":{"generation":2,"n":5,"wouldDeny":1}}},"folded":["x"]}`))
	f.Add(gz(`{"schemaVersion":1,"policies":null}`))
	f.Add(gz(`{"schemaVersion":2}`))
	f.Add(gz(`{"schemaVersion":1,"policies":{"u":null}}`))
	f.Add(gz(`{"policies":{"u":{"grants":{"a":{"n":18446744073709551615}}}}}`))
	f.Add([]byte("not gzip"))
	f.Add(gz(`[`))
	f.Fuzz(func(t *testing.T, data []byte) {
		cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "sallyport-usage-r-0"}, BinaryData: map[string][]byte{dataKey: data}}
		r, err := decode(cm)
		if err != nil {
			return
		}
		if r.SchemaVersion != SchemaVersion || r.Policies == nil {
			t.Fatalf("decoded a report with schema %d, policies %v", r.SchemaVersion, r.Policies)
		}
		for uid, p := range r.Policies {
			if p == nil {
				t.Fatalf("decoded a report with a null policy %q", uid)
			}
		}
		total := newReport()
		total.Add(r)
		total.Add(r)
		if err := encode(&corev1.ConfigMap{}, r); err != nil && !bytes.Contains([]byte(err.Error()), []byte("ConfigMap can hold")) {
			t.Fatalf("a decoded report does not encode: %v", err)
		}
	})
}
