package store

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"time"
)

// The snapshot of a shared catalog: STORE/catalog-snapshot, this host's
// view of the catalog (every record with its ModRev, the upload keys,
// seq/ino) as complete at one etcd revision, written when the store
// closes. Open loads it instead of listing the catalog, then watches the
// catalog from its revision + 1 until it has seen its own host claim
// (watch.go: catchUp), so the view it serves is as current as a fresh
// list's. It is a cache: Open lists the catalog instead whenever the
// snapshot is missing, unreadable, fails its checksum, belongs to another
// catalog (Identity: etcd cluster and namespace), holds another catalog
// id than meta/catalog-id (a catalog recreated under the same cluster id
// and namespace: a recreated etcd cluster, a namespace deleted; see
// Store.catalogID), is ahead of the catalog's revision, or the watch
// reports its revision compacted.
//
// Layout (integers are varints, as encoding/binary's):
//
//	snapshotMagic
//	identity (uvarint length + bytes), catalog id (likewise), rev,
//	nextIno (uvarint), seqRev
//	count of records (uvarint), then per record: ModRev, length, the
//	record's fields (appendImage)
//	count of upload keys (uvarint), then per key: id, ModRev, host
//	SHA-256 of everything above (32 bytes)
//
// The state written may hold this host's own commits made after rev
// (published before the watch reported them): replaying every event
// after rev converges all the same, since an event is applied only when
// its ModRev is above the published one's (applyEvent).
const (
	snapshotName  = "catalog-snapshot"
	snapshotMagic = "imagefs catalog snapshot 4\n" // 1: no catalog id; 2: no disk and container formats; 3: no project owner
	// snapshotMaxRecord bounds one record's length in a snapshot (a
	// record is at most MaxRecordBytes plus imagefs's own few hundred
	// bytes): a corrupt length is refused before it is allocated.
	snapshotMaxRecord = 2 * MaxRecordBytes
)

// snapshot is a shared catalog's state at revision rev.
type snapshot struct {
	identity string
	// catalogID is meta/catalog-id when the view was taken.
	catalogID string
	rev       int64
	nextIno   uint64
	seqRev    int64
	images    []*Image // with rev set
	uploads   map[string]uploadKey
}

// errSnapshot: the snapshot file is malformed (truncated, bad checksum,
// a record that does not decode).
var errSnapshot = errors.New("catalog snapshot corrupt")

// snapshotPath is STORE/catalog-snapshot.
func (s *Store) snapshotPath() string { return filepath.Join(s.dir, snapshotName) }

// writeSnapshot writes sn to path atomically (a temporary file, fsynced,
// renamed over path, the directory fsynced). The records are encoded by
// up to GOMAXPROCS workers. Errors: the filesystem's.
func writeSnapshot(path string, sn *snapshot) (err error) {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, modeFile)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	h := sha256.New()
	w := bufio.NewWriterSize(io.MultiWriter(f, h), 1<<20)
	var buf []byte
	buf = append(buf, snapshotMagic...)
	buf = appendString(buf, sn.identity)
	buf = appendString(buf, sn.catalogID)
	buf = binary.AppendVarint(buf, sn.rev)
	buf = binary.AppendUvarint(buf, sn.nextIno)
	buf = binary.AppendVarint(buf, sn.seqRev)
	buf = binary.AppendUvarint(buf, uint64(len(sn.images)))
	if _, err := w.Write(buf); err != nil {
		return err
	}
	if err := encodeRecords(w, sn.images); err != nil {
		return err
	}
	buf = binary.AppendUvarint(buf[:0], uint64(len(sn.uploads)))
	for id, k := range sn.uploads {
		buf = appendString(buf, id)
		buf = binary.AppendVarint(buf, k.rev)
		buf = appendString(buf, k.host)
	}
	if _, err := w.Write(buf); err != nil {
		return err
	}
	if err := w.Flush(); err != nil {
		return err
	}
	if _, err := f.Write(h.Sum(nil)); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

func appendString(b []byte, s string) []byte {
	return append(binary.AppendUvarint(b, uint64(len(s))), s...)
}

