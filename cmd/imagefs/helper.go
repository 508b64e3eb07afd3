package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
)

// The mount-helper form: mount(8) and /etc/fstab mount a filesystem of
// type fuse.imagefs through mount.fuse3, which runs
//
//	imagefs STORE MOUNTPOINT -o OPTIONS
//
// (through /bin/sh, with imagefs found on PATH). imagefs then mounts as
// imagefs mount -o OPTIONS would, but goes to the background once the
// mount is ready, as mount(8) expects of a helper: it starts itself again
// as a daemon (imagefs mount --ready-fd 3 ...) with a pipe as fd 3, and
// exits 0 when the daemon writes "ready" to it, or 1 with the daemon's
// error. -o foreground (or -f) serves in the foreground instead.

// helperArgs are the parsed arguments of the mount-helper form.
type helperArgs struct {
	positional []string
	opts       []string // -o lists
	foreground bool     // -f
	help       bool
}

// parseHelperArgs parses STORE MOUNTPOINT [-o OPTS]... [-f] in any order
// ("-oOPTS" too). It returns false when args are not that form.
func parseHelperArgs(args []string) (helperArgs, bool) {
	var h helperArgs
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "-o":
			if i+1 == len(args) {
				return h, false
			}
			i++
			h.opts = append(h.opts, args[i])
		case strings.HasPrefix(a, "-o"):
			h.opts = append(h.opts, a[2:])
		case a == "-f":
			h.foreground = true
		case a == "-h" || a == "--help":
			h.help = true
		case a == "--":
			h.positional = append(h.positional, args[i+1:]...)
			i = len(args)
		case strings.HasPrefix(a, "-"):
			return h, false
		default:
			h.positional = append(h.positional, a)
		}
	}
	return h, len(h.positional) == 2 || h.help
}

// runHelper runs the mount-helper form and returns the exit status: 0
// once the mount is ready, 1 if it failed, 2 for bad options.
func runHelper(h helperArgs) int {
	if h.help {
		usage(os.Stdout)
		return 0
	}
	c := defaultMountConfig()
	c.foreground = h.foreground
	for _, o := range h.opts {
		if err := c.applyOptions(o); err != nil {
			fmt.Fprintf(os.Stderr, "imagefs: %v\n", err)
			return 2
		}
	}
	if err := c.check(); err != nil {
		fmt.Fprintf(os.Stderr, "imagefs: %v\n", err)
		return 2
	}
	c.store, c.mountpoint = h.positional[0], h.positional[1]
	if c.foreground {
		return serve(c, func(err error) {
			if err != nil {
				fmt.Fprintf(os.Stderr, "imagefs: %v\n", err)
				return
			}
			sdNotify("READY=1")
		})
	}
	return daemonize(c, h.opts)
}

// daemonize starts the daemon that serves c and waits until it reports
// the mount ready (exit 0) or failed (exit 1, with its error on stderr).
func daemonize(c *mountConfig, opts []string) int {
	var err error
	for _, p := range []*string{&c.store, &c.mountpoint} {
		if *p, err = filepath.Abs(*p); err != nil {
			fmt.Fprintf(os.Stderr, "imagefs: %v\n", err)
			return 1
		}
	}
	// Fail in the foreground what can fail early, with the plain message.
	if err := checkMountpoint(c.mountpoint); err != nil {
		fmt.Fprintf(os.Stderr, "imagefs: %v\n", err)
		return 1
	}
	exe, err := os.Executable()
	if err != nil {
		exe = "/proc/self/exe"
	}
	r, w, err := os.Pipe()
	if err != nil {
		fmt.Fprintf(os.Stderr, "imagefs: %v\n", err)
		return 1
	}
	args := []string{"mount", "--ready-fd=3"}
	if c.logFile != "" {
		// The daemon runs in /: a relative log_file= is the caller's.
		if c.logFile, err = filepath.Abs(c.logFile); err != nil {
			fmt.Fprintf(os.Stderr, "imagefs: log file: %v\n", err)
			return 1
		}
		opts = withoutOption(opts, "log_file")
		args = append(args, "--log-file", c.logFile)
	}
	// Shared mode: check the config file here (its errors, plainly, in
	// the foreground), and hand the daemon (which runs in /) absolute
	// paths.
	if err := c.resolveShared(); err != nil {
		fmt.Fprintf(os.Stderr, "imagefs: %v\n", err)
		return 1
	}
	if c.shared != nil {
		opts = withoutOption(withoutOption(opts, "data"), "config")
		args = append(args, "--data", c.shared.Data)
		if c.shared.ConfigFile != "" {
			args = append(args, "--config", c.shared.ConfigFile)
		}
	}
	for _, o := range opts {
		args = append(args, "-o", o)
	}
	args = append(args, "--", c.store, c.mountpoint)
	cmd := exec.Command(exe, args...)
	cmd.Dir = "/"
	cmd.ExtraFiles = []*os.File{w} // fd 3
	if stderrIsJournal() {
		cmd.Stderr = os.Stderr // keep logging to the journal
	}
	// A session of its own: no controlling terminal, not in the caller's
	// process group (Ctrl-C in the shell that ran mount does not reach it).
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		w.Close()
		r.Close()
		fmt.Fprintf(os.Stderr, "imagefs: start daemon: %v\n", err)
		return 1
	}
	w.Close()
	msg, _ := io.ReadAll(bufio.NewReader(io.LimitReader(r, 64<<10)))
	r.Close()
	line := strings.TrimSpace(string(msg))
	switch {
	case line == "ready":
		cmd.Process.Release()
		return 0
	case strings.HasPrefix(line, "error: "):
		fmt.Fprintf(os.Stderr, "imagefs: %s\n", strings.TrimPrefix(line, "error: "))
		cmd.Wait()
		return 1
	default:
		err := cmd.Wait()
		fmt.Fprintf(os.Stderr, "imagefs: the daemon exited before the mount was ready (%v)%s\n", err, orEmpty(line))
		return 1
	}
}

// withoutOption returns the -o lists opts without the options named key
// (key=... or key-with-dashes=...), dropping lists left empty.
func withoutOption(opts []string, key string) []string {
	var out []string
	for _, list := range opts {
		var keep []string
		for _, o := range strings.Split(list, ",") {
			k, _, _ := strings.Cut(strings.TrimSpace(o), "=")
			if strings.ReplaceAll(k, "-", "_") != key {
				keep = append(keep, o)
			}
		}
		if len(keep) > 0 {
			out = append(out, strings.Join(keep, ","))
		}
	}
	return out
}

func orEmpty(s string) string {
	if s == "" {
		return ""
	}
	return ": " + s
}

// serveDaemon is the daemon the mount helper started: it serves in the
// background and reports through fd c.readyFD whether the mount is ready.
func serveDaemon(c *mountConfig) int {
	// Not inherited by what the daemon runs (fusermount3): the helper
	// waits for every writer to close the pipe.
	syscall.CloseOnExec(c.readyFD)
	pipe := os.NewFile(uintptr(c.readyFD), "ready-pipe")
	signal.Ignore(syscall.SIGHUP)
	return serve(c, func(err error) {
		if err != nil {
			fmt.Fprintf(pipe, "error: %s\n", strings.ReplaceAll(err.Error(), "\n", " "))
		} else {
			fmt.Fprintln(pipe, "ready")
		}
		pipe.Close()
	})
}
