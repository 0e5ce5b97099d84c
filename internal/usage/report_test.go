package usage

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation"
)

// Add sums counts, keeps the latest use and the earliest known tracking
// start, and neither changes nor retains its argument.
func TestReportAddGrants(t *testing.T) {
	r := newReport()
	r.Policies["u1"] = &Policy{Kind: KindResource, Namespace: "ledger", Name: "api", Grants: map[string]Grant{
		"read":  {Decisions: 5, Last: 100, Since: 50},
		"write": {Decisions: 1, Last: 70},
		"list":  {Decisions: 2, Last: 60, Since: 30},
	}}
	o := newReport()
	o.Policies["u1"] = &Policy{Kind: KindResource, Namespace: "ledger", Name: "api", Grants: map[string]Grant{
		"read":  {Decisions: 3, Last: 90, Since: 40},
		"write": {Decisions: 2, Last: 80, Since: 20},
		"list":  {Decisions: 4, Last: 65},
		"audit": {Decisions: 0, Since: 10},
	}}
	o.Policies["u2"] = &Policy{Kind: KindConnection, Namespace: "billing", Name: "worker", Grants: map[string]Grant{
		"ledger": {Decisions: 7, Last: 99, Since: 1},
	}}
	r.Add(o)

	want := map[string]Grant{
		"read":  {Decisions: 8, Last: 100, Since: 40},
		"write": {Decisions: 3, Last: 80, Since: 20},
		"list":  {Decisions: 6, Last: 65, Since: 30},
		"audit": {Decisions: 0, Since: 10},
	}
	if got := r.Policies["u1"].Grants; !reflect.DeepEqual(got, want) {
		t.Errorf("u1 grants = %+v, want %+v", got, want)
	}
	p2 := r.Policies["u2"]
	if p2 == nil || p2.Kind != KindConnection || p2.Namespace != "billing" || p2.Name != "worker" ||
		p2.Grants["ledger"] != (Grant{Decisions: 7, Last: 99, Since: 1}) {
		t.Errorf("u2 = %+v, want a copy of o's", p2)
	}

	// o is not retained: changing it afterwards leaves r as it was.
	o.Policies["u2"].Grants["ledger"] = Grant{Decisions: 1000}
	o.Policies["u2"].Name = "changed"
	if p2.Grants["ledger"].Decisions != 7 || p2.Name != "worker" {
		t.Errorf("r follows a change to o: %+v", p2)
	}
	// o is not changed.
	if g := o.Policies["u1"].Grants["read"]; g != (Grant{Decisions: 3, Last: 90, Since: 40}) {
		t.Errorf("o changed: %+v", g)
	}
}

// Of shadow counts a newer generation replaces, the same generation adds
// up, and an older generation is ignored, whichever side it is on.
func TestReportAddShadow(t *testing.T) {
	report := func(s *Shadow) *Report {
		r := newReport()
		r.Policies["u"] = &Policy{Kind: KindResource, Namespace: "ns", Name: "p", Shadow: s}
		return r
	}
	cases := []struct {
		name      string
		have, add *Shadow
		want      *Shadow
	}{
		{"none plus some", nil, &Shadow{Generation: 3, Decisions: 4, WouldDeny: 1}, &Shadow{Generation: 3, Decisions: 4, WouldDeny: 1}},
		{"some plus none", &Shadow{Generation: 3, Decisions: 4}, nil, &Shadow{Generation: 3, Decisions: 4}},
		{"newer replaces", &Shadow{Generation: 3, Decisions: 4, WouldDeny: 2, LastDisagreement: 500},
			&Shadow{Generation: 4, Decisions: 1, WouldAllow: 1, LastDisagreement: 100},
			&Shadow{Generation: 4, Decisions: 1, WouldAllow: 1, LastDisagreement: 100}},
		{"same adds", &Shadow{Generation: 4, Decisions: 4, WouldDeny: 2, WouldAllow: 1, LastDisagreement: 500},
			&Shadow{Generation: 4, Decisions: 6, WouldDeny: 1, WouldAllow: 3, LastDisagreement: 400},
			&Shadow{Generation: 4, Decisions: 10, WouldDeny: 3, WouldAllow: 4, LastDisagreement: 500}},
		{"older ignored", &Shadow{Generation: 4, Decisions: 4, LastDisagreement: 10},
			&Shadow{Generation: 3, Decisions: 100, WouldDeny: 50, LastDisagreement: 900},
			&Shadow{Generation: 4, Decisions: 4, LastDisagreement: 10}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r, o := report(c.have), report(c.add)
			r.Add(o)
			if got := r.Policies["u"].Shadow; !reflect.DeepEqual(got, c.want) {
				t.Errorf("shadow = %+v, want %+v", got, c.want)
			}
			if c.add != nil && r.Policies["u"].Shadow == c.add {
				t.Error("r holds o's shadow, not a copy")
			}
		})
	}
}

