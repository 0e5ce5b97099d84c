package policytest

import (
	"encoding/xml"
	"fmt"
	"io"
	"strings"
	"time"
)

// The JUnit XML schema CI systems read (GitLab, Jenkins, GitHub actions
// that publish test reports): testsuites, one testsuite per suite file,
// one testcase per case, a failure element for a failing case.
type (
	junitSuites struct {
		XMLName  xml.Name     `xml:"testsuites"`
		Name     string       `xml:"name,attr"`
		Tests    int          `xml:"tests,attr"`
		Failures int          `xml:"failures,attr"`
		Errors   int          `xml:"errors,attr"`
		Time     string       `xml:"time,attr"`
		Suites   []junitSuite `xml:"testsuite"`
	}
	junitSuite struct {
		Name      string      `xml:"name,attr"`
		Tests     int         `xml:"tests,attr"`
		Failures  int         `xml:"failures,attr"`
		Errors    int         `xml:"errors,attr"`
		Skipped   int         `xml:"skipped,attr"`
		Time      string      `xml:"time,attr"`
		Timestamp string      `xml:"timestamp,attr,omitempty"`
		File      string      `xml:"file,attr,omitempty"`
		Cases     []junitCase `xml:"testcase"`
	}
	junitCase struct {
		Name      string        `xml:"name,attr"`
		Classname string        `xml:"classname,attr"`
		Time      string        `xml:"time,attr"`
		File      string        `xml:"file,attr,omitempty"`
		Line      int           `xml:"line,attr,omitempty"`
		Failure   *junitFailure `xml:"failure,omitempty"`
	}
	junitFailure struct {
		Message string `xml:"message,attr"`
		Type    string `xml:"type,attr"`
		Text    string `xml:",chardata"`
	}
)

// WriteJUnit writes the results as JUnit XML. A failing case's failure
// message is its first mismatch; the text holds every mismatch and the
// actual answer of both gates.
func WriteJUnit(w io.Writer, results []*SuiteResult) error {
	out := junitSuites{Name: "sallyport test"}
	var total time.Duration
	for _, r := range results {
		p, f := r.Counts()
		js := junitSuite{
			Name: r.Suite.Name, Tests: p + f, Failures: f,
			Time: seconds(r.Duration), File: r.Suite.File,
			Skipped: len(r.Suite.Cases) - len(r.Cases),
		}
		for _, c := range r.Cases {
			jc := junitCase{
				Name: c.Case.Name, Classname: r.Suite.Name, Time: seconds(c.Duration),
				File: r.Suite.File, Line: c.Case.Line,
			}
			if !c.Passed() {
				var text strings.Builder
				for _, m := range c.Mismatches {
					fmt.Fprintf(&text, "%s\n", m)
				}
				writeDecision(&text, c.Decision, c.Trace)
				jc.Failure = &junitFailure{Message: c.Mismatches[0].String(), Type: "PolicyTestFailure", Text: text.String()}
			}
			js.Cases = append(js.Cases, jc)
		}
		out.Tests += js.Tests
		out.Failures += js.Failures
		total += r.Duration
		out.Suites = append(out.Suites, js)
	}
	out.Time = seconds(total)
	if _, err := io.WriteString(w, xml.Header); err != nil {
		return err
	}
	enc := xml.NewEncoder(w)
	enc.Indent("", "  ")
	if err := enc.Encode(out); err != nil {
		return fmt.Errorf("write JUnit XML: %w", err)
	}
	_, err := io.WriteString(w, "\n")
	return err
}

func seconds(d time.Duration) string { return fmt.Sprintf("%.3f", d.Seconds()) }
