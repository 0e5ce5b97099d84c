package expr

import (
	"reflect"
	"testing"
	"time"

	"github.com/google/cel-go/common/types"
	"github.com/google/cel-go/common/types/ref"
)

// The reflection-free field getters yield the values the native provider's
// reflection does, for every field of every variable, set or zero.
func TestFastFieldsMatchReflection(t *testing.T) {
	e, err := env(RuleScope)
	if err != nil {
		t.Fatal(err)
	}
	fast, ok := e.CELTypeProvider().(*fastFieldProvider)
	if !ok {
		t.Fatalf("provider is %T, not *fastFieldProvider", e.CELTypeProvider())
	}
	adapter := e.CELTypeAdapter()
	objs := map[string][]any{
		"expr.Connection": {fullActivation.Connection, &Connection{}, emptyConnection,
			&Connection{IssuedAt: time.Time{}.In(time.FixedZone("x", 3600)), Age: -time.Second}},
		"expr.Request":  {fullActivation.Request, &Request{}, emptyRequest},
		"expr.Resource": {fullActivation.Resource, &Resource{}, emptyResource},
	}
	for typeName, list := range objs {
		names, ok := fast.FindStructFieldNames(typeName)
		if !ok {
			t.Fatalf("no fields for %s", typeName)
		}
		if got, want := len(fast.getters[typeName]), len(names); got != want {
			t.Errorf("%s: %d fast getters, %d fields", typeName, got, want)
		}
		for _, field := range names {
			ft, ok := fast.FindStructFieldType(typeName, field)
			if !ok {
				t.Fatalf("%s.%s not found", typeName, field)
			}
			slowFt, _ := fast.Provider.FindStructFieldType(typeName, field)
			if !reflect.DeepEqual(ft.Type, slowFt.Type) {
				t.Errorf("%s.%s: type %v, want %v", typeName, field, ft.Type, slowFt.Type)
			}
			for i, obj := range list {
				got, err := ft.GetFrom(obj)
				if err != nil {
					t.Fatal(err)
				}
				raw, err := slowFt.GetFrom(obj)
				if err != nil {
					t.Fatal(err)
				}
				want := adapter.NativeToValue(raw)
				g, ok := got.(ref.Val)
				if !ok {
					t.Fatalf("%s.%s[%d]: %T is not a ref.Val", typeName, field, i, got)
				}
				if reflect.TypeOf(g) != reflect.TypeOf(want) || g.Type() != want.Type() || g.Equal(want) != types.True {
					t.Errorf("%s.%s[%d] = %T %v, want %T %v", typeName, field, i, g, g, want, want)
				}
				if ts, ok := want.(types.Timestamp); ok && g.(types.Timestamp).Location() != ts.Location() {
					t.Errorf("%s.%s[%d]: location %v, want %v", typeName, field, i, g.(types.Timestamp).Location(), ts.Location())
				}
				if !reflect.DeepEqual(g.Value(), want.Value()) {
					t.Errorf("%s.%s[%d]: Value() = %#v, want %#v", typeName, field, i, g.Value(), want.Value())
				}
			}
			// Anything but a non-nil pointer to the struct takes the
			// reflection path.
			if typeName == "expr.Connection" {
				got, err := ft.GetFrom(Connection{Identity: "x", Age: time.Minute})
				if err != nil || got == nil {
					t.Errorf("%s.%s of a struct value = %v, %v", typeName, field, got, err)
				}
			}
		}
	}
}

// Presence tests and struct values built by an expression go through the
// native provider as before.
func TestEvalPresenceAndConstruction(t *testing.T) {
	for _, tt := range []struct {
		src  string
		a    *Activation
		want bool
	}{
		{`has(connection.identity) && has(request.scopes) && has(resource.classification)`, fullActivation, true},
		{`has(connection.identity) || has(request.scopes) || has(request.attributes) || has(connection.issuedAt)`,
			&Activation{Connection: &Connection{}, Request: &Request{}, Resource: &Resource{}}, false},
		{`request.attributes[?"sourceIP"].orValue("") == "10.1.2.3"`, fullActivation, true},
		{`request.scopes[1] == "ledger.list" && request.scopes.exists(s, s == "ledger.read")`, fullActivation, true},
		{`request.attributes == {"sourceIP": "10.1.2.3", "sourceIP6": "fd00::1", "url": "https://ledger.example:8443/entries?x=1", "memory": "512Mi", "version": "1.4.2"}`, fullActivation, true},
		{`request.scopes + ["x"] == ["ledger.read", "ledger.list", "x"]`, fullActivation, true},
		{`dyn(request.attributes)[dyn(1)] == "x"`, fullActivation, false},
	} {
		got, err := evalRule(t, tt.src, tt.a)
		if tt.src == `dyn(request.attributes)[dyn(1)] == "x"` {
			if err == nil {
				t.Errorf("Eval(%q) = %v, want a no-such-key error", tt.src, got)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("Eval(%q) = %v, %v; want %v", tt.src, got, err, tt.want)
		}
	}
}
