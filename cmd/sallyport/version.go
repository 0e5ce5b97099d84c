package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"

	"github.com/sallyport/sallyport/internal/version"
)

func runVersion(args []string) int {
	fs := flag.NewFlagSet("sallyport version", flag.ContinueOnError)
	asJSON := fs.Bool("json", false, "print the build as JSON")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	info := version.Get()
	if *asJSON {
		if err := json.NewEncoder(os.Stdout).Encode(info); err != nil {
			fmt.Fprintf(os.Stderr, "sallyport version: %v\n", err)
			return 1
		}
		return 0
	}
	fmt.Println(info)
	return 0
}
