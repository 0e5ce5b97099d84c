package webhook

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/sallyport/sallyport/internal/decision"
)

// differentialSeeds are bodies on which the parser and the encoding/json
// reference are compared: valid requests, every JSON construct in every
// field, escapes, surrogates, invalid UTF-8, nulls, nesting, white space,
// numbers, duplicates and truncations.
var differentialSeeds = []string{
	validBody,
	" \t\r\n" + validBody + " \t\r\n",
	`{ "credential" : { "token" : "t" } , "resource" : { "namespace" : "a" , "service" : "b" , "name" : "/x" } , "action" : "GET" , "scopes" : [ "s1" , "s2" ] , "attributes" : { "k" : "v" } }`,
	`{"resource":{"host":"Ledger.Example.COM.","name":"/"},"action":"GET"}`,
	`{"resource":{"host":"ledger.example.com:8443","name":""},"action":"GET","scopes":[],"attributes":{}}`,
	`{"credential":null,"resource":{"namespace":"a","service":"b","name":"/x"},"action":"GET","scopes":null,"attributes":null}`,
	`{"credential":{},"resource":{"namespace":"a","service":"b","name":null,"host":null},"action":"GET"}`,
	`{"credential":{"token":null},"resource":{"namespace":"a","service":"b"},"action":"GET","scopes":["a",null],"attributes":{"k":null}}`,
	`{"resource":null,"action":"GET"}`,
	`{"resource":{"namespace":"a","service":"b"},"action":null}`,
	// Keys in any case, escaped, and folded the Unicode way.
	`{"Credential":{"TOKEN":"t"},"RESOURCE":{"NameSpace":"a","Service":"b","NAME":"/x"},"Action":"GET","Scopes":["s"],"ATTRIBUTES":{"K":"v"}}`,
	`{"\u0061ction":"GET","resource":{"namespace":"a","\u0073ervice":"b"}}`,
	"{\"action\":\"GET\",\"resource\":{\"namespace\":\"a\",\"\u017fervice\":\"b\"}}",
	"{\"action\":\"GET\",\"resource\":{\"namespace\":\"a\",\"service\":\"b\"},\"attributes\":{\"\u212a\":\"v\"}}",
	// Escapes and Unicode in values.
	`{"resource":{"namespace":"a","service":"b","name":"/\u00e9t\u00E9"},"action":"G\u0045T","attributes":{"k":"\"\\\/\b\f\n\r\t"}}`,
	`{"resource":{"namespace":"a","service":"b","name":"/\ud83d\ude00"},"action":"GET","attributes":{"k":"\ud83d\ude00\ud83d","l":"\ude00x","m":"\ud800\u0041","n":"\udbff\udfff"}}`,
	`{"resource":{"namespace":"a","service":"b"},"action":"GET","attributes":{"a":"\ud800\ud800\udc00","b":"\ud800\\u"}}`,
	`{"resource":{"namespace":"a","service":"b"},"action":"GET","attributes":{"c":"\ud800\u00"}}`,
	`{"resource":{"namespace":"a","service":"b"},"action":"GET","attributes":{"c":"\ud800x","d":"\udc00\ud800","e":"\uDBFF\uDFFF\uD800\uDC00"}}`,
	"{\"resource\":{\"namespace\":\"a\",\"service\":\"b\"},\"action\":\"GET\",\"attributes\":{\"k\":\"\xff\xfe\xed\xa0\x80 \xe2\x82 \xef\xbf\xbd\"}}",
	"{\"resource\":{\"namespace\":\"a\",\"service\":\"b\"},\"action\":\"GET\",\"attributes\":{\"\xff\":\"x\"}}",
	"{\"resource\":{\"namespace\":\"\xe6\x97\xa5\",\"service\":\"b\"},\"action\":\"GET\"}",
	"{\"resource\":{\"namespace\":\"a\",\"service\":\"b\"},\"action\":\"GET\",\"attributes\":{\"k\":\"a\x01b\"}}",
	`{"resource":{"namespace":"a","service":"b"},"action":"GET","attributes":{"k":"\x"}}`,
	`{"resource":{"namespace":"a","service":"b"},"action":"GET","attributes":{"k":"\u12G4"}}`,
	`{"resource":{"namespace":"a","service":"b"},"action":"GET","attributes":{"k":"\'"}}`,
	// Wrong types in every field.
	`{"credential":"t"}`, `{"credential":1}`, `{"credential":[]}`, `{"credential":true}`,
	`{"credential":{"token":1}}`, `{"credential":{"token":{}}}`, `{"credential":{"token":[]}}`, `{"credential":{"token":false}}`,
	`{"resource":"x"}`, `{"resource":[1]}`, `{"resource":{"name":-1.5e+3}}`, `{"resource":{"host":{"a":[1,{"b":null}]}}}`,
	`{"action":1}`, `{"action":true}`, `{"action":[]}`, `{"action":{}}`,
	`{"scopes":"s"}`, `{"scopes":{}}`, `{"scopes":[1]}`, `{"scopes":[[]]}`, `{"scopes":[{}]}`, `{"scopes":["a",true]}`,
	`{"attributes":"x"}`, `{"attributes":[]}`, `{"attributes":{"k":1}}`, `{"attributes":{"k":["v"]}}`, `{"attributes":{"k":{}}}`,
	`{"action":1,"resource":"x"}`, `{"action":1,"bogus":2}`, `{"bogus":1,"action":2}`,
	// Not an object.
	`[]`, `[1,2]`, `null`, `"x"`, `1`, `-0.5e-7`, `true`, `false`, ``, ` `, "\t\n", `nul`, `nulx`, `truex`, `1x`, `01`, `-`, `-x`, `1.`, `1.x`, `1e`, `1e+`, `1ex`,
	"\xef\xbb\xbf{}", `{}`, `{} `, `null null`, `{}x`,
	// Unknown fields at every level.
	`{"unknown":true}`, `{"":1}`, `{"a\"b":1}`, `{"a\"":1}`, `{"resource":{"port":1}}`, `{"credential":{"kind":"jwt"}}`,
	`{"resource":{"namespace":"a","service":"b"},"action":"GET","extra":{"deep":[[[{"x":1}]]]}}`,
	// Syntax errors.
	`{`, `{"action":`, `{"action"`, `{"action" 1}`, `{"action":"GET"`, `{"action":"GET",}`, `{"action":"GET" "x":1}`, `{,}`, `{1:2}`,
	`{"scopes":[,]}`, `{"scopes":["a",]}`, `{"scopes":["a" "b"]}`, `{"scopes":[`, `{"scopes":["a"`, `{"action":"GE`, `{"action":"\`, `{"action":"\u12`,
	`{"action":tru}`, `{"action":nul}`, `{"action":fals}`, `{"action":t}`, `{"action":nulll}`, `{"action":-}`, `{"action":01}`, `{"action":1.e5}`, `{"action":.5}`,
	`{"x":{"a":1,"b":[1,2,{"c":"\u00zz"}]}}`, `{"action":1,"x":[}`,
	`{"x":[[[[{"a":[[{}]]}]]]]}`,
	// Trailing data.
	validBody + validBody, validBody + " x", validBody + "}", validBody + " ]", validBody + "\n",
	`{"action":1} x`,
	// Duplicates: encoding/json takes the last; the parser refuses them.
	`{"action":"GET","action":"PUT","resource":{"namespace":"a","service":"b"}}`,
	`{"action":"GET","Action":"GET","resource":{"namespace":"a","service":"b"}}`,
	`{"resource":{"namespace":"a"},"resource":{"service":"b"},"action":"GET"}`,
	`{"resource":{"namespace":"a","service":"b","namespace":"c"},"action":"GET"}`,
	`{"credential":{"token":"a","token":"b"},"resource":{"namespace":"a","service":"b"},"action":"GET"}`,
	`{"scopes":["a"],"scopes":null,"resource":{"namespace":"a","service":"b"},"action":"GET"}`,
	`{"attributes":{"k":"v","k":"w"},"resource":{"namespace":"a","service":"b"},"action":"GET"}`,
	`{"attributes":{"k":"v","\u006b":"w"},"resource":{"namespace":"a","service":"b"},"action":"GET"}`,
	// Validation after decoding.
	`{"resource":{"namespace":"a","service":"b","name":"/x/../y"},"action":"GET"}`,
	`{"resource":{"namespace":"a","service":"b"},"action":"GET","scopes":["*"]}`,
	`{"resource":{"namespace":"a","service":"b"},"action":"G T"}`,
	`{"resource":{"namespace":"a","service":"b"},"action":"GET","attributes":{"":"v"}}`,
}

// compareDecoders decodes body with both decoders. Where both succeed the
// requests must be equal; where both fail, the errors. The parser may fail
// where encoding/json succeeded only on purpose (see decode_json.go): for a
// duplicate key, or for a "}" or "]" after the object.
func compareDecoders(t *testing.T, body []byte) {
	t.Helper()
	got, err := decodeDecideRequest(strings.NewReader(string(body)), int64(len(body)))
	want, refErr := referenceDecode(strings.NewReader(string(body)))
	if (got == nil) == (err == nil) {
		t.Fatalf("%q: request %v with error %v", body, got, err)
	}
	if err != nil {
		var br *badRequest
		var fe *decision.FieldError
		if !errors.As(err, &br) && !errors.As(err, &fe) {
			t.Fatalf("%q: error of type %T: %v", body, err, err)
		}
	}
	switch {
	case err == nil && refErr == nil:
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("%q:\n got %#v\nwant %#v", body, got, want)
		}
	case err == nil:
		t.Fatalf("%q: accepted, encoding/json refused it: %v", body, refErr)
	case strings.Contains(err.Error(), "given more than once"):
		// Refused as ambiguous; encoding/json took the last value.
	case refErr == nil && err.Error() == "body: more than one JSON value" && trailingBracket(body):
		// Decoder.More let a trailing "}" or "]" pass.
	case refErr == nil:
		t.Fatalf("%q: refused (%v), encoding/json accepted it", body, err)
	case err.Error() != refErr.Error():
		if err.Error() == "body: more than one JSON value" && trailingBracket(body) {
			break // the reference went on to Validate and failed there
		}
		t.Fatalf("%q: error\n %v\nwant\n %v", body, err, refErr)
	}
}