// A report survives encode and decode unchanged, in binaryData only.
func TestEncodeDecodeRoundTrip(t *testing.T) {
	r := newReport()
	r.Replica = "sallyport-7d9f-abcde"
	r.Pod = &Pod{Name: "sallyport-7d9f-abcde", UID: "pod-uid"}
	r.Written = time.Date(2026, 3, 2, 10, 30, 0, 0, time.UTC)
	r.Folded = []types.UID{"a", "b"}
	r.Policies["u1"] = &Policy{Kind: KindResource, Namespace: "ledger", Name: "api",
		Grants: map[string]Grant{"read": {Decisions: 3, Last: 1700000000, Since: 1690000000}, "never": {Since: 1690000000}}}
	r.Policies["u2"] = &Policy{Kind: KindConnection, Namespace: "billing", Name: "worker",
		Shadow: &Shadow{Generation: 2, Decisions: 9, WouldDeny: 1, WouldAllow: 2, LastDisagreement: 1700000001}}

	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "ops", Name: "x"}, Data: map[string]string{"stale": "y"}}
	if err := encode(cm, r); err != nil {
		t.Fatal(err)
	}
	if cm.Data != nil || len(cm.BinaryData) != 1 || len(cm.BinaryData[dataKey]) == 0 {
		t.Fatalf("encoded ConfigMap has data %v and binaryData keys %v, want only binaryData %q", cm.Data, keys(cm.BinaryData), dataKey)
	}
	got, err := decode(cm)
	if err != nil {
		t.Fatal(err)
	}
	if !got.Written.Equal(r.Written) {
		t.Errorf("written = %v, want %v", got.Written, r.Written)
	}
	got.Written = r.Written
	if !reflect.DeepEqual(got, r) {
		t.Errorf("round trip:\n got %s\nwant %s", dump(got), dump(r))
	}

	// An empty report decodes with a usable Policies map.
	if err := encode(cm, &Report{SchemaVersion: SchemaVersion}); err != nil {
		t.Fatal(err)
	}
	if got, err := decode(cm); err != nil || got.Policies == nil {
		t.Errorf("empty report decodes to %+v, %v; want non-nil Policies", got, err)
	}
}

// decode refuses what it cannot read, naming the ConfigMap.
func TestDecodeRejects(t *testing.T) {
	gz := func(s string) []byte {
		var b bytes.Buffer
		w := gzip.NewWriter(&b)
		_, _ = w.Write([]byte(s))
		_ = w.Close()
		return b.Bytes()
	}
	future := newReport()
	future.SchemaVersion = SchemaVersion + 1
	futureCM := &corev1.ConfigMap{}
	if err := encode(futureCM, future); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name   string
		binary map[string][]byte
		data   map[string]string
		want   string
	}{
		{"wrong schema version", futureCM.BinaryData, nil, fmt.Sprintf("schema version %d, want %d", SchemaVersion+1, SchemaVersion)},
		{"no schema version", map[string][]byte{dataKey: gz(`{"policies":{}}`)}, nil, "schema version 0"},
		{"missing key", nil, map[string]string{dataKey: "not binary"}, "no binaryData"},
		{"other key", map[string][]byte{"other": gz("{}")}, nil, "no binaryData"},
		{"not gzip", map[string][]byte{dataKey: []byte("this is not gzip")}, nil, "gzip"},
		{"not json", map[string][]byte{dataKey: gz("][")}, nil, "decode usage report"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "ops", Name: "sallyport-usage-x"}, BinaryData: c.binary, Data: c.data}
			r, err := decode(cm)
			if err == nil {
				t.Fatalf("decode = %+v, want an error", r)
			}
			if !strings.Contains(err.Error(), "ops/sallyport-usage-x") || !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %q does not name ops/sallyport-usage-x and say %q", err, c.want)
			}
		})
	}
}

