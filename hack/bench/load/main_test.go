package main

import (
	"strings"
	"testing"
	"time"
)

func TestConfigCheck(t *testing.T) {
	good := config{rate: 1000, connections: 16, duration: time.Second, slowOver: 2 * time.Millisecond}
	if err := good.check(); err != nil {
		t.Fatalf("%+v refused: %v", good, err)
	}
	for flag, edit := range map[string]func(*config){
		"-rate":        func(c *config) { c.rate = 0 },
		"-connections": func(c *config) { c.connections = -1 },
		"-duration":    func(c *config) { c.duration = 0 },
		"-warmup":      func(c *config) { c.warmup = -time.Second },
		"-slow-over":   func(c *config) { c.slowOver = 0 },
	} {
		c := good
		edit(&c)
		if err := c.check(); err == nil || !strings.HasPrefix(err.Error(), flag+" ") {
			t.Errorf("bad %s: error %v, want one naming it", flag, err)
		}
	}
}
