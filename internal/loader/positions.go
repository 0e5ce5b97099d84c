package loader

import (
	"strconv"
	"strings"

	yaml "go.yaml.in/yaml/v3"
)

// positions knows the line each field of one loaded object is written on,
// so that a problem or a lint finding about spec.rules[2].when can point at
// that rule rather than at the start of its document.
type positions struct {
	// node is the object's mapping node; nil when the document could not
	// be parsed for positions (then every field is at docLine).
	node *yaml.Node
	// offset turns a line of the parsed buffer into a line of the file.
	offset int
	// docLine is the line the document (or List item) starts at.
	docLine int
}

// parseNode parses a document for positions. It is best effort: the
// document was already decoded strictly, and a document yaml.v3 reads
// differently only loses its field lines.
func parseNode(data []byte) *yaml.Node {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil || doc.Kind != yaml.DocumentNode || len(doc.Content) != 1 {
		return nil
	}
	return doc.Content[0]
}

// item returns the positions of the i-th (0-based) element of the List's
// items.
func (p *positions) item(i int) *positions {
	out := &positions{offset: p.offset, docLine: p.docLine}
	if items := mapValue(p.node, "items"); items != nil && items.Kind == yaml.SequenceNode && i < len(items.Content) {
		out.node = items.Content[i]
		out.docLine = p.offset + out.node.Line
	}
	return out
}

// line returns the file line of the field at path (a field path as the API
// server and the compiler write it: spec.rules[0].when,
// metadata.labels[app]). A field that is not written in the file (a
// default, say) is placed at its closest written ancestor; an empty path,
// or one whose first segment is not written, at the document's line.
func (p *positions) line(path string) int {
	if p == nil {
		return 0
	}
	key, _ := p.find(path)
	if key == nil {
		return p.docLine
	}
	return p.offset + key.Line
}

// exprLine returns the file line of line n (1-based) of the expression
// written at path. It is exact for block literals (`when: |`), whose lines
// are the expression's lines, and for one-line expressions; elsewhere
// (folded or multi-line quoted scalars, whose line breaks YAML rewrites) it
// is the line the value starts on.
func (p *positions) exprLine(path string, n int) int {
	if p == nil {
		return 0
	}
	key, val := p.find(path)
	switch {
	case key == nil:
		return p.docLine
	case val == nil || val.Kind != yaml.ScalarNode:
		return p.offset + key.Line
	case val.Style&yaml.LiteralStyle != 0 && n >= 1:
		// The indicator `|` is on val.Line; the content starts below it.
		return p.offset + val.Line + n
	case val.Style&yaml.FoldedStyle != 0:
		return p.offset + val.Line + 1
	}
	return p.offset + val.Line
}

// find walks path from the object's node. It returns the node that names
// the deepest segment found (a mapping key, or a sequence element) and,
// when the whole path was found, its value.
func (p *positions) find(path string) (key, val *yaml.Node) {
	cur := p.node
	if cur == nil {
		return nil, nil
	}
	segs := splitPath(path)
	for i, s := range segs {
		var k, v *yaml.Node
		switch cur.Kind {
		case yaml.MappingNode:
			k, v = mapEntry(cur, s)
		case yaml.SequenceNode:
			if n, err := strconv.Atoi(s); err == nil && n >= 0 && n < len(cur.Content) {
				k, v = cur.Content[n], cur.Content[n]
			}
		}
		if k == nil {
			return key, nil
		}
		key, cur = k, v
		if i == len(segs)-1 {
			val = v
		}
	}
	return key, val
}

// splitPath splits a field path into its segments: names, indexes and keys
// ("spec.rules[0].when" → spec, rules, 0, when; "metadata.labels[a.b/c]" →
// metadata, labels, a.b/c). Keys in brackets may contain dots.
func splitPath(path string) []string {
	var out []string
	for path != "" {
		switch path[0] {
		case '.':
			path = path[1:]
		case '[':
			end := strings.IndexByte(path, ']')
			if end < 0 {
				return append(out, path[1:])
			}
			out = append(out, path[1:end])
			path = path[end+1:]
		default:
			end := strings.IndexAny(path, ".[")
			if end < 0 {
				return append(out, path)
			}
			out = append(out, path[:end])
			path = path[end:]
		}
	}
	return out
}

// mapEntry returns the key and value nodes of a mapping's entry.
func mapEntry(m *yaml.Node, name string) (key, val *yaml.Node) {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == name {
			return m.Content[i], m.Content[i+1]
		}
	}
	return nil, nil
}

// mapValue returns the value of a mapping's entry; nil when m is not a
// mapping or lacks it.
func mapValue(m *yaml.Node, name string) *yaml.Node {
	if m == nil || m.Kind != yaml.MappingNode {
		return nil
	}
	_, v := mapEntry(m, name)
	return v
}
