package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/imagefs/imagefs/store"
	"github.com/schollz/progressbar/v3"
	"github.com/spf13/pflag"
	"golang.org/x/term"
)

const fsckHelp = `Usage: imagefs fsck [OPTIONS] STORE
       imagefs fsck [OPTIONS] STORE --catalog etcd://HOST:PORT[,...] --data DIR
       imagefs fsck [OPTIONS] STORE --catalog etcd://HOST:PORT[,...] --data swift://CONTAINER

Check an imagefs store that is not mounted: the catalog against the data
files. Reports interrupted uploads, leftover staging files, seals whose
catalog record did not commit, data files of no image (orphans) and of
deleted images, images whose data is missing or has the wrong size,
writable data files, a store that group or others can read, records whose
status and properties disagree (an active image without checksum, an
unsealed one with hashes, a sealed one with a kill reason), colliding
inode ranges, and a name index or property index (by-property/) that
disagrees with the records, and a missing STORE/catalog/imagefs-reserve
(the 1 MiB a delete on a full disk uses). Each problem --repair fixes is marked
"(--repair fixes this)". Also says how many files STORE/lost+found holds.

With --repair, fixes what can be fixed without losing data: interrupted
uploads become killed, staging leftovers are removed, uncommitted seals are
verified and completed, orphans are moved to STORE/lost+found, the data of
deleted images is removed, the store is made private (directories 0700,
files 0600, data files 0400), stale hashes and kill reasons are cleared,
the next inode range is moved past those in use, and the name and property
indexes are rewritten, and the reserve is made again when the disk has
9 MiB free. Every mount does the first six and the reserve by itself. Missing
or damaged data (missing-data, size-mismatch, checksum-mismatch), broken
records and two images with one name or inode range need the operator:
restore the data file from a backup, or delete the image.

STORE/lost+found keeps data files no record explains (never removed by
imagefs): look at them with imagefs inspect, then remove them with
rm STORE/lost+found/*.vhd.

With --catalog (a shared catalog; --data, --config and --host-id as for
imagefs mount), checks the etcd catalog against the shared data directory
DIR, and this host's STORE (its staging; STORE must not be mounted on this
host, other hosts may stay mounted). Images another host is uploading or
sealing (upload/<id> key live) are left alone, a data file of no image is
an orphan only once it is 10 minutes old, each problem is read again from
the catalog before it is reported, repairs commit under conditions on what
they change (never overwriting another host's change), lost+found is
DIR/lost+found, and the property index (in memory) is not checked.

With --data swift://CONTAINER (credentials as for imagefs mount), checks
the records against the objects: an active image whose manifest is
missing, or whose manifest names segments that are missing or differ
(missing-data, size-mismatch, checksum-mismatch); manifests of no image,
or of an image that is not active (orphan-data); segments no manifest
names whose upload's host is gone (orphan-segments). Uploads of a live
host (host/<id> key) and a deleted image's objects until --delete-delay
after its delete are left alone. --repair removes the orphans; an image
whose object is missing stays as it is (restore it, or delete the image).
--verify-data streams each image's segments from Swift (not the cache).

With --verify-data, re-hashes every sealed image and compares it with its
checksum (MD5) and os_hash_value (SHA-512), catching bit rot on the backing
disk. Shows a progress bar on a terminal and plain lines otherwise.

Exit status:
  0  all is well (or every problem was repaired)
  1  problems remain that --repair does not fix (or a repair failed)
  2  the store could not be checked (not a store, or mounted)
  3  without --repair: problems found, all of which --repair fixes

Options:
`

const fsckExamples = `
Examples:
  imagefs fsck /var/lib/imagefs
  imagefs fsck --repair --verify-data /var/lib/imagefs
`

func init() {
	register("fsck", "check (and repair) a store that is not mounted", runFsck)
}

