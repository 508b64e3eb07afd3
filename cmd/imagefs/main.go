// Command imagefs serves a catalog of VHD virtual machine images as a FUSE
// filesystem. See README.md for the operator workflow.
//
// Usage:
//
//	imagefs mount [flags] STORE MOUNTPOINT
//	imagefs inspect [--json] FILE...
//	imagefs fsck [flags] STORE
//	imagefs umount [--timeout D] MOUNTPOINT
//	imagefs restore [--name NAME] BACKUP_DIR... MOUNTPOINT
//	imagefs version
//	imagefs STORE MOUNTPOINT [-o OPTIONS]   (mount helper: mount(8), fstab)
package main

import (
	"fmt"
	"io"
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

const helpTop = `Usage: imagefs COMMAND [ARGS]
       imagefs STORE MOUNTPOINT [-o OPTIONS] [-f]

Serve a catalog of virtual machine images (VHD or raw) as a FUSE
filesystem: one directory per image under images/ and by-id/, the data as
image.vhd (image.raw for a raw image), the properties as files and user.*
extended attributes.

Commands:
`

const helpHelper = `
The second form is the mount helper. mount(8) and /etc/fstab mount a
filesystem of type fuse.imagefs through mount.fuse3 (package fuse3), which
runs 'imagefs STORE MOUNTPOINT -o OPTIONS' through /bin/sh. mount(8) clears
PATH for its helpers, so install imagefs in the shell's default path
(/usr/local/sbin, /usr/local/bin, /usr/sbin, /usr/bin, /sbin or /bin). It
mounts as 'imagefs mount -o OPTIONS STORE MOUNTPOINT' does, then goes to the
background once the mount is ready and exits 0; if the mount fails it exits
1 with the reason. -f or -o foreground keeps it in the foreground. Without
log_file=, the background daemon logs to the systemd journal when started
by systemd, else to syslog.

`

const helpTail = `
Options:
  -h, --help     show this help and exit
      --version  print version and build information and exit

Examples:
  imagefs mount /var/lib/imagefs /mnt/images            # foreground
  mount -t fuse.imagefs -o allow_other /var/lib/imagefs /mnt/images
  umount /mnt/images
  imagefs umount /mnt/images && imagefs fsck /var/lib/imagefs   # waits for the daemon
  # /etc/fstab:
  /var/lib/imagefs  /mnt/images  fuse.imagefs  allow_other,nofail  0  0

Exit status:
  0  success
  1  failure (the mount failed; a command's own meaning, see its --help)
  2  usage error

Run 'imagefs COMMAND --help' for a command's options.
`

func usage(w io.Writer) {
	fmt.Fprint(w, helpTop)
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-10s %s\n", n, commands[n].summary)
	}
	fmt.Fprint(w, helpHelper)
	fmt.Fprint(w, optionsHelp)
	fmt.Fprint(w, "\n"+sharedHelp)
	fmt.Fprint(w, helpTail)
}

func main() {
	if len(os.Args) < 2 {
		usage(os.Stderr)
		os.Exit(2)
	}
	name := os.Args[1]
	switch name {
	case "-h", "--help", "help":
		usage(os.Stdout)
		os.Exit(0)
	case "--version":
		name = "version"
	}
	c, ok := commands[name]
	if !ok {
		// imagefs STORE MOUNTPOINT [-o OPTIONS]: mount.fuse3 runs this.
		if h, ok := parseHelperArgs(os.Args[1:]); ok {
			os.Exit(runHelper(h))
		}
		fmt.Fprintf(os.Stderr, "imagefs: unknown command %q\nTry 'imagefs --help'.\n", name)
		os.Exit(2)
	}
	os.Exit(c.run(os.Args[2:]))
}
