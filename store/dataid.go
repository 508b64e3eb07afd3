package store

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/imagefs/imagefs/store/kv"
)

// The identity of a shared catalog's data directory. Every host of a
// shared catalog must mount the same --data directory (an NFS export):
// a host given another one (a typo, an empty local directory where the
// export was not mounted) would find no image's data and seal into a
// directory no other host reads. So the catalog records which data
// directory is its own: the first mount (or imagefs migrate) of a
// catalog writes an identity file into its data directory
// (DATA/.imagefs-data-id, a random id) and stores the id, with where and
// by which host it was set up, under meta/data-dir in the catalog; every
// later mount, fsck and migrate refuses a data directory whose identity
// file is missing or holds another id. A catalog without image records
// takes the data directory it is given (its first mount; or a data
// directory set up again while the catalog holds nothing), unless the
// host that recorded the current one is mounted now. Sealed data in
// Swift (--data swift://CONTAINER) is recorded the same way, its identity
// being swift://CONTAINER (no object is written): a catalog is served by
// one data store only, never by a directory on some hosts and Swift on
// others.

// DataIdentity is implemented by a DataBackend that can carry the
// identity of a shared catalog's data storage (the local backend: a file
// in its directory; swiftdata: its container's name, swift://CONTAINER).
// A backend without it is not checked.
type DataIdentity interface {
	// DataID returns the identity recorded in the storage ("" when it
	// has none). Errors: reading it failed.
	DataID() (string, error)
	// MarkDataID records id as the storage's identity unless it has one
	// already, and returns the identity it holds afterwards (id, or the
	// one found: two hosts may set up one directory at once).
	MarkDataID(id string) (string, error)
	// DataWhere names the storage in messages (a directory,
	// swift://CONTAINER).
	DataWhere() string
}

// dataIDFile is the identity file of a local data directory.
const dataIDFile = ".imagefs-data-id"

// keyDataDir is the catalog's key of its data directory's identity
// (dataDirRecord, JSON).
const keyDataDir = "meta/data-dir"

// dataDirRecord is the value of meta/data-dir.
type dataDirRecord struct {
	ID    string `json:"id"`    // the identity file's id
	Where string `json:"where"` // the directory, as the host that set it up named it
	Host  string `json:"host"`  // that host (imagefs-migrate for a migration)
	Since string `json:"since"` // RFC 3339, UTC
}

func (r dataDirRecord) String() string {
	return fmt.Sprintf("%s (set up by host %s at %s, identity %s)", r.Where, r.Host, r.Since, r.ID)
}

// ErrWrongData: a shared catalog's data directory is not the one the
// catalog records (a mount, fsck or migrate is refused).
var ErrWrongData = errors.New("wrong data directory")

func (d *localData) DataWhere() string { return d.dir }

// DataID reads DIR/.imagefs-data-id ("" when missing).
func (d *localData) DataID() (string, error) {
	b, err := os.ReadFile(filepath.Join(d.dir, dataIDFile))
	if errors.Is(err, os.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(b)), nil
}