func runFsck(args []string) int {
	fl := pflag.NewFlagSet("fsck", pflag.ContinueOnError)
	repair := fl.Bool("repair", false, "fix what can be fixed without losing data")
	verify := fl.Bool("verify-data", false, "re-hash every sealed image against checksum and os_hash_value")
	asJSON := fl.Bool("json", false, "print the report as JSON")
	c := defaultMountConfig()
	fl.StringVar(&c.catalog, "catalog", "", "shared mode: check the catalog in the etcd cluster at `URL` etcd://HOST:PORT[,HOST:PORT...] (etcd+tls:// for TLS); needs --data")
	fl.StringVar(&c.data, "data", "", "shared mode: the shared directory `DIR` of sealed image data, or swift://CONTAINER")
	fl.StringVar(&c.cacheDir, "cache-dir", "", "--data swift://: this host's cache `DIR` (default STORE/swift-cache; a deleted image's removal that fsck --repair schedules is kept there)")
	fl.StringVar(&c.deleteDelay, "delete-delay", "", "--data swift://: the hosts' `DURATION` after a delete before its objects go (default 10m): deleted images' objects are left alone until then")
	fl.StringVar(&c.configFile, "config", "", "shared mode: read etcd credentials and settings from `FILE` (see imagefs mount --help)")
	fl.StringVar(&c.hostID, "host-id", "", "shared mode: this host's `NAME` in the catalog (default the hostname)")
	help := fl.BoolP("help", "h", false, "show this help")
	fl.Usage = func() {
		fmt.Fprint(os.Stderr, fsckHelp)
		printFlags(os.Stderr, fl)
		fmt.Fprint(os.Stderr, fsckExamples)
	}
	if err := fl.Parse(args); err != nil {
		fmt.Fprintf(os.Stderr, "imagefs fsck: %v\n", err)
		return 2
	}
	if *help {
		fl.SetOutput(os.Stdout)
		fmt.Print(fsckHelp)
		printFlags(os.Stdout, fl)
		fmt.Print(fsckExamples)
		return 0
	}
	if fl.NArg() != 1 {
		fmt.Fprintf(os.Stderr, "imagefs fsck: want one STORE, got %d arguments\n", fl.NArg())
		fl.Usage()
		return 2
	}
	opts := store.CheckOptions{Repair: *repair, VerifyData: *verify}
	if *verify {
		opts.Progress = progress()
	}
	if c.isShared() || c.data != "" || c.hostID != "" {
		if !c.isShared() || c.data == "" {
			fmt.Fprintln(os.Stderr, "imagefs fsck: a shared catalog wants --catalog etcd://HOST:PORT[,...] (or --config FILE with endpoints) and --data DIR")
			return 2
		}
		c.store = fl.Arg(0) // the default cache directory's parent
		if err := c.resolveShared(); err != nil {
			fmt.Fprintf(os.Stderr, "imagefs fsck: %v\n", err)
			return 2
		}
		if fi, err := os.Stat(fl.Arg(0)); err != nil || !fi.IsDir() {
			fmt.Fprintf(os.Stderr, "imagefs fsck: %s is not a store directory: %v\n", fl.Arg(0), err)
			return 2
		}
		ctx, cancel := context.WithTimeout(context.Background(), c.shared.DialTimeout+c.shared.RequestTimeout)
		be, err := openCatalog(ctx, c.shared, slog.Default())
		cancel()
		if err != nil {
			fmt.Fprintf(os.Stderr, "imagefs fsck: catalog: %v\n", err)
			return 2
		}
		var data store.DataBackend
		if ss := c.shared.Swift; ss != nil {
			sd, err := openSwiftData(ss, c.shared.Host, slog.Default())
			if err != nil {
				be.Close()
				fmt.Fprintf(os.Stderr, "imagefs fsck: %v\n", err)
				return 2
			}
			// Closed after the check: it waits for the removals of
			// this host's cut-off uploads (staging leftovers).
			defer sd.Close()
			data = sd
			switch {
			case ss.DeleteDelay > 0:
				opts.DeleteDelay = ss.DeleteDelay
			case ss.DeleteDelay < 0: // --delete-delay 0s: at once
				opts.DeleteDelay = time.Nanosecond
			}
		} else if data, err = store.NewLocalData(c.shared.Data); err != nil {
			be.Close()
			fmt.Fprintf(os.Stderr, "imagefs fsck: data directory %s: %v\n", c.shared.Data, err)
			return 2
		}
		opts.Catalog, opts.Data, opts.Host, opts.CatalogTimeout = be, data, c.shared.Host, c.shared.RequestTimeout
	}
	r, err := store.Check(fl.Arg(0), opts) // closes opts.Catalog
	if err != nil {
		fmt.Fprintf(os.Stderr, "imagefs fsck: %v\n", err)
		return 2
	}
	if *asJSON {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		enc.Encode(r)
	} else {
		for _, p := range r.Problems {
			fmt.Println(p)
		}
		fmt.Printf("%d images, %d sealed, %d verified, %d problems\n", r.Images, r.Sealed, r.Verified, len(r.Problems))
		fixable, manual := 0, 0
		for _, p := range r.Problems {
			switch {
			case p.Repaired:
			case p.Repairable && !*repair:
				fixable++
			default:
				manual++
			}
		}
		if fixable > 0 {
			target := fl.Arg(0)
			if c.shared != nil {
				args := []string{target, "--catalog", c.catalog, "--data", c.data}
				for _, o := range [][2]string{{"--host-id", c.hostID}, {"--delete-delay", c.deleteDelay}, {"--cache-dir", c.cacheDir}} {
					if o[1] != "" { // the options this run was given, so the repair sees what it saw
						args = append(args, o[0], o[1])
					}
				}
				target = strings.Join(append(args, configArg(c.configFile)...), " ")
			}
			fmt.Printf("%d of them fixed by imagefs fsck --repair %s\n", fixable, target)
		}
		if manual > 0 {
			what := "restore the data file from a backup"
			if c.shared != nil && c.shared.Swift != nil {
				what = "put the image's object back in Swift"
			}
			fmt.Printf("%d of them need you: %s, or delete the image\n", manual, what)
		}
		if r.LostFound > 0 {
			lf := r.LostFoundDir
			fmt.Printf("%s holds %d files (%d bytes) of data no image record explains: look at them with imagefs inspect, then empty it with rm %s/*.vhd\n",
				lf, r.LostFound, r.LostFoundBytes, lf)
		}
	}
	switch {
	case r.OK():
		return 0
	case !*repair && r.Repairable():
		return 3
	}
	return 1
}

// progress returns a progress callback: a bar on a terminal, a plain line
// every 10% otherwise.
func progress() func(done, total int64) {
	if term.IsTerminal(int(os.Stderr.Fd())) {
		var bar *progressbar.ProgressBar
		return func(done, total int64) {
			if bar == nil {
				bar = progressbar.DefaultBytes(total, "verifying")
			}
			bar.Set64(done)
		}
	}
	next, last := int64(0), int64(-1)
	start := time.Now()
	return func(done, total int64) {
		if total == 0 || done == last || done*10/total < next && done != total {
			return
		}
		last = done
		fmt.Fprintf(os.Stderr, "verified %d of %d bytes (%d%%) in %s\n", done, total, done*100/total, time.Since(start).Round(time.Millisecond))
		next = done*10/total + 1
	}
}

// configArg is the --config argument of a command line to suggest (none
// when file is "").
func configArg(file string) []string {
	if file == "" {
		return nil
	}
	return []string{"--config", file}
}
