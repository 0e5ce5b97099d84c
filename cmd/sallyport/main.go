// Command sallyport is the sallyport operator and its command-line tools.
package main

import (
	"fmt"
	"os"
)

// usage lists the subcommands; each has its own --help.
const usage = `sallyport: connection and resource policy for non-human identities on Kubernetes.

Usage:
  sallyport <command> [flags]

Commands:
  manager   Run the operator: compile policies, report their status, serve admission.
  test      Run policy test suites offline (for CI, before a merge).
  lint      Check policies offline for errors and risky grants.
  decide    Answer one decision request offline from policy files.
  report    List the grants never used (from decision logs or a cluster), with tightened policies.
  version   Print the build.

Run "sallyport <command> --help" for a command's flags.
`

func main() {
	os.Exit(run(os.Args[1:]))
}

// run dispatches to a subcommand and returns the process exit code.
func run(args []string) int {
	if len(args) == 0 {
		fmt.Fprint(os.Stderr, usage)
		return 2
	}
	switch args[0] {
	case "manager":
		return runManager(args[1:])
	case "test":
		return runTest(args[1:])
	case "lint":
		return runLint(args[1:])
	case "decide":
		return runDecide(args[1:])
	case "report":
		return runReport(args[1:])
	case "version":
		return runVersion(args[1:])
	case "help", "-h", "--help":
		fmt.Print(usage)
		return 0
	default:
		fmt.Fprintf(os.Stderr, "sallyport: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
}
