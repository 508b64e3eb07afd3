package main

import (
	"fmt"
	"runtime"
	"runtime/debug"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func init() {
	register("version", "print version and build information", func(args []string) int {
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
