package lint

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
)

// JSONVersion is the version of the JSON report. It changes only when a
// field is removed or changes meaning; new fields may appear without it.
const JSONVersion = 1

// WriteText writes one line per finding,
//
//	file:line: severity code: message (Kind namespace/name field)
//
// followed by its detail lines indented, and a summary line.
func WriteText(w io.Writer, fs []Finding) error {
	var b strings.Builder
	for _, f := range fs {
		loc := f.File
		if loc == "" {
			loc = "sallyport"
		}
		if f.Line > 0 {
			loc += fmt.Sprintf(":%d", f.Line)
		}
		fmt.Fprintf(&b, "%s: %s %s: %s", loc, f.Severity, f.Code, f.Message)
		var about []string
		if f.Kind != "" || f.Name != "" {
			obj := f.Kind
			if f.Name != "" {
				name := f.Name
				if f.Namespace != "" {
					name = f.Namespace + "/" + name
				}
				obj = strings.TrimSpace(obj + " " + name)
			}
			about = append(about, obj)
		}
		if f.Field != "" {
			about = append(about, f.Field)
		}
		if len(about) > 0 {
			fmt.Fprintf(&b, " (%s)", strings.Join(about, " "))
		}
		b.WriteByte('\n')
		if f.Detail != "" {
			for l := range strings.SplitSeq(f.Detail, "\n") {
				b.WriteString("    " + l + "\n")
			}
		}
	}
	b.WriteString(summary(fs) + "\n")
	_, err := io.WriteString(w, b.String())
	return err
}

// summary counts the findings: "2 errors, 1 warning, 0 info" or "no
// findings".
func summary(fs []Finding) string {
	if len(fs) == 0 {
		return "no findings"
	}
	n := Count(fs)
	plural := func(k int, word string) string {
		if k == 1 {
			return fmt.Sprintf("%d %s", k, word)
		}
		return fmt.Sprintf("%d %ss", k, word)
	}
	return fmt.Sprintf("%s, %s, %d info", plural(n[Error], "error"), plural(n[Warning], "warning"), n[Info])
}

// jsonReport is the JSON report; docs/lint.md documents it.
type jsonReport struct {
	Version  int           `json:"version"`
	Findings []jsonFinding `json:"findings"`
	Summary  jsonSummary   `json:"summary"`
}

type jsonFinding struct {
	Code      Code     `json:"code"`
	Check     string   `json:"check"`
	Severity  Severity `json:"severity"`
	File      string   `json:"file"`
	Line      int      `json:"line"`
	Document  int      `json:"document,omitempty"`
	Item      int      `json:"item,omitempty"`
	Kind      string   `json:"kind,omitempty"`
	Namespace string   `json:"namespace,omitempty"`
	Name      string   `json:"name,omitempty"`
	Field     string   `json:"field,omitempty"`
	Message   string   `json:"message"`
	Detail    string   `json:"detail,omitempty"`
}

type jsonSummary struct {
	Errors   int `json:"errors"`
	Warnings int `json:"warnings"`
	Info     int `json:"info"`
}

// WriteJSON writes the findings as one JSON object (see docs/lint.md).
func WriteJSON(w io.Writer, fs []Finding) error {
	r := jsonReport{Version: JSONVersion, Findings: make([]jsonFinding, 0, len(fs))}
	for _, f := range fs {
		// A conversion: jsonFinding has Finding's fields, with tags.
		r.Findings = append(r.Findings, jsonFinding(f))
	}
	n := Count(fs)
	r.Summary = jsonSummary{Errors: n[Error], Warnings: n[Warning], Info: n[Info]}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(r); err != nil {
		return fmt.Errorf("writing the JSON report: %w", err)
	}
	return nil
}
