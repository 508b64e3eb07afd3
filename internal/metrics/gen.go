//go:build ignore

// gen writes wrap_gen.go (package internal/wrapgen says how); go generate
// runs it in this directory.
package main

import (
	"log"
	"os"

	"github.com/imagefs/imagefs/internal/metrics/internal/wrapgen"
)

func main() {
	src, err := wrapgen.Generate(".")
	if err != nil {
		log.Fatal(err)
	}
	if err := os.WriteFile(wrapgen.File, src, 0o644); err != nil {
		log.Fatal(err)
	}
}
