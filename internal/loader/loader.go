// Package loader reads sallyport policies from files and directories, for
// the CLI and for tests that run without a cluster, and gives them the same
// treatment the cluster does:
//
//   - the API server's: unknown fields refused (as `kubectl apply
//     --validate=strict` does), defaults applied, metadata, OpenAPI schema,
//     list types and x-kubernetes-validations (CEL) rules checked — all from
//     the CRDs in config/crd/bases, embedded, with the apiextensions-apiserver
//     code the API server runs;
//   - the admission webhook's and the snapshot's: compilation with
//     internal/policy.Compiler, and the compiler's warnings;
//   - the decision engine's: a store.Snapshot built by store.Builder.
//
// Accepted documents: policy.sallyport.dev/v1alpha1 ConnectionPolicy and
// ResourcePolicy; v1 Namespace (only its name and labels are kept, for
// namespaceSelector matching); and v1 List, ConnectionPolicyList or
// ResourcePolicyList whose items are those. Any other kind is an error, so a
// typo in apiVersion or kind never silently drops a policy.
//
// Offline there is no default namespace: every policy needs
// metadata.namespace. There are no creation timestamps either, and
// conflicts (audiences, hosts) are resolved oldest first; a policy without
// metadata.creationTimestamp gets ClockBase plus one second per policy in
// load order (argument order, directories walked in lexical order,
// documents and List items in file order), so the first loaded is the
// oldest. A timestamp set in the file (as in `kubectl get -o yaml` output)
// is kept.
//
// The line of every field is kept too (Set.FieldLine, Problem.FieldLine),
// so that a problem, or a lint finding, about spec.rules[2].when points at
// that rule and not only at its document.
package loader

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	utiljson "k8s.io/apimachinery/pkg/util/json"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"sigs.k8s.io/yaml"

	"github.com/sallyport/sallyport/api/v1alpha1"
	"github.com/sallyport/sallyport/internal/policy"
	"github.com/sallyport/sallyport/internal/store"
)

const (
	kindConnection = "ConnectionPolicy"
	kindResource   = "ResourcePolicy"
	kindNamespace  = "Namespace"
	kindList       = "List"

	// namespaceNameLabel is the label the API server puts on every
	// namespace.
	namespaceNameLabel = "kubernetes.io/metadata.name"
)

// ClockBase is the creation time of the first loaded policy that carries no
// creationTimestamp; each further one is a second younger.
var ClockBase = time.Date(2000, time.January, 1, 0, 0, 0, 0, time.UTC)

// Options configure a Loader.
type Options struct {
	// Compiler compiles the policies; nil means
	// policy.NewCompiler(policy.CompilerOptions{}), as in the cluster by
	// default.
	Compiler *policy.Compiler
}

// Loader loads policy files. It is safe for concurrent use.
type Loader struct {
	compiler *policy.Compiler
	schemas  map[schema.GroupVersionKind]*crdSchema
}

// New returns a loader with the embedded CRD schemas prepared.
func New(o Options) (*Loader, error) {
	if o.Compiler == nil {
		o.Compiler = policy.NewCompiler(policy.CompilerOptions{})
	}
	s, err := loadSchemas()
	if err != nil {
		return nil, fmt.Errorf("loader: %w", err)
	}
	return &Loader{compiler: o.Compiler, schemas: s}, nil
}

// Load loads paths with a default loader; see Loader.Load.
func Load(paths ...string) (*Set, error) {
	l, err := New(Options{})
	if err != nil {
		return nil, err
	}
	return l.Load(context.Background(), paths...)
}

