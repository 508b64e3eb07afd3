package store

import (
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// returnsWhileLocked runs f while another goroutine holds s.mu (a writer
// in its commit) and reports whether f returned without waiting for it.
func returnsWhileLocked(s *Store, f func()) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	done := make(chan struct{})
	go func() { f(); close(done) }()
	select {
	case <-done:
		return true
	case <-time.After(2 * time.Second):
		return false
	}
}

// TestProvisionalReadsTakeNoWriterLock: Provisional, DataAlias and the
// provisional check of OpenReadBy (GETATTR, LOOKUP, READDIR, open) do not
// wait for Store.mu, and the exit of a process that is not a watched
// writer does not take it either.
func TestProvisionalReadsTakeNoWriterLock(t *testing.T) {
	s := newStore(t)
	im := queued(t, s, alice, "a")
	me := uint32(os.Getpid()) // a live process: the seal stays provisional
	w := Writer{PID: me, ReadWrite: true}
	u, err := s.CreateFile(alice, im.ID, "disk.vhd", w)
	require.NoError(t, err)
	writeAt(t, u, fixedVHD(t, 1<<20), 0)
	require.NoError(t, closeWrite(s, u))
	require.True(t, s.Provisional(im.ID))

	var prov, alias bool
	assert.True(t, returnsWhileLocked(s, func() { prov = s.Provisional(im.ID) }), "Provisional waited for Store.mu")
	assert.True(t, prov)
	assert.True(t, returnsWhileLocked(s, func() { alias = s.DataAlias(im.ID, "disk.vhd") }), "DataAlias waited for Store.mu")
	assert.True(t, alias)
	assert.True(t, returnsWhileLocked(s, func() {
		_, err = s.OpenReadBy(alice, im.ID, func() uint32 { return me + 1 })
	}), "OpenReadBy's provisional check waited for Store.mu")
	assert.ErrorIs(t, err, ErrPermission)
	assert.True(t, returnsWhileLocked(s, func() { s.writerExited(me+1, 1<<8) }), "an unwatched process's exit waited for Store.mu")
}

// TestCloseStopsExitWatcher: Close returns after the process events
// listener has ended (it owns its socket), not while it may still
// receive or commit.
func TestCloseStopsExitWatcher(t *testing.T) {
	s := openStore(t, t.TempDir())
	im := queued(t, s, alice, "a")
	w := Writer{PID: uint32(os.Getpid()), ReadWrite: true}
	u, err := s.OpenWriteBy(alice, im.ID, true, w)
	require.NoError(t, err)
	writeAt(t, u, fixedVHD(t, 1<<20), 0)
	require.NoError(t, closeWrite(s, u))
	require.True(t, s.Provisional(im.ID))
	if !s.ww.running.Load() {
		t.Skip("no process events here (needs CAP_NET_ADMIN)")
	}
	listening := func() bool {
		buf := make([]byte, 1<<20)
		return strings.Contains(string(buf[:runtime.Stack(buf, true)]), "(*Store).watchWriter.func")
	}
	require.True(t, listening())
	require.NoError(t, s.Close())
	assert.False(t, listening(), "the listener still runs after Close")
}
