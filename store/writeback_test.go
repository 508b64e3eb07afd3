//go:build linux

package store

import (
	"crypto/md5"
	"encoding/hex"
	"os"
	"path/filepath"
	"testing"
	"unsafe"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// TestWriteBehind: an in-order upload of several write-behind windows
// seals with the right checksum and bytes, and leaves the data behind the
// writer out of the page cache (the first window stays).
func TestWriteBehind(t *testing.T) {
	s := newStore(t)
	im, err := s.Create(Root, "big")
	require.NoError(t, err)
	data := fixedVHD(t, 6*writebackWindow)
	require.NoError(t, upload(t, s, Root, im.ID, data, 1<<20))
	sum := md5.Sum(data)
	require.Equal(t, hex.EncodeToString(sum[:]), s.Get(im.ID).Checksum)

	path := filepath.Join(s.Dir(), "data", im.ID+".vhd")
	got, err := os.ReadFile(path)
	require.NoError(t, err)
	require.Equal(t, data, got)

	// Reading it back above cached it again: check residency on a fresh
	// upload of the same bytes before anything reads it.
	im2, err := s.Create(Root, "big2")
	require.NoError(t, err)
	require.NoError(t, upload(t, s, Root, im2.ID, data, 1<<20))
	f, err := os.Open(filepath.Join(s.Dir(), "data", im2.ID+".vhd"))
	require.NoError(t, err)
	defer f.Close()
	m, err := unix.Mmap(int(f.Fd()), 0, len(data), unix.PROT_READ, unix.MAP_SHARED)
	require.NoError(t, err)
	defer unix.Munmap(m)
	vec := make([]byte, (len(data)+os.Getpagesize()-1)/os.Getpagesize())
	_, _, errno := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&m[0])), uintptr(len(m)), uintptr(unsafe.Pointer(&vec[0])))
	require.Zero(t, errno, "mincore")
	resident := func(from, to int) (n int) {
		for _, v := range vec[from/os.Getpagesize() : to/os.Getpagesize()] {
			n += int(v & 1)
		}
		return n
	}
	head := resident(0, writebackWindow)
	behind := resident(writebackWindow, 3*writebackWindow)
	t.Logf("resident pages: first window %d, windows 2-3 %d of %d", head, behind, 2*writebackWindow/os.Getpagesize())
	require.Greater(t, head, 0, "the first window stays cached")
	require.Zero(t, behind, "data two windows behind the writer is dropped from the page cache")
}