// snapshotChunk is how many records one worker encodes or decodes at a
// time.
const snapshotChunk = 1024

// encodeRecords writes each image's frame (ModRev, length, JSON) in
// order; chunks of records are encoded in parallel.
func encodeRecords(w io.Writer, images []*Image) error {
	n := (len(images) + snapshotChunk - 1) / snapshotChunk
	out := make([]chan []byte, n)
	for i := range out {
		out[i] = make(chan []byte, 1)
	}
	next := make(chan int, n)
	for i := range n {
		next <- i
	}
	close(next)
	var wg sync.WaitGroup
	for range min(runtime.GOMAXPROCS(0), max(n, 1)) {
		wg.Go(func() {
			for i := range next {
				var b []byte
				for _, im := range images[i*snapshotChunk : min((i+1)*snapshotChunk, len(images))] {
					b = binary.AppendVarint(b, im.rev)
					n := len(b)
					b = binary.AppendUvarint(b, 0) // the length, set below
					b = appendImage(b, im)
					b = fixLength(b, n)
				}
				out[i] <- b
			}
		})
	}
	var err error
	for i := range n {
		b := <-out[i]
		if err == nil {
			_, err = w.Write(b)
		}
	}
	wg.Wait()
	return err
}

// readSnapshot reads the snapshot at path. Errors: the filesystem's
// (os.ErrNotExist when there is none), errSnapshot. The records are
// decoded by up to GOMAXPROCS workers while the file is read; the
// checksum is verified once all of it is read, so a corrupt file costs
// its read and is then refused whole.
func readSnapshot(path string) (*snapshot, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	h := sha256.New()
	r := &snapReader{r: bufio.NewReaderSize(f, 1<<20), h: h}
	sn, err := r.read()
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", errSnapshot, path, err)
	}
	sum := h.Sum(nil)
	var got [sha256.Size]byte
	if _, err := io.ReadFull(r.r, got[:]); err != nil {
		return nil, fmt.Errorf("%w: %s: checksum: %v", errSnapshot, path, err)
	}
	if !bytes.Equal(sum, got[:]) {
		return nil, fmt.Errorf("%w: %s: checksum mismatch", errSnapshot, path)
	}
	if _, err := r.r.ReadByte(); err != io.EOF {
		return nil, fmt.Errorf("%w: %s: data after the checksum", errSnapshot, path)
	}
	return sn, nil
}

// snapReader reads a snapshot's fields, hashing every byte it reads.
type snapReader struct {
	r *bufio.Reader
	h hash.Hash
	b [1]byte
}

func (r *snapReader) ReadByte() (byte, error) {
	c, err := r.r.ReadByte()
	if err == nil {
		r.b[0] = c
		r.h.Write(r.b[:])
	}
	return c, err
}

func (r *snapReader) full(b []byte) error {
	if _, err := io.ReadFull(r.r, b); err != nil {
		return err
	}
	r.h.Write(b)
	return nil
}

func (r *snapReader) uvarint() (uint64, error) { return binary.ReadUvarint(r) }
func (r *snapReader) varint() (int64, error)   { return binary.ReadVarint(r) }

// bytes reads a length-prefixed field of at most limit bytes into a new
// slice.
func (r *snapReader) bytes(limit uint64) ([]byte, error) {
	n, err := r.uvarint()
	if err != nil {
		return nil, err
	}
	if n > limit {
		return nil, fmt.Errorf("field of %d bytes, limit %d", n, limit)
	}
	b := make([]byte, n)
	return b, r.full(b)
}