// Set is what was loaded.
type Set struct {
	// ConnectionPolicies and ResourcePolicies are the valid policies, in
	// load order, with the API server's defaults applied. A policy that
	// fails to compile is listed here but not in the compiled maps.
	ConnectionPolicies []*v1alpha1.ConnectionPolicy
	ResourcePolicies   []*v1alpha1.ResourcePolicy
	// Namespaces maps each namespace to its labels: those declared by
	// Namespace documents, and, for every other namespace a policy lives
	// in, only kubernetes.io/metadata.name (the label the API server sets).
	Namespaces map[string]map[string]string
	// Connections and Resources are the compiled policies.
	Connections map[types.NamespacedName]*policy.Connection
	Resources   map[types.NamespacedName]*policy.Resource
	// Sources says where each policy was read.
	Sources map[store.Ref]Location
	// NamespaceSources says where each Namespace document was read; a
	// namespace missing here is known only by name, so its labels in a
	// cluster are unknown.
	NamespaceSources map[string]Location
	// Skipped are the documents of other APIs that sit beside policies in a
	// GitOps repository (a Deployment, a ServiceAccount, a kustomization
	// file, a policy test suite): read, recognised as not meant for
	// sallyport, and left out without an error. A document of sallyport's
	// API group or of a policy kind with a wrong version is not skipped but
	// refused, so a typo never silently drops a policy.
	Skipped []Problem
	// Warnings are the warnings the admission webhook would return.
	Warnings []Problem
	// Builder holds every compiled policy and namespace; Snapshot is its
	// build, for the decision engine. Conflicts are resolved in it as in
	// the cluster (see Snapshot.Status).
	Builder  *store.Builder
	Snapshot *store.Snapshot

	// positions holds the field lines of every policy in Sources.
	positions map[store.Ref]*positions
}

// FieldLine returns the line of the file in Sources[ref] that the field at
// path (as the API server writes it: spec.rules[2].when) is written on. A
// field that is not written (a default) is placed at its closest written
// ancestor, and an empty path at the start of the document. Zero when ref
// was not loaded.
func (s *Set) FieldLine(ref store.Ref, path string) int {
	return s.positions[ref].line(path)
}

// ExpressionLine returns the line of the file in Sources[ref] that line n
// (1-based, as a CEL error reports it) of the expression at path is written
// on. It is exact for block literals (`when: |`) and one-line expressions;
// for other multi-line styles, whose line breaks YAML rewrites, it is the
// line the expression starts on.
func (s *Set) ExpressionLine(ref store.Ref, path string, n int) int {
	return s.positions[ref].exprLine(path, n)
}

// loadState is one Load call in progress.
type loadState struct {
	l        *Loader
	ctx      context.Context
	set      *Set
	problems []Problem
	seen     map[string]bool // files already read
	clock    int
}

// Load reads every path: a file whatever its extension, a directory
// recursively (*.yaml, *.yml and *.json; hidden files and directories, such
// as .git, are skipped). Files ending in .json hold one JSON object; others
// hold YAML documents separated by `---`.
//
// Every problem is collected; the error, if any, is a *LoadError listing
// them all. The Set is returned even then, holding what was valid, so a
// linter can go on.
func (l *Loader) Load(ctx context.Context, paths ...string) (*Set, error) {
	st := &loadState{
		l:   l,
		ctx: ctx,
		set: &Set{
			Namespaces:  map[string]map[string]string{},
			Connections: map[types.NamespacedName]*policy.Connection{},
			Resources:   map[types.NamespacedName]*policy.Resource{},
			Sources:     map[store.Ref]Location{},
			Builder:     store.NewBuilder(l.compiler),

			NamespaceSources: map[string]Location{},
			positions:        map[store.Ref]*positions{},
		},
		seen: map[string]bool{},
	}
	if len(paths) == 0 {
		st.problems = append(st.problems, Problem{Type: ProblemFile, Message: "no files or directories given"})
	}
	for _, p := range paths {
		st.walk(p)
	}
	st.finish()
	if len(st.problems) > 0 {
		return st.set, &LoadError{Problems: st.problems}
	}
	return st.set, nil
}

