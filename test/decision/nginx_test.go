package decision_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sallyport/sallyport/internal/testenv"
)

// nginxConf puts sallyport in front of an upstream with auth_request, as an
// ingress-nginx auth-url or a hand-written nginx would: the subrequest names
// the target in its query string and passes the original method and URI.
const nginxConf = `daemon off;
master_process off;
worker_processes 1;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log warn;
events { worker_connections 64; }
http {
  access_log off;
  client_body_temp_path %[1]s/body;
  proxy_temp_path %[1]s/proxy;
  fastcgi_temp_path %[1]s/fastcgi;
  uwsgi_temp_path %[1]s/uwsgi;
  scgi_temp_path %[1]s/scgi;
  server {
    listen %[2]s;
    location = /_sallyport {
      internal;
      proxy_pass http://%[3]s/v1/check/nginx?namespace=%[4]s&service=ledger-api&scopes=ledger.read;
      proxy_pass_request_body off;
      proxy_set_header Content-Length "";
      proxy_set_header X-Original-URI $request_uri;
      proxy_set_header X-Original-Method $request_method;
    }
    location / {
      auth_request /_sallyport;
      auth_request_set $sallyport_identity $upstream_http_x_sallyport_identity;
      auth_request_set $sallyport_reason $upstream_http_x_sallyport_reason;
      # Overwrite whatever the client sent: the upstream trusts these.
      proxy_set_header X-Sallyport-Identity $sallyport_identity;
      add_header X-Sallyport-Reason $sallyport_reason always;
      proxy_pass http://%[5]s;
    }
  }
}
`

func nginxBinary(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath("nginx"); err == nil {
		return p
	}
	if _, err := os.Stat("/usr/sbin/nginx"); err == nil {
		return "/usr/sbin/nginx"
	}
	t.Fatal("nginx is required by this test; hack/deps.sh (run by make test) installs Debian's")
	return ""
}

// TestThroughNginx sends requests through a real nginx with auth_request.
func TestThroughNginx(t *testing.T) {
	bin := nginxBinary(t)
	f := setup(t)
	tok := mint(t, f.callerNS, "worker", 600, nil, f.ledgerAud)

	// The upstream records the identity nginx passes on.
	var mu sync.Mutex
	var seen []string
	upstream := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.Method+" "+r.URL.Path+" as "+r.Header.Get("X-Sallyport-Identity"))
		mu.Unlock()
		_, _ = io.WriteString(w, "upstream\n")
	})}
	upLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	upAddr := upLn.Addr().String()
	go func() { _ = upstream.Serve(upLn) }()
	defer func() { _ = upstream.Close() }()

	dir := t.TempDir()
	nginxAddr, err := testenv.FreeLoopbackAddr()
	if err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(conf, fmt.Appendf(nil, nginxConf, dir, nginxAddr, strings.TrimPrefix(decideURL, "http://"), f.serviceNS, upAddr), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-p", dir, "-c", conf, "-e", filepath.Join(dir, "error.log"))
	out, _ := os.Create(filepath.Join(dir, "stderr"))
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			logs, _ := os.ReadFile(filepath.Join(dir, "error.log"))
			t.Logf("nginx error log:\n%s", logs)
		}
	}()

	// get returns the status of a request through nginx, 0 when it fails.
	get := func(method, path, token string, extra map[string]string) int {
		t.Helper()
		req, _ := http.NewRequestWithContext(context.Background(), method, "http://"+nginxAddr+path, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		for k, v := range extra {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		return resp.StatusCode
	}
	testenv.Eventually(t, 10*time.Second, func() error {
		if get("GET", "/healthz", "", nil) == 0 {
			return fmt.Errorf("nginx is not up")
		}
		return nil
	})

	identity := "system:serviceaccount:" + f.callerNS + ":worker"
	for _, tc := range []struct {
		method, path, token string
		extra               map[string]string
		code                int
	}{
		{"GET", "/entries/1", tok, map[string]string{"X-Sallyport-Identity": "system:serviceaccount:kube-system:admin"}, 200},
		{"GET", "/entries/1?page=2", tok, nil, 200},
		{"GET", "/admin", tok, map[string]string{"X-Original-URI": "/entries/1", "X-Forwarded-Uri": "/entries/1"}, 403},
		{"DELETE", "/entries/1", tok, nil, 403},
		{"GET", "/entries/1", "", nil, 401},
		{"GET", "/entries/%2e%2e/admin", tok, nil, 500}, // nginx answers 500 when the subrequest says 400
	} {
		if code := get(tc.method, tc.path, tc.token, tc.extra); code != tc.code {
			t.Errorf("%s %s: %d, want %d", tc.method, tc.path, code, tc.code)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	want := []string{"GET /entries/1 as " + identity, "GET /entries/1 as " + identity}
	if strings.Join(seen, "\n") != strings.Join(want, "\n") {
		t.Errorf("the upstream saw\n%s\nwant\n%s", strings.Join(seen, "\n"), strings.Join(want, "\n"))
	}
}
