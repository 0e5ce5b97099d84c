package usage

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"regexp"
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
	// ArchiveName is the archive ConfigMap's name.
	ArchiveName = "sallyport-usage-archive"
	// reportPrefix starts every replica report's name.
	reportPrefix = "sallyport-usage-"
	// dataKey holds the gzip-compressed JSON report.
	dataKey = "usage.json.gz"
	// maxReportBytes keeps a report clear of the API server's 1 MiB object
	// limit, with room for the object's metadata.
	maxReportBytes = 1000 * 1024
)

// ReportName is the name of the report ConfigMap of a replica.
func ReportName(replica string) string {
	return reportPrefix + sanitize(replica)
}

var notDNS = regexp.MustCompile(`[^a-z0-9-]+`)

// sanitize turns a replica name (a pod or host name) into a DNS label part
// that fits a ConfigMap name.
func sanitize(s string) string {
	s = strings.Trim(notDNS.ReplaceAllString(strings.ToLower(s), "-"), "-")
	if limit := 253 - len(reportPrefix); len(s) > limit {
		s = strings.TrimRight(s[:limit], "-")
	}
	if s == "" {
		s = "replica"
	}
	return s
}

// encode writes r into cm's data.
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
	return r, nil
}
