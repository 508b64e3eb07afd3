package main

import (
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"runtime/pprof"
	"syscall"

	"github.com/imagefs/imagefs/fs"
	"github.com/imagefs/imagefs/store"
	"github.com/spf13/pflag"
)

const mountHelp = `Usage: imagefs mount [OPTIONS] STORE MOUNTPOINT

Serve the image store STORE (a directory, created if missing) at MOUNTPOINT
in the foreground until the filesystem is unmounted (umount MOUNTPOINT,
fusermount3 -u MOUNTPOINT) or imagefs receives SIGINT or SIGTERM, then
unmount cleanly and close the catalog.

As root imagefs mounts directly; as another user it uses fusermount3.

Options:
`

const mountExamples = `
Examples:
  imagefs mount /var/lib/imagefs /mnt/images
  mkdir /mnt/images/images/superos-2024.1
  cp superos.vhd /mnt/images/images/superos-2024.1/image.vhd
  cat /mnt/images/images/superos-2024.1/properties/status
`

func init() {
	register("mount", "serve a store at a mountpoint (foreground)", runMount)
}

func runMount(args []string) int {
	fl := pflag.NewFlagSet("mount", pflag.ContinueOnError)
	allowOther := fl.Bool("allow-other", false, "let other users use the mount (non-root mounters need user_allow_other in /etc/fuse.conf)")
	debug := fl.Bool("debug", false, "log every FUSE request and reply to stderr")
	readOnly := fl.Bool("read-only", false, "mount read-only: every change fails with EROFS")
	quota := fl.Int("property-quota", store.DefaultPropertyQuota, "maximum number of properties per image")
	cpuProfile := fl.String("cpuprofile", "", "write a Go CPU profile to `FILE` until unmount (for performance work)")
	help := fl.BoolP("help", "h", false, "show this help")
	fl.Usage = func() {
		fmt.Fprint(os.Stderr, mountHelp)
		fl.PrintDefaults()
		fmt.Fprint(os.Stderr, mountExamples)
	}
	if err := fl.Parse(args); err != nil {
		fmt.Fprintf(os.Stderr, "imagefs mount: %v\n", err)
		fl.Usage()
		return 2
	}
	if *help {
		fl.SetOutput(os.Stdout)
		fmt.Print(mountHelp)
		fl.PrintDefaults()
		fmt.Print(mountExamples)
		return 0
	}
	if fl.NArg() != 2 {
		fmt.Fprintf(os.Stderr, "imagefs mount: want STORE and MOUNTPOINT, got %d arguments\n", fl.NArg())
		fl.Usage()
		return 2
	}
	storeDir, mnt := fl.Arg(0), fl.Arg(1)
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			fmt.Fprintf(os.Stderr, "imagefs mount: %v\n", err)
			return 1
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintf(os.Stderr, "imagefs mount: %v\n", err)
			return 1
		}
		defer pprof.StopCPUProfile()
	}
	st, err := store.Open(storeDir, store.Options{PropertyQuota: *quota})
	if err != nil {
		fmt.Fprintf(os.Stderr, "imagefs mount: open store: %v\n", err)
		return 1
	}
	defer st.Close()
	fsys, err := fs.Mount(st, mnt, fs.Options{AllowOther: *allowOther, Debug: *debug, ReadOnly: *readOnly})
	if err != nil {
		fmt.Fprintf(os.Stderr, "imagefs mount: mount %s: %v\n", mnt, err)
		return 1
	}
	slog.Info("mounted", "store", storeDir, "mountpoint", mnt)

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		sig := <-sigs
		slog.Info("unmounting", "signal", sig.String())
		if err := fsys.Unmount(); err != nil {
			slog.Error("unmount failed; is the mount busy? (fusermount3 -u / umount -l)", "mountpoint", mnt, "err", err)
		}
	}()
	fsys.Wait()
	slog.Info("unmounted", "mountpoint", mnt)
	return 0
}
