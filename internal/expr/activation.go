package expr

import "github.com/google/cel-go/interpreter"

// Activation binds the variables for one evaluation. It resolves names
// without a map, so building one per decision costs no allocation beyond the
// struct. A nil field resolves to the empty value of its type, so every field
// is always present.
type Activation struct {
	Connection *Connection
	Request    *Request
	Resource   *Resource
}

var (
	emptyConnection = &Connection{}
	emptyRequest    = &Request{Scopes: []string{}, Attributes: map[string]string{}}
	emptyResource   = &Resource{}
)

// ResolveName implements interpreter.Activation.
func (a *Activation) ResolveName(name string) (any, bool) {
	switch name {
	case VarConnection:
		if a.Connection == nil {
			return emptyConnection, true
		}
		return a.Connection, true
	case VarRequest:
		if a.Request == nil {
			return emptyRequest, true
		}
		return a.Request, true
	case VarResource:
		if a.Resource == nil {
			return emptyResource, true
		}
		return a.Resource, true
	}
	return nil, false
}

// Parent implements interpreter.Activation.
func (a *Activation) Parent() interpreter.Activation { return nil }
