package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/pflag"

	"github.com/imagefs/imagefs/store"
)

const migrateHelp = `Usage: imagefs migrate [OPTIONS] STORE --catalog etcd://HOST:PORT[,...] --data DIR

Move a single-host store (not mounted) into a shared catalog: every image
record goes to the etcd catalog as it is (id, name, owner, group, status,
properties, checksums, timestamps, inode numbers), and the data of each
sealed image (active, deactivated) is copied into the shared data
directory DIR, re-hashed on the way against its checksum (MD5) and
os_hash_value (SHA-512); a record is written only once its data is in
place. queued and killed images are migrated as records; an image that
was saving (an upload cut off) is not: upload it again. STORE is only
read (run imagefs fsck --repair on it first if fsck reports problems).

Safe to run again, after an interruption too: images already in the
catalog with the same record are skipped; a name that the catalog holds
for another image, or an id with a different record there, is reported
and left as it is (nothing is overwritten). The catalog's inode sequence
is raised past the store's, never lowered. An image whose inode range the
catalog has handed out before (to another image: a second store migrated
into one catalog, each store numbers its images from 1; or to an image
deleted since, whose numbers a mounted host may still cache) is
renumbered: it gets a range of its own, and the report lists it. Only a
fresh catalog keeps all the store's inode numbers.

DIR must be the catalog's data directory (its identity file
.imagefs-data-id, see imagefs mount --help); a catalog that holds no
image takes DIR.

With --dry-run, nothing is written: the store's data is read and
verified, the catalog read, and the report says what a migration would do
(the exit status too).

--catalog, --data and --config are those of imagefs mount (credentials and
the namespace in the config file; see imagefs mount --help). DIR must exist.

Exit status:
  0  every image is in the catalog
  1  some images were not migrated (listed, with the reason)
  2  nothing could be done (usage, not a store, the store is mounted, the
     catalog is unreachable, DIR is not the catalog's data directory)

Options:
`

const migrateExamples = `
Example:
  imagefs umount /mnt/images
  imagefs migrate /var/lib/imagefs --catalog etcd://10.0.0.1:2379,10.0.0.2:2379 \
      --data /srv/images --config /etc/imagefs/etcd.conf
`

func init() {
	register("migrate", "move a single-host store into a shared (etcd) catalog", runMigrate)
}

