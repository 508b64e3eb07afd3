package store

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"syscall"

	"github.com/cockroachdb/pebble/v2"
)

// The catalog's Pebble key space. Every change that belongs together (a
// seal, a rename, a delete) is one batch committed with pebble.Sync.
//
//	img/<id>    -> JSON Image record
//	name/<name> -> id (names are unique)
//	seq/ino     -> next inode base, uint64 big-endian
//	prop/<key>\x00<value>\x00<id> -> "" (property index, see index.go)
//	meta/propindex -> property index version
const (
	prefixImage = "img/"
	prefixName  = "name/"
	keySeqIno   = "seq/ino"
)

type catalog struct {
	db *pebble.DB
}

func openCatalog(dir string) (*catalog, error) {
	db, err := pebble.Open(dir, &pebble.Options{Logger: quietLogger{}})
	if errors.Is(err, syscall.EAGAIN) || errors.Is(err, syscall.EWOULDBLOCK) ||
		(err != nil && strings.Contains(err.Error(), "lock held")) {
		return nil, fmt.Errorf("%w: catalog %s is locked by another process (is the store mounted?)", ErrBusy, dir)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: open %s: %v", ErrCatalog, dir, err)
	}
	return &catalog{db: db}, nil
}

func (c *catalog) close() error { return c.db.Close() }

// loadAll reads every image record.
func (c *catalog) loadAll(fn func(*Image) error) error {
	it, err := c.db.NewIter(&pebble.IterOptions{
		LowerBound: []byte(prefixImage), UpperBound: []byte("img0"),
	})
	if err != nil {
		return fmt.Errorf("%w: %v", ErrCatalog, err)
	}
	defer it.Close()
	for it.First(); it.Valid(); it.Next() {
		im := new(Image)
		if err := json.Unmarshal(it.Value(), im); err != nil {
			return fmt.Errorf("%w: record %s: %v", ErrCatalog, it.Key(), err)
		}
		if err := fn(im); err != nil {
			return err
		}
	}
	return it.Error()
}

// loadNames reads the name index.
func (c *catalog) loadNames(fn func(name, id string)) error {
	it, err := c.db.NewIter(&pebble.IterOptions{
		LowerBound: []byte(prefixName), UpperBound: []byte("name0"),
	})
	if err != nil {
		return fmt.Errorf("%w: %v", ErrCatalog, err)
	}
	defer it.Close()
	for it.First(); it.Valid(); it.Next() {
		fn(string(it.Key()[len(prefixName):]), string(it.Value()))
	}
	return it.Error()
}

func (c *catalog) nextInoBase() (uint64, error) {
	v, closer, err := c.db.Get([]byte(keySeqIno))
	if errors.Is(err, pebble.ErrNotFound) {
		return 1, nil
	}
	if err != nil {
		return 0, fmt.Errorf("%w: %v", ErrCatalog, err)
	}
	defer closer.Close()
	return binary.BigEndian.Uint64(v), nil
}

// txn collects the writes of one change; commit applies them atomically
// and durably.
type txn struct {
	b *pebble.Batch
}

func (c *catalog) begin() *txn { return &txn{b: c.db.NewBatch()} }

func (t *txn) putImage(im *Image) {
	v, err := json.Marshal(im)
	if err != nil {
		panic(err) // Image always marshals
	}
	_ = t.b.Set([]byte(prefixImage+im.ID), v, nil)
}

func (t *txn) deleteImage(id string) { _ = t.b.Delete([]byte(prefixImage+id), nil) }

func (t *txn) putName(name, id string) { _ = t.b.Set([]byte(prefixName+name), []byte(id), nil) }

func (t *txn) deleteName(name string) { _ = t.b.Delete([]byte(prefixName+name), nil) }

func (t *txn) putSeqIno(next uint64) {
	var v [8]byte
	binary.BigEndian.PutUint64(v[:], next)
	_ = t.b.Set([]byte(keySeqIno), v[:], nil)
}

func (t *txn) commit() error {
	defer t.b.Close()
	if err := t.b.Commit(pebble.Sync); err != nil {
		return fmt.Errorf("%w: commit: %v", ErrCatalog, err)
	}
	return nil
}

// quietLogger drops Pebble's informational messages and keeps errors.
type quietLogger struct{}

func (quietLogger) Infof(string, ...any) {}
func (quietLogger) Errorf(format string, args ...any) {
	logger.Error(fmt.Sprintf("pebble: "+format, args...))
}
func (quietLogger) Fatalf(format string, args ...any) {
	logger.Error(fmt.Sprintf("pebble fatal: "+format, args...))
	panic(fmt.Sprintf(format, args...))
}