// trailingBracket reports whether the first JSON value of body is followed
// by white space and then "}" or "]", which Decoder.More did not count as
// another value.
func trailingBracket(body []byte) bool {
	p := parser{s: string(body)}
	if !p.ws() || p.skipValue() != nil || !p.ws() {
		return false
	}
	return p.s[p.i] == '}' || p.s[p.i] == ']'
}

// deepSeeds probe encoding/json's nesting limit of 10000. They are not
// fuzz seeds: tens of kilobytes of brackets slow the fuzzer to a crawl.
var deepSeeds = []string{
	strings.Repeat("[", 10001) + strings.Repeat("]", 10001),
	`{"x":` + strings.Repeat("[", 9999) + strings.Repeat("]", 9999) + `}`,
	`{"x":` + strings.Repeat("[", 10000) + strings.Repeat("]", 10000) + `}`,
	`{"x":` + strings.Repeat(`{"a":`, 10000) + `1` + strings.Repeat("}", 10000) + `}`,
}

func TestDecodeDifferential(t *testing.T) {
	for _, s := range append(deepSeeds, differentialSeeds...) {
		compareDecoders(t, []byte(s))
	}
}

// FuzzDecodeDifferential compares the parser with the encoding/json decoder
// it replaced.
func FuzzDecodeDifferential(f *testing.F) {
	for _, s := range differentialSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		compareDecoders(t, body)
	})
}