func (st *loadState) fileProblem(file string, typ ProblemType, err error) {
	st.problems = append(st.problems, Problem{Location: Location{File: file}, Type: typ, Message: err.Error()})
}

func (st *loadState) walk(root string) {
	info, err := os.Stat(root)
	if err != nil {
		st.fileProblem(root, ProblemFile, err)
		return
	}
	if !info.IsDir() {
		st.readFile(root)
		return
	}
	found := false
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			st.fileProblem(p, ProblemFile, err)
			return nil
		}
		if p != root && strings.HasPrefix(d.Name(), ".") {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if d.IsDir() {
			return nil
		}
		switch strings.ToLower(filepath.Ext(p)) {
		case ".yaml", ".yml", ".json":
			found = true
			st.readFile(p)
		}
		return nil
	})
	if err != nil {
		st.fileProblem(root, ProblemFile, err)
	}
	if !found {
		st.fileProblem(root, ProblemFile, errors.New("no *.yaml, *.yml or *.json files in this directory"))
	}
}

// document is one document of a file, before decoding.
type document struct {
	loc  Location
	data []byte
	// start is the line of the file that data's first line is.
	start int
}

func (st *loadState) readFile(file string) {
	key := file
	if abs, err := filepath.Abs(file); err == nil {
		key = abs
	}
	if st.seen[key] {
		return
	}
	st.seen[key] = true
	raw, err := os.ReadFile(file)
	if err != nil {
		st.fileProblem(file, ProblemFile, err)
		return
	}
	var docs []document
	if strings.EqualFold(filepath.Ext(file), ".json") {
		docs = []document{{loc: Location{File: file, Document: 1, Line: 1}, data: raw, start: 1}}
	} else {
		docs, err = splitYAML(file, raw)
		if err != nil {
			st.fileProblem(file, ProblemSyntax, err)
			return
		}
	}
	for _, d := range docs {
		st.readDocument(d)
	}
}

// splitYAML splits a YAML stream at `---` lines, the separator rule of
// k8s.io/apimachinery/pkg/util/yaml.YAMLReader (only a comment may follow
// it), keeping the line each document starts at. Documents holding only
// comments and blank lines are dropped and not counted.
func splitYAML(file string, raw []byte) ([]document, error) {
	var (
		docs    []document
		buf     bytes.Buffer
		start   int // first content line of buf, 0 while none
		first   = 1 // the line buf starts at
		lineNum int
	)
	flush := func() {
		if start > 0 {
			docs = append(docs, document{loc: Location{File: file, Document: len(docs) + 1, Line: start}, data: bytes.Clone(buf.Bytes()), start: first})
		}
		buf.Reset()
		start = 0
		first = lineNum + 1
	}
	for line := range bytes.Lines(raw) {
		lineNum++
		if rest, ok := bytes.CutPrefix(line, []byte("---")); ok {
			trimmed := bytes.TrimSpace(rest)
			if len(trimmed) > 0 && trimmed[0] != '#' {
				return nil, fmt.Errorf("line %d: invalid YAML document separator: %s", lineNum, trimmed)
			}
			flush()
			continue
		}
		if t := bytes.TrimSpace(line); start == 0 && len(t) > 0 && t[0] != '#' {
			start = lineNum
		}
		buf.Write(line)
	}
	flush()
	return docs, nil
}

