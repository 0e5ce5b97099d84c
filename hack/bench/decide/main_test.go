package main

import (
	"strings"
	"testing"
)

func TestFlagsCheck(t *testing.T) {
	for _, f := range []flags{{policies: 1, handler: "decide"}, {policies: 10, handler: "floor"}} {
		if err := f.check(); err != nil {
			t.Errorf("-policies %d -handler %s refused: %v", f.policies, f.handler, err)
		}
	}
	for _, c := range []struct {
		f    flags
		flag string
	}{
		{flags{policies: 0, handler: "decide"}, "-policies"},
		{flags{policies: 10, handler: "opa"}, "-handler"},
		{flags{policies: 10, handler: ""}, "-handler"},
	} {
		err := c.f.check()
		if err == nil || !strings.HasPrefix(err.Error(), c.flag+" ") {
			t.Errorf("-policies %d -handler %q: error %v, want one naming %s", c.f.policies, c.f.handler, err, c.flag)
		}
	}
}