// Any replica name makes a valid ConfigMap name; names that differ only in
// case or punctuation share one (two such replicas must not run at once).
func TestReportName(t *testing.T) {
	long := strings.Repeat("x", 236) + "." + strings.Repeat("y", 50)
	cases := []struct{ replica, want string }{
		{"sallyport-7d9f-abcde", "sallyport-usage-sallyport-7d9f-abcde-7"},
		{"Operator-Host", "sallyport-usage-operator-host-7"},
		{"build.example.com", "sallyport-usage-build-example-com-7"},
		{"-under_score--", "sallyport-usage-under-score-7"},
		{"ÄÖ", "sallyport-usage-replica-7"},
		{"", "sallyport-usage-replica-7"},
		{"...", "sallyport-usage-replica-7"},
		{"archive", "sallyport-usage-replica-archive-7"},
		{long, "sallyport-usage-" + strings.Repeat("x", 234) + "-7"},
		{strings.Repeat("a", 1000), "sallyport-usage-" + strings.Repeat("a", 234) + "-7"},
	}
	for _, c := range cases {
		if got := ReportName(c.replica, Shards-1); got != c.want {
			t.Errorf("ReportName(%.20q…) = %q, want %q", c.replica, got, c.want)
		}
		for k := range Shards {
			got := ReportName(c.replica, k)
			if errs := validation.IsDNS1123Subdomain(got); len(errs) > 0 {
				t.Errorf("ReportName(%.20q…) = %q is no valid ConfigMap name: %v", c.replica, got, errs)
			}
			for a := range Shards {
				if got == ArchiveName(a) {
					t.Errorf("ReportName(%q, %d) is an archive's name", c.replica, k)
				}
			}
		}
	}
}

// reportSize builds a report like a busy cluster's: n ResourcePolicies of
// 10 used rules each, and returns the size of its largest shard compressed
// as encode writes it.
func reportSize(t *testing.T, n int) int {
	t.Helper()
	rnd := rand.New(rand.NewPCG(1, uint64(n)))
	base := time.Date(2026, 3, 2, 0, 0, 0, 0, time.UTC).Unix()
	verbs := []string{"read", "list", "write", "delete", "audit"}
	r := newReport()
	r.Replica, r.Pod = "sallyport-7d9f6c8b5-x2k4q", &Pod{Name: "sallyport-7d9f6c8b5-x2k4q", UID: "0b9a6f3e-3c1d-4e2f-9a8b-7c6d5e4f3a2b"}
	r.Written = time.Unix(base+86400, 0).UTC()
	for i := range n {
		uid := types.UID(fmt.Sprintf("%08x-%04x-4%03x-%04x-%012x", rnd.Uint32(), rnd.Uint32()&0xffff, rnd.Uint32()&0xfff, 0x8000|rnd.Uint32()&0x3fff, rnd.Uint64()&0xffffffffffff))
		p := &Policy{Kind: KindResource, Namespace: fmt.Sprintf("team-%d", i%200), Name: fmt.Sprintf("service-%d", i), Grants: map[string]Grant{}}
		for j := range 10 {
			since := base - rnd.Int64N(30*86400)
			p.Grants[fmt.Sprintf("%s-entries-%d", verbs[j%len(verbs)], j)] = Grant{
				Decisions: 1000 + rnd.Uint64N(9000), Last: base + rnd.Int64N(86400), Since: since,
			}
		}
		r.Policies[uid] = p
	}
	largest := 0
	for _, part := range r.split() {
		var buf bytes.Buffer
		zw := gzip.NewWriter(&buf)
		if err := json.NewEncoder(zw).Encode(part); err != nil {
			t.Fatal(err)
		}
		if err := zw.Close(); err != nil {
			t.Fatal(err)
		}
		err := encode(&corev1.ConfigMap{}, part)
		if over := buf.Len() > maxReportBytes; over != (err != nil) {
			t.Errorf("encode of %d bytes compressed returned %v; want an error exactly when over %d", buf.Len(), err, maxReportBytes)
		}
		largest = max(largest, buf.Len())
	}
	return largest
}

// How large a replica's report shards get (logged for 1,000 and 10,000
// ResourcePolicies of 10 used rules): 10,000 policies, the scale the
// benchmarks go to, must fit, every shard within what a ConfigMap holds.
func TestReportSize(t *testing.T) {
	for _, n := range []int{1000, 10000} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			if n > 1000 && testing.Short() {
				t.Skip("slow under -race; run without -short for the size of 10,000 policies")
			}
			size := reportSize(t, n)
			t.Logf("report of %d ResourcePolicies x 10 used rules: largest of %d shards %d bytes compressed (%.0f per policy); limit %d",
				n, Shards, size, float64(size*Shards)/float64(n), maxReportBytes)
			if size > maxReportBytes {
				t.Errorf("a shard of the report of %d policies is %d bytes compressed, over the %d a ConfigMap may hold", n, size, maxReportBytes)
			}
		})
	}
}

func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

func dump(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}