func (st *loadState) readDocument(d document) {
	js, err := yaml.YAMLToJSONStrict(d.data)
	if err != nil {
		msg, line := fileLines(err.Error(), d.start-1)
		st.problems = append(st.problems, Problem{Location: d.loc, Type: ProblemSyntax, FieldLine: line, Message: "invalid YAML or JSON: " + msg})
		return
	}
	var v any
	if err := utiljson.Unmarshal(js, &v); err != nil {
		st.problems = append(st.problems, Problem{Location: d.loc, Type: ProblemSyntax, Message: fmt.Sprintf("invalid YAML or JSON: %v", err)})
		return
	}
	if v == nil {
		return // an empty document
	}
	obj, ok := v.(map[string]any)
	if !ok {
		st.problems = append(st.problems, Problem{Location: d.loc, Type: ProblemSyntax, Message: fmt.Sprintf("a document must be an object, not %T", v)})
		return
	}
	pos := &positions{node: parseNode(d.data), offset: d.start - 1, docLine: d.loc.Line}
	apiVersion, _ := obj["apiVersion"].(string)
	kind, _ := obj["kind"].(string)
	if isList(apiVersion, kind) {
		items, ok := obj["items"].([]any)
		if _, present := obj["items"]; present && !ok {
			st.problems = append(st.problems, Problem{Location: d.loc, Type: ProblemSyntax, Kind: kind, Field: "items", FieldLine: pos.line("items"), Message: "must be a list"})
			return
		}
		for i, it := range items {
			loc := d.loc
			loc.Item = i + 1
			item, ok := it.(map[string]any)
			if !ok {
				st.problems = append(st.problems, Problem{Location: loc, Type: ProblemSyntax, FieldLine: pos.item(i).docLine, Message: fmt.Sprintf("a list item must be an object, not %T", it)})
				continue
			}
			st.readObject(loc, item, pos.item(i))
		}
		return
	}
	st.readObject(d.loc, obj, pos)
}

// yamlLine finds the line numbers the YAML parser gives, which count from
// the start of the document.
var yamlLine = regexp.MustCompile(`\bline (\d+)\b`)

// fileLines rewrites the line numbers in a parser's message to lines of
// the file (offset is the file line before the document's first), and
// returns the first of them, or 0.
func fileLines(msg string, offset int) (string, int) {
	first := 0
	msg = yamlLine.ReplaceAllStringFunc(msg, func(m string) string {
		n, err := strconv.Atoi(yamlLine.FindStringSubmatch(m)[1])
		if err != nil {
			return m
		}
		if first == 0 {
			first = n + offset
		}
		return fmt.Sprintf("line %d", n+offset)
	})
	return msg, first
}

func isList(apiVersion, kind string) bool {
	switch {
	case apiVersion == "v1" && kind == kindList:
		return true
	case apiVersion == v1alpha1.GroupVersion.String() && (kind == kindConnection+"List" || kind == kindResource+"List"):
		return true
	}
	return false
}

// policyKinds are the kinds the loader reads; a document of one of them
// that the loader cannot read has a wrong apiVersion, which is an error.
var policyKinds = map[string]bool{
	kindConnection: true, kindResource: true, kindConnection + "List": true, kindResource + "List": true,
	kindNamespace: true, kindList: true,
}

// otherAPI tells a document of another API that sits beside the policies
// (a Deployment; a kustomization.yaml, which has neither apiVersion nor
// kind) from one meant for sallyport with a mistake in it (a wrong version
// or a typo in the group or kind of a policy), which must be refused.
func otherAPI(file, apiVersion, kind string) bool {
	if apiVersion == "" && kind == "" {
		base := strings.ToLower(filepath.Base(file))
		return base == "kustomization.yaml" || base == "kustomization.yml"
	}
	if apiVersion == "" || kind == "" || policyKinds[kind] {
		return false
	}
	group, _, _ := strings.Cut(apiVersion, "/")
	if !strings.Contains(apiVersion, "/") {
		group = "" // the core group: v1
	}
	return group != v1alpha1.GroupVersion.Group
}

