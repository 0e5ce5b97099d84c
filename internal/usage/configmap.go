package usage

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"io"
	"regexp"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
)

const (
	// LabelRole marks the ConfigMaps of usage: "replica" for a replica's
	// report, "archive" for the archive.
	LabelRole = "sallyport.dev/usage"
	// RoleReplica is LabelRole's value on a replica's report.
	RoleReplica = "replica"
	// RoleArchive is LabelRole's value on the archive.
	RoleArchive = "archive"
	// LabelShard holds the shard a report or archive ConfigMap is of.
	LabelShard = "sallyport.dev/usage-shard"
	// Shards is how many ConfigMaps a replica's report, and the archive,
	// are split into, by policy UID: each holds about an eighth of the
	// policies, which keeps it within the API server's object size limit
	// up to about 50,000 ten-rule policies (docs/benchmarks.md). A policy
	// is always in the same shard, so the shards never count it twice.
	Shards = 8
	// archivePrefix starts the archive shards' names.
	archivePrefix = "sallyport-usage-archive-"
	// reportPrefix starts every replica report's name.
	reportPrefix = "sallyport-usage-"
	// dataKey holds the gzip-compressed JSON report.
	dataKey = "usage.json.gz"
	// maxReportBytes keeps a report clear of the API server's 1 MiB object
	// limit, with room for the object's metadata.
	maxReportBytes = 1000 * 1024
)

// ReportName is the name of one shard of a replica's report.
func ReportName(replica string, shard int) string {
	return reportPrefix + sanitize(replica) + "-" + strconv.Itoa(shard)
}

// ArchiveName is the name of one shard of the archive.
func ArchiveName(shard int) string {
	return archivePrefix + strconv.Itoa(shard)
}

// shardOf is the shard a policy's counts are kept in.
func shardOf(uid types.UID) int {
	h := fnv.New32a()
	_, _ = h.Write([]byte(uid))
	return int(h.Sum32() % Shards)
}

// shardLabel reads the shard of a usage ConfigMap; false when it has none
// or an invalid one.
func shardLabel(cm *corev1.ConfigMap) (int, bool) {
	k, err := strconv.Atoi(cm.Labels[LabelShard])
	return k, err == nil && k >= 0 && k < Shards
}

var notDNS = regexp.MustCompile(`[^a-z0-9-]+`)

// sanitize turns a replica name (a pod or host name) into a DNS label part
// that fits a ConfigMap name.
func sanitize(s string) string {
	s = strings.Trim(notDNS.ReplaceAllString(strings.ToLower(s), "-"), "-")
	// Room for the shard suffix.
	if limit := 253 - len(reportPrefix) - 3; len(s) > limit {
		s = strings.TrimRight(s[:limit], "-")
	}
	switch s {
	case "":
		s = "replica"
	case "archive":
		// Its reports would be named like the archive.
		s = "replica-archive"
	}
	return s
}

// encode writes r into cm's data, as gzip-compressed JSON.
func encode(cm *corev1.ConfigMap, r *Report) error {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if err := json.NewEncoder(zw).Encode(r); err != nil {
		return fmt.Errorf("encode usage report: %w", err)
	}
	if err := zw.Close(); err != nil {
		return fmt.Errorf("compress usage report: %w", err)
	}
	if buf.Len() > maxReportBytes {
		return fmt.Errorf("usage report of %d policies is %d bytes compressed, over the %d a ConfigMap can hold", len(r.Policies), buf.Len(), maxReportBytes)
	}
	cm.Data = nil
	cm.BinaryData = map[string][]byte{dataKey: buf.Bytes()}
	return nil
}

// split divides r's policies into its shards, each a report with r's
// header.
func (r *Report) split() [Shards]*Report {
	var out [Shards]*Report
	for k := range out {
		out[k] = &Report{SchemaVersion: r.SchemaVersion, Replica: r.Replica, Pod: r.Pod, Written: r.Written, Policies: map[types.UID]*Policy{}}
	}
	for uid, p := range r.Policies {
		out[shardOf(uid)].Policies[uid] = p
	}
	return out
}

// decode reads the report in cm.
func decode(cm *corev1.ConfigMap) (*Report, error) {
	raw, ok := cm.BinaryData[dataKey]
	if !ok {
		return nil, fmt.Errorf("ConfigMap %s/%s has no binaryData %q", cm.Namespace, cm.Name, dataKey)
	}
	zr, err := gzip.NewReader(bytes.NewReader(raw))
	if err != nil {
		return nil, fmt.Errorf("ConfigMap %s/%s: %w", cm.Namespace, cm.Name, err)
	}
	// A bound on the expanded size: the archive and reports are written by
	// the operator, but a ConfigMap is not a trusted channel.
	dec := json.NewDecoder(io.LimitReader(zr, 64<<20))
	// Not newReport: its preset schema version would pass a report that
	// has none.
	r := &Report{}
	if err := dec.Decode(r); err != nil {
		return nil, fmt.Errorf("ConfigMap %s/%s: decode usage report: %w", cm.Namespace, cm.Name, err)
	}
	if r.SchemaVersion != SchemaVersion {
		return nil, fmt.Errorf("ConfigMap %s/%s: usage report schema version %d, want %d", cm.Namespace, cm.Name, r.SchemaVersion, SchemaVersion)
	}
	if r.Policies == nil {
		r.Policies = map[types.UID]*Policy{}
	}
	for uid, p := range r.Policies {
		if p == nil {
			return nil, fmt.Errorf("ConfigMap %s/%s: usage report: policy %q is null", cm.Namespace, cm.Name, uid)
		}
	}
	return r, nil
}
