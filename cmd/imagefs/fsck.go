package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/imagefs/imagefs/store"
	"github.com/schollz/progressbar/v3"
	"github.com/spf13/pflag"
	"golang.org/x/term"
)

const fsckHelp = `Usage: imagefs fsck [OPTIONS] STORE

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
	r, err := store.Check(fl.Arg(0), opts)
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
			fmt.Printf("%d of them fixed by imagefs fsck --repair %s\n", fixable, fl.Arg(0))
		}
		if manual > 0 {
			fmt.Printf("%d of them need you: restore the data file from a backup, or delete the image\n", manual)
		}
		if r.LostFound > 0 {
			lf := filepath.Join(fl.Arg(0), "lost+found")
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
