package decision

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/sallyport/sallyport/internal/expr"
)

// ErrMalformedPath is wrapped by every error CanonicalPath returns.
var ErrMalformedPath = errors.New("malformed object path")

// maxRawPathLength bounds the path part of a name before decoding: every
// byte of a canonical path may arrive percent-encoded, as three bytes.
const maxRawPathLength = 3 * expr.MaxObjectNameLength

// CanonicalPath returns the canonical form of an object path, the form
// resource patterns and `resource.name` see, or an error wrapping
// ErrMalformedPath that says why the path is refused.
//
// Canonicalisation, in order:
//
//   - The empty name is "/": a request that names no object acts on the
//     service as a whole (a gRPC check without a path, a decision API call
//     without resource.name).
//   - Any other name must start with "/" (origin form); absolute URIs, "*"
//     and relative paths are refused.
//   - The query ("?" and everything after it) is stripped. A "#" is kept as a
//     literal byte: it cannot appear unencoded in a request target, and
//     stripping it would judge a different path from the one an upstream
//     that keeps it serves.
//   - The path is percent-decoded exactly once, so "%252e" becomes the
//     literal segment "%2e", as it does for an upstream that decodes once.
//     A "%" not followed by two hex digits is refused.
//   - An encoded "/" (%2F, %2f) is refused: it would make the path's
//     segments differ between a gateway that decodes it and an upstream that
//     does not.
//   - Repeated "/" are merged. A trailing "/" is kept ("/a/" is not "/a").
//   - A "." or ".." segment is refused, and so is a segment that an upstream
//     could read as one: "..;x" (servlet path parameters) and "..\x" or
//     "x\.." (servers that treat "\" as a separator). Patterns never contain
//     dot segments, so an upstream that resolves them would serve an object
//     other than the one judged.
//   - The decoded path must be valid UTF-8 without control characters
//     (bytes below 0x20 and 0x7F, NUL included), and at most
//     expr.MaxObjectNameLength bytes long.
//
// A name that is already canonical is returned without allocating.
func CanonicalPath(name string) (string, error) {
	if name == "" {
		return "/", nil
	}
	if name[0] != '/' {
		return "", fmt.Errorf(`%w: must start with "/"`, ErrMalformedPath)
	}
	if q := strings.IndexByte(name, '?'); q >= 0 {
		name = name[:q]
	}
	if len(name) > maxRawPathLength {
		return "", fmt.Errorf("%w: %d bytes long before decoding, more than the %d allowed", ErrMalformedPath, len(name), maxRawPathLength)
	}

	path := name
	if strings.IndexByte(name, '%') >= 0 || strings.Contains(name, "//") {
		var err error
		if path, err = decodeMerge(name); err != nil {
			return "", err
		}
	}
	if err := checkCanonical(path); err != nil {
		return "", err
	}
	return path, nil
}

// decodeMerge percent-decodes name once and merges repeated "/". name
// starts with "/".
func decodeMerge(name string) (string, error) {
	b := make([]byte, 0, len(name))
	for i := 0; i < len(name); {
		c := name[i]
		if c == '%' {
			if i+2 >= len(name) {
				return "", fmt.Errorf("%w: incomplete percent-encoding at byte %d", ErrMalformedPath, i)
			}
			hi, ok1 := unhex(name[i+1])
			lo, ok2 := unhex(name[i+2])
			if !ok1 || !ok2 {
				return "", fmt.Errorf("%w: invalid percent-encoding %q at byte %d", ErrMalformedPath, name[i:i+3], i)
			}
			c = hi<<4 | lo
			if c == '/' {
				return "", fmt.Errorf("%w: encoded %q (%s) at byte %d", ErrMalformedPath, "/", name[i:i+3], i)
			}
			i += 3
		} else {
			i++
		}
		// Only a raw "/" can reach here as "/" (an encoded one is refused
		// above), so merging is over the path's real separators.
		if c == '/' && len(b) > 0 && b[len(b)-1] == '/' {
			continue
		}
		b = append(b, c)
	}
	return string(b), nil
}

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// checkCanonical checks a decoded, merged path: length, UTF-8, control
// characters and dot segments.
func checkCanonical(path string) error {
	if len(path) > expr.MaxObjectNameLength {
		return fmt.Errorf("%w: %d bytes long after decoding, more than the %d allowed", ErrMalformedPath, len(path), expr.MaxObjectNameLength)
	}
	ascii := true
	for i := 0; i < len(path); i++ {
		c := path[i]
		if c < 0x20 || c == 0x7f {
			return fmt.Errorf("%w: control character 0x%02x at byte %d", ErrMalformedPath, c, i)
		}
		if c >= utf8.RuneSelf {
			ascii = false
		}
	}
	if !ascii && !utf8.ValidString(path) {
		return fmt.Errorf("%w: not valid UTF-8 after decoding", ErrMalformedPath)
	}
	// Segments start after every "/"; path[0] is "/".
	for rest := path[1:]; ; {
		seg, tail, more := strings.Cut(rest, "/")
		if isDotSegment(seg) {
			return fmt.Errorf("%w: %q segment (dot segments are not resolved)", ErrMalformedPath, seg)
		}
		if !more {
			return nil
		}
		rest = tail
	}
}

// isDotSegment reports whether seg is "." or "..", or would be read as one
// by an upstream that ends a segment at ";" or splits segments at "\".
func isDotSegment(seg string) bool {
	if len(seg) == 0 || seg[0] != '.' && strings.IndexByte(seg, '\\') < 0 {
		// Fast path: a dot segment, under any reading, starts with "." or
		// contains "\".
		return false
	}
	for piece := range strings.SplitSeq(seg, `\`) {
		piece, _, _ = strings.Cut(piece, ";")
		if piece == "." || piece == ".." {
			return true
		}
	}
	return false
}
