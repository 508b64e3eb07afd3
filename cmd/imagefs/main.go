// Command imagefs serves a catalog of VHD virtual machine images as a FUSE
// filesystem. See README.md for the operator workflow.
//
// Usage:
//
//	imagefs mount [flags] STORE MOUNTPOINT
//	imagefs inspect [--json] FILE...
//	imagefs version
package main

import (
	"fmt"
	"os"
	"sort"
)

// command is one imagefs subcommand. run receives the arguments after the
// subcommand name and returns the process exit status.
type command struct {
	summary string
	run     func(args []string) int
}

var commands = map[string]command{}

// register adds a subcommand; each subcommand's file calls it from init.
func register(name, summary string, run func(args []string) int) {
	commands[name] = command{summary: summary, run: run}
}

func usage() {
	fmt.Fprintf(os.Stderr, "Usage: imagefs COMMAND [ARGS]\n\nServe a catalog of VHD virtual machine images as a FUSE filesystem.\n\nCommands:\n")
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(os.Stderr, "  %-10s %s\n", n, commands[n].summary)
	}
	fmt.Fprintf(os.Stderr, "\nRun 'imagefs COMMAND --help' for a command's options.\n")
}

func main() {
	if len(os.Args) < 2 {
		usage()
		os.Exit(2)
	}
	name := os.Args[1]
	switch name {
	case "-h", "--help", "help":
		usage()
		os.Exit(0)
	case "--version":
		name = "version"
	}
	c, ok := commands[name]
	if !ok {
		fmt.Fprintf(os.Stderr, "imagefs: unknown command %q\n", name)
		usage()
		os.Exit(2)
	}
	os.Exit(c.run(os.Args[2:]))
}
