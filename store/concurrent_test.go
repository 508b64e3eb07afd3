package store

import (
	"crypto/md5"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

var stressTime = flag.Duration("stress-time", 2*time.Second, "how long TestConcurrentStore runs")

// TestConcurrentStore runs goroutines against one Store for -stress-time:
// uploads of image.vhd (in order and out of order, valid and refused),
// scratch files renamed onto image.vhd, discarded uploads, property writes
// and removals, renames, deletes, and readers of sealed data by id, all on
// a few names so that they collide. Run it under -race. It checks that no
// call fails with anything but the store's own refusals, that an active
// image's checksum never changes and its data always hashes to it (two
// writers of one image.vhd at once may seal a mix of their bytes, as two
// writers of any file would: a valid VHD, hashed as it is), that
// names stay unique and the property index agrees with the records, and
// that the store checks clean after a restart.
func TestConcurrentStore(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	names := []string{"a", "b", "c", "d"}
	var vhds [][]byte
	for i := range 6 {
		vhds = append(vhds, fixedVHD(t, 64<<10+512*i))
	}
	garbage := make([]byte, 70000)

	// firstSum is the checksum each id had when first seen sealed.
	var firstSum sync.Map
	var failures atomic.Int64
	fail := func(format string, args ...any) {
		if failures.Add(1) <= 20 {
			t.Errorf(format, args...)
		}
	}
	observe := func(im *Image) {
		if im == nil || !im.Status.Sealed() {
			return
		}
		if v, loaded := firstSum.LoadOrStore(im.ID, im.Checksum); loaded && v != im.Checksum {
			fail("image %s sealed as %s is now %s with checksum %s: sealed data changed", im.ID, v, im.Status, im.Checksum)
		}
	}
	// expected reports whether err is one of the store's refusals, which
	// any operation may meet when others change the same image.
	expected := func(err error) bool {
		for _, e := range []error{ErrNotFound, ErrExists, ErrImmutable, ErrRefused, ErrNotPermitted, ErrInvalid, ErrBusy} {
			if errors.Is(err, e) {
				return true
			}
		}
		return err == nil
	}
	check := func(op string, err error) {
		if !expected(err) {
			fail("%s: unexpected error %v", op, err)
		}
	}
	idOf := func(r *rand.Rand) string {
		if im := s.Lookup(names[r.IntN(len(names))]); im != nil {
			return im.ID
		}
		return ""
	}
	write := func(r *rand.Rand, u *Upload, data []byte) error {
		chunk := 4096 << r.IntN(5)
		var offs []int
		for off := 0; off < len(data); off += chunk {
			offs = append(offs, off)
		}
		if r.IntN(4) == 0 { // out of order: the seal hashes in one pass
			r.Shuffle(len(offs), func(i, j int) { offs[i], offs[j] = offs[j], offs[i] })
		}
		for _, off := range offs {
			if _, err := u.WriteAt(data[off:min(off+chunk, len(data))], int64(off)); err != nil {
				return err
			}
		}
		return nil
	}
	payload := func(r *rand.Rand) []byte {
		if r.IntN(5) == 0 {
			return garbage
		}
		return vhds[r.IntN(len(vhds))]
	}

	ops := []func(r *rand.Rand){
		func(r *rand.Rand) { // mkdir
			_, err := s.Create(alice, names[r.IntN(len(names))])
			check("create", err)
		},
		func(r *rand.Rand) { // cp onto image.vhd
			id := idOf(r)
			if id == "" {
				return
			}
			u, err := s.OpenWrite(alice, id, true)
			if check("open write", err); err != nil {
				return
			}
			err = write(r, u, payload(r))
			check("write", err)
			check("flush", s.CloseWriter(u))
			check("release", s.EndWriter(u))
		},
		func(r *rand.Rand) { // rsync: scratch file, then rename onto image.vhd
			id := idOf(r)
			if id == "" {
				return
			}
			name := fmt.Sprintf("tmp%d", r.IntN(3))
			u, err := s.CreateScratch(alice, id, name)
			if check("create scratch", err); err != nil {
				return
			}
			check("write scratch", write(r, u, payload(r)))
			check("release scratch", s.EndWriter(u))
			switch r.IntN(4) {
			case 0:
				check("remove scratch", s.RemoveScratch(alice, id, name))
			case 1:
				check("rename scratch", s.RenameScratch(alice, id, name, "other", RenameReplace))
			default:
				check("rename onto image.vhd", s.RenameScratch(alice, id, name, ImageDataName, RenameReplace))
			}
		},
		func(r *rand.Rand) { // rm image.vhd before it is sealed
			if id := idOf(r); id != "" {
				check("discard", s.DiscardUpload(alice, id))
			}
		},
		func(r *rand.Rand) { // property writes
			id := idOf(r)
			if id == "" {
				return
			}
			key := fmt.Sprintf("k%d", r.IntN(3))
			if r.IntN(3) == 0 {
				check("remove property", s.RemoveProperty(alice, id, key))
				return
			}
			check("set property", s.SetProperty(alice, id, key, fmt.Sprintf("v%d", r.IntN(4)), SetAny))
		},
		func(r *rand.Rand) { // mv
			if id := idOf(r); id != "" {
				check("rename", s.Rename(alice, id, names[r.IntN(len(names))]))
			}
		},
		func(r *rand.Rand) { // rmdir
			if id := idOf(r); id != "" && r.IntN(3) == 0 {
				check("delete", s.Delete(alice, id))
			}
		},
		func(r *rand.Rand) { // a hypervisor reads by-id/<id>/image.vhd
			id := idOf(r)
			im := s.Get(id)
			if im == nil || im.Status != StatusActive {
				return
			}
			observe(im)
			f, err := s.OpenRead(alice, id)
			if errors.Is(err, ErrNotFound) {
				return // deleted meanwhile
			}
			if err != nil || f == nil {
				fail("open active image %s: %v %v", id, f, err)
				return
			}
			defer f.Close()
			h := md5.New()
			if _, err := io.Copy(h, f); err != nil {
				fail("read %s: %v", id, err)
			}
			if got := hex.EncodeToString(h.Sum(nil)); got != im.Checksum {
				fail("read of active image %s hashes to %s, checksum %s: another image's bits?", id, got, im.Checksum)
			}
		},
		func(r *rand.Rand) { // listings and views
			for _, im := range s.List() {
				observe(im)
			}
			_, err := s.ViewImages(alice, "k0", "v1")
			check("view", err)
			_, err = s.ViewKeys(alice, nil)
			check("view keys", err)
		},
	}

	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d (stress-time %s)", seed, *stressTime)
	var wg sync.WaitGroup
	var count atomic.Int64
	deadline := time.Now().Add(*stressTime)
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(seed, uint64(g)))
			for time.Now().Before(deadline) && failures.Load() == 0 {
				ops[r.IntN(len(ops))](r)
				count.Add(1)
			}
		}()
	}
	wg.Wait()
	t.Logf("%d operations", count.Load())

	// Names unique, index equal to the records.
	seen := map[string]bool{}
	for _, im := range s.List() {
		assert.False(t, seen[im.Name], "name %q used twice", im.Name)
		seen[im.Name] = true
		assert.Equal(t, im, s.Lookup(im.Name))
		observe(im)
	}
	require.NoError(t, s.CheckIndex())
	require.NoError(t, s.Close())

	// Uploads still open at Close are interrupted; nothing else is wrong.
	r, err := Check(dir, CheckOptions{VerifyData: true})
	require.NoError(t, err)
	for _, p := range r.Problems {
		assert.Contains(t, []string{ProblemInterrupted}, p.Kind, "%s", p)
	}
	s = openStore(t, dir)
	for _, im := range s.List() {
		observe(im)
		assert.NotEqual(t, StatusSaving, im.Status, "%s", im.Name)
	}
	require.NoError(t, s.Close())
	r, err = Check(dir, CheckOptions{VerifyData: true})
	require.NoError(t, err)
	assert.Empty(t, r.Problems)
	assert.Equal(t, r.Sealed, r.Verified)
}
