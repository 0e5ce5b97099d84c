package policytest

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// Suffixes mark suite files in a directory, as Cerbos marks its test
// suites: a suite sits beside the policies it tests and is told apart by
// its name alone.
var Suffixes = []string{"_test.yaml", "_test.yml"}

// IsSuiteFile reports whether a file name follows the suite naming
// convention.
func IsSuiteFile(name string) bool {
	for _, suf := range Suffixes {
		if strings.HasSuffix(name, suf) {
			return true
		}
	}
	return false
}

// Find returns the suite files among paths: a file is a suite whatever its
// name; a directory is walked recursively for files named by Suffixes
// (hidden files and directories, such as .git, are skipped), in lexical
// order. A path that does not exist, or a directory without suites, is an
// error: a CI job that tests nothing must not pass.
func Find(paths ...string) ([]string, error) {
	var out []string
	var errs []error
	for _, root := range paths {
		info, err := os.Stat(root)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if !info.IsDir() {
			out = append(out, root)
			continue
		}
		found := 0
		err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if p != root && strings.HasPrefix(d.Name(), ".") {
				if d.IsDir() {
					return filepath.SkipDir
				}
				return nil
			}
			if !d.IsDir() && IsSuiteFile(d.Name()) {
				out = append(out, p)
				found++
			}
			return nil
		})
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("%s: %w", root, err))
		case found == 0:
			errs = append(errs, fmt.Errorf("%s: no suite files (*%s) in this directory", root, strings.Join(Suffixes, ", *")))
		}
	}
	return slices.Compact(out), errors.Join(errs...)
}
