package expr

import (
	"time"

	"github.com/google/cel-go/cel"
	"github.com/google/cel-go/common/types"
	"github.com/google/cel-go/common/types/ref"
)

// fieldGetter reads one field of a variable struct as a CEL value.
type fieldGetter func(obj any) (ref.Val, bool)

// fieldGetters reads the fields of Connection, Request and Resource without
// reflection, by CEL type name and field name. Each getter returns the value
// ext.NativeTypes would produce for the field (reflect read, then the
// provider's NativeToValue), already converted, so a field selection costs
// one allocation at most instead of three or more. It reports false for any
// other object (a nil pointer, a struct value built by the expression), which
// the native provider's reflection handles as before.
func fieldGetters(adapter types.Adapter) map[string]map[string]fieldGetter {
	conn := func(f func(*Connection) ref.Val) fieldGetter {
		return func(obj any) (ref.Val, bool) {
			c, ok := obj.(*Connection)
			if !ok || c == nil {
				return nil, false
			}
			return f(c), true
		}
	}
	req := func(f func(*Request) ref.Val) fieldGetter {
		return func(obj any) (ref.Val, bool) {
			r, ok := obj.(*Request)
			if !ok || r == nil {
				return nil, false
			}
			return f(r), true
		}
	}
	res := func(f func(*Resource) ref.Val) fieldGetter {
		return func(obj any) (ref.Val, bool) {
			r, ok := obj.(*Resource)
			if !ok || r == nil {
				return nil, false
			}
			return f(r), true
		}
	}
	return map[string]map[string]fieldGetter{
		"expr.Connection": {
			"identity":       conn(func(c *Connection) ref.Val { return types.String(c.Identity) }),
			"namespace":      conn(func(c *Connection) ref.Val { return types.String(c.Namespace) }),
			"serviceAccount": conn(func(c *Connection) ref.Val { return types.String(c.ServiceAccount) }),
			"audience":       conn(func(c *Connection) ref.Val { return types.String(c.Audience) }),
			"policy":         conn(func(c *Connection) ref.Val { return types.String(c.Policy) }),
			"credentialID":   conn(func(c *Connection) ref.Val { return types.String(c.CredentialID) }),
			"issuedAt":       conn(func(c *Connection) ref.Val { return timestampOf(c.IssuedAt) }),
			"expiresAt":      conn(func(c *Connection) ref.Val { return timestampOf(c.ExpiresAt) }),
			"lifetime":       conn(func(c *Connection) ref.Val { return types.Duration{Duration: c.Lifetime} }),
			"age":            conn(func(c *Connection) ref.Val { return types.Duration{Duration: c.Age} }),
			"pod":            conn(func(c *Connection) ref.Val { return types.String(c.Pod) }),
		},
		"expr.Request": {
			"action": req(func(r *Request) ref.Val { return types.String(r.Action) }),
			// The same list NewDynamicList builds over a []string, with
			// element access that needs no reflection.
			"scopes": req(func(r *Request) ref.Val { return types.NewStringList(adapter, r.Scopes) }),
			"time":   req(func(r *Request) ref.Val { return timestampOf(r.Time) }),
			// The same map NewDynamicMap builds over a map[string]string
			// (a string-keyed lookup either way), without reflection.
			"attributes": req(func(r *Request) ref.Val { return types.NewStringStringMap(adapter, r.Attributes) }),
		},
		"expr.Resource": {
			"namespace":      res(func(r *Resource) ref.Val { return types.String(r.Namespace) }),
			"service":        res(func(r *Resource) ref.Val { return types.String(r.Service) }),
			"name":           res(func(r *Resource) ref.Val { return types.String(r.Name) }),
			"class":          res(func(r *Resource) ref.Val { return types.String(r.Class) }),
			"classification": res(func(r *Resource) ref.Val { return types.String(r.Classification) }),
		},
	}
}

// timestampOf converts a time field as ext.NativeTypes does: the zero
// time.Time (reflect's zero, location included) reads as the Unix epoch.
func timestampOf(t time.Time) ref.Val {
	if t == (time.Time{}) { //nolint:staticcheck // reflect's zero value, as NativeTypes tests it; IsZero would also match a zero instant with a location
		return types.Timestamp{Time: time.Unix(0, 0)}
	}
	return types.Timestamp{Time: t}
}

// fastFieldProvider wraps the environment's type provider (ext.NativeTypes)
// and replaces only how the fields of the variable structs are read at run
// time: types, field names, presence tests and everything else are the
// wrapped provider's.
type fastFieldProvider struct {
	types.Provider
	getters map[string]map[string]fieldGetter
}

// FindStructFieldType implements types.Provider.
func (p *fastFieldProvider) FindStructFieldType(typeName, fieldName string) (*types.FieldType, bool) {
	ft, ok := p.Provider.FindStructFieldType(typeName, fieldName)
	if !ok || ft == nil {
		return ft, ok
	}
	get, ok := p.getters[typeName][fieldName]
	if !ok {
		return ft, true
	}
	slow := ft.GetFrom
	return &types.FieldType{
		Type:  ft.Type,
		IsSet: ft.IsSet,
		GetFrom: func(obj any) (any, error) {
			if v, ok := get(obj); ok {
				return v, nil
			}
			return slow(obj)
		},
	}, true
}

// fastFields installs fastFieldProvider over the environment's provider. It
// must follow ext.NativeTypes.
func fastFields() cel.EnvOption {
	return func(e *cel.Env) (*cel.Env, error) {
		p := &fastFieldProvider{Provider: e.CELTypeProvider(), getters: fieldGetters(e.CELTypeAdapter())}
		return cel.CustomTypeProvider(p)(e)
	}
}
