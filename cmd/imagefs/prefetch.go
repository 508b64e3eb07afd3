package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/imagefs/imagefs/store"
	"github.com/schollz/progressbar/v3"
	"github.com/spf13/pflag"
	"golang.org/x/term"
)

const prefetchHelp = `Usage: imagefs prefetch MOUNTPOINT [--property KEY=VALUE]... [ID]...

Fill this host's cache of a mount whose data is in Swift (--data
swift://CONTAINER) ahead of use: each active image named by id, or whose
properties match every --property, is opened once through
MOUNTPOINT/by-id/ID/image.vhd (image.raw for a raw image), which makes the daemon download it, check
its size, MD5 and SHA-512 against the catalog and keep it in its cache
(an image already cached costs nothing). On a terminal a progress bar
shows the images done; otherwise one line per image.

Exit status: 0 every image is cached, 1 some failed (each is named), 2
usage error.

Options:
`

func init() {
	register("prefetch", "download images into this host's Swift cache ahead of use", runPrefetch)
}

func runPrefetch(args []string) int {
	fl := pflag.NewFlagSet("prefetch", pflag.ContinueOnError)
	props := fl.StringArrayP("property", "p", nil, "images with property KEY equal to VALUE: `KEY=VALUE` (repeatable; all must match)")
	jobs := fl.IntP("jobs", "j", 2, "download up to `N` images at once")
	help := fl.BoolP("help", "h", false, "show this help")
	fl.SetOutput(io.Discard)
	usageErr := func(format string, a ...any) int {
		fmt.Fprintf(os.Stderr, "imagefs prefetch: "+format+"\n", a...)
		fmt.Fprintf(os.Stderr, "Try 'imagefs prefetch --help' for more information.\n")
		return 2
	}
	if err := fl.Parse(args); err != nil {
		return usageErr("%v", err)
	}
	if *help {
		fl.SetOutput(os.Stdout)
		fmt.Print(prefetchHelp)
		printFlags(os.Stdout, fl)
		return 0
	}
	if fl.NArg() < 1 {
		return usageErr("want MOUNTPOINT")
	}
	if *jobs < 1 || *jobs > 64 {
		return usageErr("--jobs %d: want 1 to 64", *jobs)
	}
	mnt, ids := fl.Arg(0), fl.Args()[1:]
	if len(ids) == 0 && len(*props) == 0 {
		return usageErr("name the images: --property KEY=VALUE or IDs")
	}
	o := lsOptions{mnt: mnt, sortKey: "name", columns: []string{"id", "name", "status", "size"}}
	for _, p := range *props {
		k, v, ok := strings.Cut(p, "=")
		if !ok {
			return usageErr("--property %q: want KEY=VALUE", p)
		}
		if err := checkLsKey(k); err != nil {
			return usageErr("--property %q: %v", p, err)
		}
		o.filters = append(o.filters, lsFilter{k, v})
	}
	for _, id := range ids {
		if id == "" || strings.ContainsAny(id, "/\x00") || id == "." || id == ".." {
			return usageErr("%q is not an image id", id)
		}
	}
	if fi, err := os.Stat(filepath.Join(mnt, "by-id")); err != nil || !fi.IsDir() {
		fmt.Fprintf(os.Stderr, "imagefs prefetch: %s is not an imagefs mount (no by-id/): %v\n", mnt, err)
		return 1
	}
	type target struct {
		id, name string
		size     int64
	}
	var targets []target
	seen := map[string]bool{}
	add := func(t target) {
		if !seen[t.id] {
			seen[t.id] = true
			targets = append(targets, t)
		}
	}
	for _, id := range ids {
		add(target{id: id})
	}
	if len(o.filters) > 0 {
		rows, err := lsRows(o)
		if err != nil {
			fmt.Fprintf(os.Stderr, "imagefs prefetch: %v\n", err)
			return 1
		}
		for _, r := range rows {
			if r["id"] == nil || r["status"] == nil || *r["status"] != "active" {
				continue // only active images have data to fetch
			}
			t := target{id: *r["id"]}
			if r["name"] != nil {
				t.name = *r["name"]
			}
			if r["size"] != nil {
				t.size, _ = strconv.ParseInt(*r["size"], 10, 64)
			}
			add(t)
		}
	}
	if len(targets) == 0 {
		fmt.Fprintln(os.Stderr, "imagefs prefetch: no active image matches")
		return 0
	}

	var bar *progressbar.ProgressBar
	if term.IsTerminal(int(os.Stderr.Fd())) {
		bar = progressbar.NewOptions(len(targets), progressbar.OptionSetDescription("prefetching"),
			progressbar.OptionSetWriter(os.Stderr), progressbar.OptionShowCount(), progressbar.OptionClearOnFinish())
	}
	var (
		mu     sync.Mutex
		failed int
		wg     sync.WaitGroup
		next   = make(chan target)
	)
	start := time.Now()
	for range *jobs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for t := range next {
				t0 := time.Now()
				err := prefetchOne(byIDData(mnt, t.id))
				mu.Lock()
				label := t.id
				if t.name != "" {
					label += " (" + t.name + ")"
				}
				if err != nil {
					failed++
					if bar != nil {
						bar.Clear()
					}
					fmt.Fprintf(os.Stderr, "imagefs prefetch: %s: %v\n", label, err)
				} else if bar == nil {
					fmt.Fprintf(os.Stdout, "cached %s in %s\n", label, time.Since(t0).Round(time.Millisecond))
				}
				if bar != nil {
					bar.Add(1)
				}
				mu.Unlock()
			}
		}()
	}
	for _, t := range targets {
		next <- t
	}
	close(next)
	wg.Wait()
	if bar != nil {
		bar.Finish()
	}
	fmt.Fprintf(os.Stderr, "imagefs prefetch: %d of %d images cached in %s\n", len(targets)-failed, len(targets), time.Since(start).Round(time.Millisecond))
	if failed > 0 {
		return 1
	}
	return 0
}

// prefetchOne opens the image at path (the daemon fetches and verifies
// it at open) and reads its first byte.
func prefetchOne(path string) error {
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("no such image, or it has no data yet (not active)")
		}
		return err
	}
	defer f.Close()
	if _, err := f.Read(make([]byte, 1)); err != nil && err != io.EOF {
		return err
	}
	return nil
}

// byIDData returns the path of image id's data file under mnt's by-id/:
// image.vhd, or image.raw when its properties/disk_format says raw.
func byIDData(mnt, id string) string {
	dir := filepath.Join(mnt, "by-id", id)
	name := store.ImageDataName
	if b, err := os.ReadFile(filepath.Join(dir, "properties", store.KeyDiskFormat)); err == nil {
		if n := store.DataFileName(strings.TrimSuffix(string(b), "\n")); n != "" {
			name = n
		}
	}
	return filepath.Join(dir, name)
}
