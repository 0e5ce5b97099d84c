package main

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"k8s.io/client-go/rest"
)

// etcdDisk is what etcd's own metrics say about its disk: the WAL fsyncs
// and backend commits it made, and how many were slow. On a shared machine
// a slow disk stalls every write the API server makes (creates and status
// patches alike), and shows up here rather than in the operator.
type etcdDisk struct {
	Fsyncs, SlowFsyncs, StalledFsyncs    int64
	Commits, SlowCommits, StalledCommits int64
}

// The bucket bounds etcd's histograms have that "slow" and "stalled" use.
const (
	slowBound    = "0.128"
	stalledBound = "1.024"
)

// readEtcdDisk scrapes etcd's /metrics; the zero value when it cannot.
func readEtcdDisk(ctx context.Context, base string) (etcdDisk, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(base, "/")+"/metrics", nil)
	if err != nil {
		return etcdDisk{}, fmt.Errorf("etcd metrics: %w", err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return etcdDisk{}, fmt.Errorf("etcd metrics: %w", err)
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		return etcdDisk{}, fmt.Errorf("etcd metrics: status %d", resp.StatusCode)
	}
	var d etcdDisk
	var fsyncSlow, fsyncStalled, commitSlow, commitStalled int64
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		line := sc.Text()
		name, value, ok := strings.Cut(line, " ")
		if !ok || strings.HasPrefix(line, "#") {
			continue
		}
		n, err := strconv.ParseFloat(strings.TrimSpace(value), 64)
		if err != nil {
			continue
		}
		v := int64(n)
		switch name {
		case "etcd_disk_wal_fsync_duration_seconds_count":
			d.Fsyncs = v
		case `etcd_disk_wal_fsync_duration_seconds_bucket{le="` + slowBound + `"}`:
			fsyncSlow = v
		case `etcd_disk_wal_fsync_duration_seconds_bucket{le="` + stalledBound + `"}`:
			fsyncStalled = v
		case "etcd_disk_backend_commit_duration_seconds_count":
			d.Commits = v
		case `etcd_disk_backend_commit_duration_seconds_bucket{le="` + slowBound + `"}`:
			commitSlow = v
		case `etcd_disk_backend_commit_duration_seconds_bucket{le="` + stalledBound + `"}`:
			commitStalled = v
		}
	}
	if err := sc.Err(); err != nil {
		return etcdDisk{}, fmt.Errorf("etcd metrics: %w", err)
	}
	// Buckets are cumulative: what is not under a bound is over it.
	d.SlowFsyncs, d.StalledFsyncs = d.Fsyncs-fsyncSlow, d.Fsyncs-fsyncStalled
	d.SlowCommits, d.StalledCommits = d.Commits-commitSlow, d.Commits-commitStalled
	return d, nil
}

// since is the difference from an earlier reading.
func (d etcdDisk) since(before etcdDisk) etcdDisk {
	return etcdDisk{
		Fsyncs: d.Fsyncs - before.Fsyncs, SlowFsyncs: d.SlowFsyncs - before.SlowFsyncs, StalledFsyncs: d.StalledFsyncs - before.StalledFsyncs,
		Commits: d.Commits - before.Commits, SlowCommits: d.SlowCommits - before.SlowCommits, StalledCommits: d.StalledCommits - before.StalledCommits,
	}
}

// slowRequests counts the requests the API server itself took over a
// second to serve, by verb and resource, from its
// apiserver_request_duration_seconds histogram (every client's requests:
// the benchmark's and the operator's).
type slowRequests map[call]int64

// readSlowRequests scrapes the API server's /metrics through rc.
func readSlowRequests(ctx context.Context, rc rest.Interface) (slowRequests, error) {
	raw, err := rc.Get().AbsPath("/metrics").DoRaw(ctx)
	if err != nil {
		return nil, fmt.Errorf("API server metrics: %w", err)
	}
	under, total := map[call]int64{}, map[call]int64{}
	sc := bufio.NewScanner(bytes.NewReader(raw))
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	const prefix = "apiserver_request_duration_seconds_bucket{"
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, prefix) {
			continue
		}
		labels, value, ok := strings.Cut(strings.TrimPrefix(line, prefix), "} ")
		if !ok {
			continue
		}
		l := parseLabels(labels)
		if l["le"] != "1" && l["le"] != "+Inf" {
			continue
		}
		n, err := strconv.ParseFloat(value, 64)
		if err != nil {
			continue
		}
		res := l["resource"]
		if g := l["group"]; g != "" {
			res += "." + g
		}
		if sub := l["subresource"]; sub != "" {
			res += "/" + sub
		}
		k := call{Verb: strings.ToLower(l["verb"]), Resource: res}
		if l["le"] == "1" {
			under[k] += int64(n)
		} else {
			total[k] += int64(n)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("API server metrics: %w", err)
	}
	out := slowRequests{}
	for k, t := range total {
		if d := t - under[k]; d > 0 {
			out[k] = d
		}
	}
	return out, nil
}

// parseLabels parses a Prometheus label set (without braces); the values
// here hold no commas or escaped quotes.
func parseLabels(s string) map[string]string {
	out := map[string]string{}
	for kv := range strings.SplitSeq(s, ",") {
		k, v, ok := strings.Cut(kv, "=")
		if ok {
			out[k] = strings.Trim(v, `"`)
		}
	}
	return out
}

// since is the slow requests after before, most first.
func (s slowRequests) since(before slowRequests) []callCount {
	var out []callCount
	for k, v := range s {
		if d := v - before[k]; d > 0 {
			out = append(out, callCount{k, int(d)})
		}
	}
	slices.SortFunc(out, func(a, b callCount) int { return cmp.Or(cmp.Compare(b.N, a.N), cmp.Compare(a.Resource, b.Resource)) })
	return out
}