// MarkDataID writes DIR/.imagefs-data-id (0400, fsynced) unless it
// exists: a temporary file linked into place (link(2) never replaces,
// on NFS too), then the directory fsynced.
func (d *localData) MarkDataID(id string) (string, error) {
	if cur, err := d.DataID(); err != nil || cur != "" {
		return cur, err
	}
	f, err := os.CreateTemp(d.dir, dataIDFile+".tmp-*")
	if err != nil {
		return "", err
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	_, err = f.WriteString(id + "\n")
	if err == nil {
		err = f.Chmod(0o400)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", err
	}
	if err := os.Link(tmp, filepath.Join(d.dir, dataIDFile)); err != nil && !errors.Is(err, os.ErrExist) {
		return "", err
	}
	if err := syncDir(d.dir); err != nil {
		return "", err
	}
	return d.DataID()
}

// dataDirCheck is what checkDataDir needs to know of the catalog.
type dataDirCheck struct {
	b      kv.Backend
	data   DataBackend
	host   string
	images int      // image records in the catalog
	sealed []string // ids of its sealed images (a catalog without meta/data-dir)
	claim  bool     // record the data directory when the catalog may take it (not fsck, not a dry run)
	now    time.Time
	log    *slog.Logger
	ctx    func() (context.Context, context.CancelFunc)
}

// checkDataDir refuses a shared catalog's data directory that is not the
// one the catalog records (ErrWrongData, naming both), and records it
// (c.claim) when the catalog may take it: the catalog records none yet
// (its first mount or migration; for a catalog set up before identities
// were recorded, only a directory that holds data of its sealed images),
// or the catalog holds no image and the host that recorded its data
// directory is not mounted (its host/<id> key is gone) or is this host.
// Errors: ErrWrongData, the catalog's,
// the data directory's I/O errors.
func checkDataDir(c dataDirCheck) error {
	di, ok := c.data.(DataIdentity)
	if !ok {
		return nil
	}
	where := di.DataWhere()
	for attempt := 0; ; attempt++ {
		ctx, cancel := c.ctx()
		p, err := c.b.Get(ctx, keyDataDir)
		cancel()
		if err != nil {
			return fmt.Errorf("catalog: read %s: %w", keyDataDir, catalogErr(err))
		}
		mark, err := di.DataID()
		if err != nil {
			return fmt.Errorf("data directory %s: identity file %s: %w", where, dataIDFile, err)
		}
		var rec dataDirRecord
		if p.ModRev != 0 {
			if err := json.Unmarshal(p.Value, &rec); err != nil || rec.ID == "" {
				return fmt.Errorf("%w: catalog key %s cannot be read (%q)", ErrCatalog, keyDataDir, p.Value)
			}
			if rec.ID == mark {
				return nil
			}
		}
		switch {
		case p.ModRev != 0 && c.images > 0 && mark == "":
			return fmt.Errorf("%w: %s is not this catalog's data directory: it has no identity file %s; the catalog's data directory is %s. Give --data the directory every host shares (is it mounted?)",
				ErrWrongData, where, dataIDFile, rec)
		case p.ModRev != 0 && c.images > 0:
			return fmt.Errorf("%w: %s is not this catalog's data directory: %s, not this catalog's identity; the catalog's data directory is %s. Give --data the directory every host shares",
				ErrWrongData, where, identityOf(di, mark), rec)
		case p.ModRev == 0 && (len(c.sealed) > 0 || mark != ""):
			// The catalog records no data directory yet (set up before
			// identities, or its first record failed): a directory
			// that holds none of its sealed images' data but other data
			// (another catalog's) is refused.
			n, ours, err := c.dataFilesOf(c.sealed)
			if err != nil {
				return fmt.Errorf("data directory %s: %w", where, err)
			}
			if !ours && len(c.sealed) > 0 {
				return fmt.Errorf("%w: %s holds none of the data files of the catalog's %d sealed images (and the catalog records no data directory yet): give --data the directory every host shares (is it mounted?)",
					ErrWrongData, where, len(c.sealed))
			}
			if !ours && n > 0 {
				return fmt.Errorf("%w: %s is another catalog's data directory: %s and it has %d data files, none of an image of this catalog",
					ErrWrongData, where, identityOf(di, mark), n)
			}
		}
		if p.ModRev != 0 && rec.Host != c.host {
			// An empty catalog takes another data directory, but not
			// from under a live host that set up the recorded one.
			ctx, cancel := c.ctx()
			hp, err := c.b.Get(ctx, prefixHost+rec.Host)
			cancel()
			if err != nil {
				return fmt.Errorf("catalog: read %s: %w", prefixHost+rec.Host, catalogErr(err))
			}
			if hp.ModRev != 0 {
				return fmt.Errorf("%w: %s is not this catalog's data directory: host %s, mounted now, uses %s (the catalog holds no image yet). Give --data the directory every host shares",
					ErrWrongData, where, rec.Host, rec)
			}
		}
		if !c.claim {
			return nil
		}
		id := mark
		if id == "" {
			b := make([]byte, 16)
			rand.Read(b)
			if id, err = di.MarkDataID(hex.EncodeToString(b)); err != nil {
				return fmt.Errorf("data directory %s: write its identity file %s: %w", where, dataIDFile, err)
			}
		}
		next := dataDirRecord{ID: id, Where: where, Host: c.host, Since: c.now.UTC().Format(time.RFC3339)}
		v, _ := json.Marshal(next)
		ctx, cancel = c.ctx()
		_, err = c.b.Commit(ctx, &kv.Batch{
			Conds: []kv.Cond{{Key: keyDataDir, ModRev: p.ModRev}},
			Ops:   []kv.Op{{Kind: kv.Put, Key: keyDataDir, Value: v}},
			Room:  kv.Small,
		})
		cancel()
		switch {
		case err == nil:
			if p.ModRev != 0 {
				c.log.Warn("shared data directory changed: the catalog holds no image, so it takes this one", "data", where, "id", id, "was", rec.String())
			} else {
				c.log.Info("shared data directory recorded in the catalog", "data", where, "id", id)
			}
			return nil
		case errors.Is(err, kv.ErrConflict) && attempt < 5:
			continue // another host recorded one meanwhile: check against it
		}
		return fmt.Errorf("catalog: record the data directory: %w", catalogErr(err))
	}
}

// identityOf says what identity mark the data store di holds, for
// messages: a data directory's identity file, or another store's own
// (a Swift container's name).
func identityOf(di DataIdentity, mark string) string {
	if _, ok := di.(*localData); ok {
		return fmt.Sprintf("its identity file %s holds %s", dataIDFile, mark)
	}
	return "its identity is " + mark
}

// dataFilesOf returns how many data files the data backend holds and
// whether one of them is of an image in ids.
func (c dataDirCheck) dataFilesOf(ids []string) (n int, ours bool, err error) {
	files, err := c.data.List()
	if err != nil {
		return 0, false, err
	}
	have := make(map[string]bool, len(files))
	for _, id := range files {
		have[id] = true
	}
	for _, id := range ids {
		if have[id] {
			return len(files), true, nil
		}
	}
	return len(files), false, nil
}

// checkDataDir is checkDataDir for an open store of a shared catalog (at
// Open, after the records are loaded): a check-only open (fsck) records
// nothing.
func (s *Store) checkDataDir() error {
	var sealed []string
	for id, im := range s.images {
		if im.Status.Sealed() {
			sealed = append(sealed, id)
		}
	}
	return checkDataDir(dataDirCheck{
		b: s.cat.kv, data: s.data, host: s.opts.Host, images: len(s.images), sealed: sealed,
		claim: !s.opts.checkOnly, now: s.opts.Now(), log: s.log, ctx: s.cat.ctx,
	})
}