func (r *snapReader) read() (*snapshot, error) {
	magic := make([]byte, len(snapshotMagic))
	if err := r.full(magic); err != nil || string(magic) != snapshotMagic {
		return nil, errors.New("not an imagefs catalog snapshot (or of another version)")
	}
	sn := &snapshot{}
	id, err := r.bytes(4096)
	if err != nil {
		return nil, err
	}
	sn.identity = string(id)
	cid, err := r.bytes(1024)
	if err != nil {
		return nil, err
	}
	sn.catalogID = string(cid)
	if sn.rev, err = r.varint(); err != nil {
		return nil, err
	}
	if sn.nextIno, err = r.uvarint(); err != nil {
		return nil, err
	}
	if sn.seqRev, err = r.varint(); err != nil {
		return nil, err
	}
	n, err := r.uvarint()
	if err != nil {
		return nil, err
	}
	if sn.images, err = r.records(n); err != nil {
		return nil, err
	}
	nu, err := r.uvarint()
	if err != nil {
		return nil, err
	}
	sn.uploads = map[string]uploadKey{}
	for range nu {
		id, err := r.bytes(1024)
		if err != nil {
			return nil, err
		}
		rev, err := r.varint()
		if err != nil {
			return nil, err
		}
		host, err := r.bytes(1024)
		if err != nil {
			return nil, err
		}
		sn.uploads[string(id)] = uploadKey{rev: rev, host: string(host)}
	}
	return sn, nil
}

// records reads n record frames, decoding chunks of them in parallel
// while the next are read.
func (r *snapReader) records(n uint64) ([]*Image, error) {
	type chunk struct {
		raw  [][]byte
		revs []int64
		out  []*Image
		err  error
	}
	work := make(chan *chunk, 4)
	var wg sync.WaitGroup
	for range runtime.GOMAXPROCS(0) {
		wg.Go(func() {
			for c := range work {
				c.out = make([]*Image, len(c.raw))
				for i, v := range c.raw {
					im, err := decodeImage(v)
					if err != nil {
						c.err = fmt.Errorf("record %d: %v", i, err)
						break
					}
					im.rev = c.revs[i]
					c.out[i] = im
				}
				c.raw = nil
			}
		})
	}
	var chunks []*chunk
	var err error
	for read := uint64(0); read < n && err == nil; {
		c := &chunk{}
		for ; read < n && len(c.raw) < snapshotChunk; read++ {
			var rev int64
			if rev, err = r.varint(); err != nil {
				break
			}
			var v []byte
			if v, err = r.bytes(snapshotMaxRecord); err != nil {
				break
			}
			c.raw, c.revs = append(c.raw, v), append(c.revs, rev)
		}
		chunks = append(chunks, c)
		work <- c
	}
	close(work)
	wg.Wait()
	if err != nil {
		return nil, err
	}
	out := make([]*Image, 0, n)
	for _, c := range chunks {
		if c.err != nil {
			return nil, c.err
		}
		out = append(out, c.out...)
	}
	return out, nil
}

// fixLength rewrites the one-byte placeholder length at b[n] as the
// uvarint length of b[n+1:], moving the record when that takes more
// bytes.
func fixLength(b []byte, n int) []byte {
	rec := len(b) - n - 1
	var l [binary.MaxVarintLen64]byte
	k := binary.PutUvarint(l[:], uint64(rec))
	if k > 1 {
		b = append(b, l[:k-1]...) // room
		copy(b[n+k:], b[n+1:n+1+rec])
	}
	copy(b[n:], l[:k])
	return b
}

// appendImage appends im's fields (every field of Image but rev) in a
// fixed order: strings as uvarint length and bytes, integers as
// varints, times as time.MarshalBinary (instant and zone offset), maps
// as a count and their pairs. decodeImage reads them back; a test
// checks that every field of Image round-trips.
func appendImage(b []byte, im *Image) []byte {
	b = appendString(b, im.ID)
	b = binary.AppendUvarint(b, im.InoBase)
	b = appendString(b, im.Name)
	b = appendString(b, string(im.Status))
	b = binary.AppendUvarint(b, uint64(im.Owner))
	b = binary.AppendUvarint(b, uint64(im.GID))
	b = appendString(b, im.OwnerProject)
	b = appendString(b, string(im.Visibility))
	if im.Protected {
		b = append(b, 1)
	} else {
		b = append(b, 0)
	}
	b = binary.AppendVarint(b, im.MinRAM)
	b = binary.AppendVarint(b, im.MinDisk)
	b = appendString(b, im.Checksum)
	b = appendString(b, im.OSHashAlgo)
	b = appendString(b, im.OSHashValue)
	b = binary.AppendVarint(b, im.Size)
	b = binary.AppendVarint(b, im.VirtualSize)
	b = appendString(b, im.DiskFormat)
	b = appendString(b, im.ContainerFormat)
	for _, t := range []time.Time{im.CreatedAt, im.UpdatedAt} {
		tb, err := t.MarshalBinary()
		if err != nil {
			panic(err) // a zone offset that is not whole minutes: never from the catalog
		}
		b = appendString(b, string(tb))
	}
	b = binary.AppendUvarint(b, uint64(len(im.Extra)))
	for k, v := range im.Extra {
		b = appendString(appendString(b, k), v)
	}
	b = binary.AppendUvarint(b, uint64(len(im.Slots)))
	for k, v := range im.Slots {
		b = binary.AppendUvarint(appendString(b, k), uint64(v))
	}
	return binary.AppendUvarint(b, uint64(im.NextSlot))
}