// readObject admits, converts and compiles one object.
func (st *loadState) readObject(loc Location, obj map[string]any, pos *positions) {
	apiVersion, _ := obj["apiVersion"].(string)
	kind, _ := obj["kind"].(string)
	md, _ := obj["metadata"].(map[string]any)
	name, _ := md["name"].(string)
	namespace, _ := md["namespace"].(string)
	problem := func(typ ProblemType, fld, msg string) {
		st.problems = append(st.problems, Problem{Location: loc, Type: typ, APIVersion: apiVersion, Kind: kind, Namespace: namespace, Name: name,
			Field: fld, FieldLine: pos.line(fld), Message: msg})
	}
	if otherAPI(loc.File, apiVersion, kind) {
		what := fmt.Sprintf("%s %s is not a sallyport policy; skipped", apiVersion, kind)
		if kind == "" {
			what = "a kustomization file, not a policy; skipped"
		}
		st.set.Skipped = append(st.set.Skipped, Problem{Location: loc, Type: ProblemKind, APIVersion: apiVersion, Kind: kind,
			Namespace: namespace, Name: name, Message: what})
		return
	}
	switch {
	case apiVersion == "" || kind == "":
		problem(ProblemKind, "", "apiVersion and kind are required")
		return
	case apiVersion == "v1" && kind == kindNamespace:
		st.readNamespace(loc, md, problem)
		return
	}
	s, ok := st.l.schemas[schema.FromAPIVersionAndKind(apiVersion, kind)]
	if !ok || (kind != kindConnection && kind != kindResource) {
		problem(ProblemKind, "", fmt.Sprintf("%s %s is not supported: expected %s ConnectionPolicy or ResourcePolicy, v1 Namespace, or a List of them", apiVersion, kind, v1alpha1.GroupVersion))
		return
	}
	if name == "" {
		problem(ProblemSchema, "metadata.name", "Required value")
	}
	if namespace == "" {
		problem(ProblemSchema, "metadata.namespace", "Required value: there is no default namespace offline; set the namespace the policy is applied to")
	}
	if name == "" || namespace == "" {
		return
	}
	if unknown, errs := s.admit(st.ctx, obj); len(unknown)+len(errs) > 0 {
		for _, u := range unknown {
			problem(ProblemUnknownField, u, "unknown field")
		}
		for _, fe := range errs {
			problem(ProblemSchema, fe.Field, fe.ErrorBody())
		}
		return
	}
	ref := store.Ref{NamespacedName: types.NamespacedName{Namespace: namespace, Name: name}}
	switch kind {
	case kindConnection:
		ref.Kind = store.KindConnection
	case kindResource:
		ref.Kind = store.KindResource
	}
	if prev, dup := st.set.Sources[ref]; dup {
		problem(ProblemDuplicate, "", fmt.Sprintf("defined twice: also at %s", prev))
		return
	}

	var o interface {
		metav1.Object
		runtime.Object
	}
	switch kind {
	case kindConnection:
		o = &v1alpha1.ConnectionPolicy{}
	default:
		o = &v1alpha1.ResourcePolicy{}
	}
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(obj, o); err != nil {
		problem(ProblemSchema, "", fmt.Sprintf("converting to %s: %v", kind, err))
		return
	}
	st.clock++
	if ts := o.GetCreationTimestamp(); ts.IsZero() {
		o.SetCreationTimestamp(metav1.NewTime(ClockBase.Add(time.Duration(st.clock-1) * time.Second)))
	}
	if o.GetUID() == "" {
		o.SetUID(types.UID(fmt.Sprintf("offline-%d", st.clock)))
	}
	if o.GetGeneration() == 0 {
		o.SetGeneration(1)
	}
	st.set.Sources[ref] = loc
	st.set.positions[ref] = pos

	var (
		warnings []string
		err      error
	)
	switch cp := o.(type) {
	case *v1alpha1.ConnectionPolicy:
		st.set.ConnectionPolicies = append(st.set.ConnectionPolicies, cp)
		var c *policy.Connection
		if c, err = st.l.compiler.CompileConnection(cp); err == nil {
			st.set.Connections[ref.NamespacedName] = c
			err = st.set.Builder.UpsertConnection(cp)
		}
		warnings = policy.ConnectionWarnings(cp)
	case *v1alpha1.ResourcePolicy:
		st.set.ResourcePolicies = append(st.set.ResourcePolicies, cp)
		var r *policy.Resource
		if r, err = st.l.compiler.CompileResource(cp); err == nil {
			st.set.Resources[ref.NamespacedName] = r
			err = st.set.Builder.UpsertResource(cp)
		}
		warnings = policy.ResourceWarnings(cp)
	}
	if err != nil {
		if ie, ok := errors.AsType[*policy.InvalidError](err); ok {
			for _, fe := range ie.Errs {
				problem(ProblemCompile, fe.Field, fe.ErrorBody())
			}
		} else {
			problem(ProblemCompile, "", fmt.Sprintf("compiling: %v", err))
		}
		return
	}
	for _, w := range warnings {
		fld, msg := "", w
		// Warnings start with their field ("spec.x: …", "spec.x (…): …");
		// split it off.
		if strings.HasPrefix(w, "spec.") {
			if i := strings.IndexAny(w, " :"); i > 0 {
				fld, msg = w[:i], strings.TrimPrefix(strings.TrimPrefix(w[i:], ":"), " ")
			}
		}
		st.set.Warnings = append(st.set.Warnings, Problem{Location: loc, Type: ProblemWarning, Kind: kind, Namespace: namespace, Name: name,
			Field: fld, FieldLine: pos.line(fld), Message: msg})
	}
}

