package main

import (
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
)

const versionHelp = `Usage: imagefs version
       imagefs --version

Print the version of imagefs, the Go toolchain and platform it was built
with, the VCS revision and time of the build, and the versions of go-fuse
and Pebble.

Options:
  -h, --help   show this help and exit

Exit status:
  0  printed
  2  usage error
`

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func init() {
	register("version", "print version and build information", func(args []string) int {
		for _, a := range args {
			if a == "-h" || a == "--help" {
				fmt.Print(versionHelp)
				return 0
			}
		}
		if len(args) > 0 {
			fmt.Fprintf(os.Stderr, "imagefs version: takes no arguments\nTry 'imagefs version --help'.\n")
			return 2
		}
		fmt.Printf("imagefs %s\n", version)
		fmt.Printf("go: %s %s/%s\n", runtime.Version(), runtime.GOOS, runtime.GOARCH)
		if bi, ok := debug.ReadBuildInfo(); ok {
			for _, s := range bi.Settings {
				if s.Key == "vcs.revision" || s.Key == "vcs.time" || s.Key == "vcs.modified" {
					fmt.Printf("%s: %s\n", s.Key, s.Value)
				}
			}
			for _, d := range bi.Deps {
				if d.Path == "github.com/hanwen/go-fuse/v2" || d.Path == "github.com/cockroachdb/pebble/v2" {
					fmt.Printf("%s %s\n", d.Path, d.Version)
				}
			}
		}
		return 0
	})
}