// decodeImage reads a record appendImage wrote. The strings share one
// copy of rec (substrings of it), so a record costs one allocation for
// its text. Errors: a truncated or malformed record.
func decodeImage(rec []byte) (*Image, error) {
	d := recDecoder{s: string(rec)}
	im := &Image{}
	im.ID = d.str()
	im.InoBase = d.uvarint()
	im.Name = d.str()
	im.Status = Status(d.str())
	im.Owner = uint32(d.uvarint())
	im.GID = uint32(d.uvarint())
	im.OwnerProject = d.str()
	im.Visibility = Visibility(d.str())
	im.Protected = d.byte() == 1
	im.MinRAM = d.varint()
	im.MinDisk = d.varint()
	im.Checksum = d.str()
	im.OSHashAlgo = d.str()
	im.OSHashValue = d.str()
	im.Size = d.varint()
	im.VirtualSize = d.varint()
	im.DiskFormat = d.str()
	im.ContainerFormat = d.str()
	for _, t := range []*time.Time{&im.CreatedAt, &im.UpdatedAt} {
		if err := t.UnmarshalBinary([]byte(d.str())); err != nil && d.err == nil {
			d.err = err
		}
	}
	if n := d.count(); n > 0 {
		im.Extra = make(map[string]string, n)
		for range n {
			k := d.str()
			im.Extra[k] = d.str()
		}
	}
	if n := d.count(); n > 0 {
		im.Slots = make(map[string]uint32, n)
		for range n {
			k := d.str()
			im.Slots[k] = uint32(d.uvarint())
		}
	}
	im.NextSlot = uint32(d.uvarint())
	switch {
	case d.err != nil:
		return nil, d.err
	case len(d.s) != 0:
		return nil, errors.New("bytes after the record")
	case im.ID == "":
		return nil, errors.New("no id")
	}
	return im, nil
}

// recDecoder reads appendImage's fields from s; the first error sticks
// (and every later read returns zero).
type recDecoder struct {
	s   string
	err error
}

var errRecord = errors.New("record truncated or malformed")

func (d *recDecoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	var v uint64
	for i := 0; i < len(d.s) && i < binary.MaxVarintLen64; i++ {
		c := d.s[i]
		v |= uint64(c&0x7f) << (7 * i)
		if c < 0x80 {
			d.s = d.s[i+1:]
			return v
		}
	}
	d.err = errRecord
	return 0
}

func (d *recDecoder) varint() int64 {
	u := d.uvarint()
	return int64(u>>1) ^ -int64(u&1)
}

func (d *recDecoder) byte() byte {
	if d.err != nil || len(d.s) == 0 {
		d.err = errRecord
		return 0
	}
	c := d.s[0]
	d.s = d.s[1:]
	return c
}

func (d *recDecoder) str() string {
	n := d.uvarint()
	if d.err != nil || n > uint64(len(d.s)) {
		d.err = errRecord
		return ""
	}
	v := d.s[:n]
	d.s = d.s[n:]
	return v
}

// count reads a map's length, refusing one the rest of the record
// cannot hold (two bytes per pair at least).
func (d *recDecoder) count() int {
	n := d.uvarint()
	if d.err == nil && n > uint64(len(d.s))/2 {
		d.err = errRecord
		return 0
	}
	return int(n)
}