// readNamespace keeps a Namespace's name and labels.
func (st *loadState) readNamespace(loc Location, md map[string]any, problem func(typ ProblemType, fld, msg string)) {
	name, _ := md["name"].(string)
	if name == "" {
		problem(ProblemSchema, "metadata.name", "Required value")
		return
	}
	if errs := validation.IsDNS1123Label(name); len(errs) > 0 {
		problem(ProblemSchema, "metadata.name", fmt.Sprintf("Invalid value: %q: %s", name, strings.Join(errs, "; ")))
		return
	}
	lbls := map[string]string{}
	if raw, ok := md["labels"]; ok {
		m, ok := raw.(map[string]any)
		if !ok {
			problem(ProblemSchema, "metadata.labels", "must be a map of strings")
			return
		}
		for k, v := range m {
			s, ok := v.(string)
			if !ok {
				problem(ProblemSchema, "metadata.labels["+k+"]", "must be a string")
				return
			}
			lbls[k] = s
		}
	}
	if errs := validateLabels(lbls); len(errs) > 0 {
		for _, fe := range errs {
			problem(ProblemSchema, fe.Field, fe.ErrorBody())
		}
		return
	}
	if prev, dup := st.set.NamespaceSources[name]; dup {
		problem(ProblemDuplicate, "", fmt.Sprintf("defined twice: also at %s", prev))
		return
	}
	st.set.NamespaceSources[name] = loc
	lbls[namespaceNameLabel] = name
	st.set.Namespaces[name] = lbls
}

func validateLabels(l map[string]string) field.ErrorList {
	var errs field.ErrorList
	p := field.NewPath("metadata", "labels")
	for k, v := range l {
		for _, msg := range validation.IsQualifiedName(k) {
			errs = append(errs, field.Invalid(p, k, msg))
		}
		for _, msg := range validation.IsValidLabelValue(v) {
			errs = append(errs, field.Invalid(p.Key(k), v, msg))
		}
	}
	return errs
}

// finish adds the namespaces policies live in and builds the snapshot.
func (st *loadState) finish() {
	for ref := range st.set.Sources {
		if _, ok := st.set.Namespaces[ref.Namespace]; !ok {
			st.set.Namespaces[ref.Namespace] = map[string]string{namespaceNameLabel: ref.Namespace}
		}
	}
	for ns, l := range st.set.Namespaces {
		st.set.Builder.SetNamespace(ns, maps.Clone(l), false)
	}
	st.set.Snapshot = st.set.Builder.Build()
}