// The documented differences, pinned.
func TestDecodeStricterThanEncodingJSON(t *testing.T) {
	for _, tc := range []struct{ body, err string }{
		{`{"action":"GET","action":"PUT","resource":{"namespace":"a","service":"b"}}`, "action: given more than once"},
		{`{"action":"GET","ACTION":"PUT","resource":{"namespace":"a","service":"b"}}`, "action: given more than once"},
		{`{"resource":{"namespace":"a","service":"b","Service":"c"},"action":"GET"}`, "resource.service: given more than once"},
		{`{"resource":{"namespace":"a","service":"b"},"action":"GET","attributes":{"k":"v","k":"w"}}`, `attributes["k"]: given more than once`},
		{`{"resource":{"namespace":"a","service":"b"},"action":"GET"}}`, "body: more than one JSON value"},
		{`{"resource":{"namespace":"a","service":"b"},"action":"GET"} ]`, "body: more than one JSON value"},
	} {
		if _, err := referenceDecode(strings.NewReader(tc.body)); err != nil {
			t.Errorf("%s: encoding/json refused it too: %v", tc.body, err)
		}
		if _, err := decodeDecideRequest(strings.NewReader(tc.body), 0); err == nil || !strings.HasPrefix(err.Error(), tc.err) {
			t.Errorf("%s: error %v, want %q", tc.body, err, tc.err)
		}
	}
}

// The body is read whole whatever the hint says.
func TestReadBodyHint(t *testing.T) {
	for _, hint := range []int64{0, 1, int64(len(validBody)) - 1, int64(len(validBody)), int64(len(validBody)) + 1, 1 << 16} {
		got, err := readBody(strings.NewReader(validBody), hint)
		if err != nil || got != validBody {
			t.Errorf("hint %d: %q, %v", hint, got, err)
		}
	}
}
