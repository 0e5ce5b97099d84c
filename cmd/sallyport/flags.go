package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
)

// commandFlags is the flag set of an offline command: errors and --help go
// to stderr, the command's usage text before its flags.
func commandFlags(name, usage string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, usage)
		fs.PrintDefaults()
	}
	return fs
}

// parseExit is the exit code after a parse error: 0 for --help (the usage
// is printed), 2 for bad flags (the flag package printed why).
func parseExit(err error) int {
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	return 2
}

// usageFailer returns the function a command reports unusable input with:
// "sallyport <command>: <message>" on stderr, exit code 2.
func usageFailer(command string, stderr io.Writer) func(format string, a ...any) int {
	return func(format string, a ...any) int {
		fmt.Fprintf(stderr, command+": "+format+"\n", a...)
		return 2
	}
}