func runMigrate(args []string) int {
	fl := pflag.NewFlagSet("migrate", pflag.ContinueOnError)
	c := defaultMountConfig()
	fl.StringVar(&c.catalog, "catalog", "", "the etcd cluster at `URL` etcd://HOST:PORT[,HOST:PORT...] (etcd+tls:// for TLS)")
	fl.StringVar(&c.data, "data", "", "the shared directory `DIR` of sealed image data")
	fl.StringVar(&c.configFile, "config", "", "read etcd credentials and settings from `FILE` (see imagefs mount --help)")
	dryRun := fl.Bool("dry-run", false, "write nothing: verify the data and report what a migration would do")
	asJSON := fl.Bool("json", false, "print the report as JSON")
	help := fl.BoolP("help", "h", false, "show this help")
	fl.Usage = func() {
		fmt.Fprint(os.Stderr, migrateHelp)
		printFlags(os.Stderr, fl)
		fmt.Fprint(os.Stderr, migrateExamples)
	}
	if err := fl.Parse(args); err != nil {
		fmt.Fprintf(os.Stderr, "imagefs migrate: %v\n", err)
		return 2
	}
	if *help {
		fmt.Print(migrateHelp)
		printFlags(os.Stdout, fl)
		fmt.Print(migrateExamples)
		return 0
	}
	if fl.NArg() != 1 {
		fmt.Fprintf(os.Stderr, "imagefs migrate: want one STORE, got %d arguments\n", fl.NArg())
		fl.Usage()
		return 2
	}
	if !c.isShared() || c.data == "" {
		fmt.Fprintln(os.Stderr, "imagefs migrate: want --catalog etcd://HOST:PORT[,...] (or --config FILE with endpoints) and --data DIR")
		return 2
	}
	c.hostID = "imagefs-migrate" // names nothing: migrate takes no upload lease
	if err := c.resolveShared(); err != nil {
		fmt.Fprintf(os.Stderr, "imagefs migrate: %v\n", err)
		return 2
	}
	if c.shared.Swift != nil {
		fmt.Fprintln(os.Stderr, "imagefs migrate: --data swift://: migrating into a Swift data store is not supported yet; migrate into a shared data directory (--data DIR)")
		return 2
	}
	src := fl.Arg(0)
	if _, err := os.Stat(filepath.Join(src, "catalog")); err != nil {
		fmt.Fprintf(os.Stderr, "imagefs migrate: %s is not an imagefs store: %v\n", src, err)
		return 2
	}
	lg := slog.Default()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	octx, cancel := context.WithTimeout(ctx, c.shared.DialTimeout+c.shared.RequestTimeout)
	be, err := openCatalog(octx, c.shared, lg)
	cancel()
	if err != nil {
		fmt.Fprintf(os.Stderr, "imagefs migrate: catalog: %v\n", err)
		return 2
	}
	defer be.Close()
	data, err := store.NewLocalData(c.shared.Data)
	if err != nil {
		fmt.Fprintf(os.Stderr, "imagefs migrate: data directory %s: %v\n", c.shared.Data, err)
		return 2
	}
	verb := "migrating"
	if *dryRun {
		verb = "checking (dry run: nothing is written) the migration of"
	}
	fmt.Fprintf(os.Stderr, "%s %s into catalog %s namespace %s, data %s\n", verb, src,
		strings.Join(c.shared.Endpoints, ","), c.shared.Namespace, c.shared.Data)
	start := time.Now()
	r, err := store.Migrate(ctx, src, be, data, store.MigrateOptions{Progress: migrateProgress(start), DryRun: *dryRun})
	if errors.Is(err, store.ErrWrongData) {
		fmt.Fprintf(os.Stderr, "imagefs migrate: %v\n", err)
		return 2
	}
	if *asJSON {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		enc.Encode(r)
	} else {
		not := "not migrated"
		if *dryRun {
			not = "would not be migrated"
		}
		for _, it := range r.Items {
			if !it.OK() {
				fmt.Printf("%s: %s (%s, %s): %s: %s\n", not, it.ID, it.Name, it.Status, it.Outcome, it.Detail)
			}
		}
		renum := "renumbered"
		if *dryRun {
			renum = "would be renumbered"
		}
		for _, it := range r.Items {
			if it.InoTo != 0 && it.Outcome == store.MigrateDone {
				fmt.Printf("%s: %s (%s): inode numbers %d|slot -> %d|slot (the catalog handed the first out before)\n",
					renum, it.ID, it.Name, it.InoFrom, it.InoTo)
			}
		}
		if r.Renumbered > 0 {
			fmt.Printf("%d images %s: their inode numbers were handed out by the catalog before (another image's, or a deleted one's)\n", r.Renumbered, renum)
		}
		if *dryRun {
			fmt.Printf("dry run, nothing written: %d images: %d would be migrated, %d already there, %d would not be migrated, %d deleted left out; %d bytes of data verified in %s\n",
				r.Images, r.Migrated, r.Skipped, r.Failed, r.Deleted, r.Bytes, time.Since(start).Round(time.Millisecond))
		} else {
			fmt.Printf("%d images: %d migrated, %d already there, %d not migrated, %d deleted left out; %d bytes of data copied and verified in %s\n",
				r.Images, r.Migrated, r.Skipped, r.Failed, r.Deleted, r.Bytes, time.Since(start).Round(time.Millisecond))
		}
		if r.Metadefs+r.MetadefsSkipped+len(r.MetadefConflicts) > 0 {
			verb := "migrated"
			if *dryRun {
				verb = "would be migrated"
			}
			fmt.Printf("metadata definitions (namespaces and resource types): %d %s, %d already there, %d held by the catalog with other definitions (not migrated: %s)\n",
				r.Metadefs, verb, r.MetadefsSkipped, len(r.MetadefConflicts), strings.Join(r.MetadefConflicts, ", "))
		}
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "imagefs migrate: stopped: %v (run it again to complete the migration)\n", err)
		if r.Migrated+r.Skipped+r.Failed == 0 {
			return 2
		}
		return 1
	}
	if !r.OK() {
		return 1
	}
	return 0
}

// migrateProgress returns a progress callback: a line every 10% of the
// images (and at the end).
func migrateProgress(start time.Time) func(done, total int, it store.MigrateItem) {
	next := 1
	return func(done, total int, it store.MigrateItem) {
		if done*10/total < next && done != total {
			return
		}
		next = done*10/total + 1
		fmt.Fprintf(os.Stderr, "handled %d of %d images (%d%%) in %s\n", done, total, done*100/total, time.Since(start).Round(time.Millisecond))
	}
}
