package store

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func kinds(r *CheckReport) []string {
	var out []string
	for _, p := range r.Problems {
		out = append(out, p.Kind)
	}
	return out
}

func TestCheckCleanStore(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	im, _ := s.Create(alice, "img")
	require.NoError(t, upload(t, s, alice, im.ID, fixedVHD(t, 1<<20), 1<<20))
	s.Create(alice, "queued")
	require.NoError(t, s.Close())

	r, err := Check(dir, CheckOptions{VerifyData: true})
	require.NoError(t, err)
	assert.Empty(t, r.Problems)
	assert.True(t, r.OK())
	assert.Equal(t, 2, r.Images)
	assert.Equal(t, 1, r.Sealed)
	assert.Equal(t, 1, r.Verified)
}

func TestCheckFindsAndRepairs(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	good, _ := s.Create(alice, "good")
	require.NoError(t, upload(t, s, alice, good.ID, fixedVHD(t, 1<<20), 1<<20))
	rot, _ := s.Create(alice, "rot")
	require.NoError(t, upload(t, s, alice, rot.ID, fixedVHD(t, 1<<20), 1<<20))
	gone, _ := s.Create(alice, "gone")
	require.NoError(t, upload(t, s, alice, gone.ID, fixedVHD(t, 1<<20), 1<<20))
	inflight, _ := s.Create(alice, "inflight")
	u, err := s.OpenWrite(alice, inflight.ID, false)
	require.NoError(t, err)
	_, err = u.WriteAt([]byte("partial"), 0)
	require.NoError(t, err)
	require.NoError(t, s.Close())

	data := filepath.Join(dir, "data")
	// Bit rot in one image, a missing data file, an orphan, a writable
	// data file and a leftover staging file.
	p := filepath.Join(data, rot.ID+".vhd")
	require.NoError(t, os.Chmod(p, 0o600))
	f, err := os.OpenFile(p, os.O_WRONLY, 0)
	require.NoError(t, err)
	_, err = f.WriteAt([]byte{0xff, 0xfe}, 4096)
	require.NoError(t, err)
	f.Close()
	require.NoError(t, os.Remove(filepath.Join(data, gone.ID+".vhd")))
	require.NoError(t, os.WriteFile(filepath.Join(data, "0a0a0a0a-0000-4000-8000-000000000000.vhd"), []byte("orphan"), 0o400))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "staging", inflight.ID+".1.1"), []byte("partial"), 0o600))

	r, err := Check(dir, CheckOptions{VerifyData: true})
	require.NoError(t, err)
	assert.ElementsMatch(t, []string{ProblemInterrupted, ProblemStaging, ProblemMissingData, ProblemOrphanData, ProblemDataMode, ProblemChecksum}, kinds(r))
	assert.False(t, r.OK())

	r, err = Check(dir, CheckOptions{Repair: true})
	require.NoError(t, err)
	for _, p := range r.Problems {
		want := p.Kind != ProblemMissingData
		assert.Equal(t, want, p.Repaired, "%s", p)
	}
	_, err = os.Stat(filepath.Join(dir, "lost+found", "0a0a0a0a-0000-4000-8000-000000000000.vhd"))
	assert.NoError(t, err, "orphan moved aside, not deleted")

	r, err = Check(dir, CheckOptions{VerifyData: true})
	require.NoError(t, err)
	assert.ElementsMatch(t, []string{ProblemMissingData, ProblemChecksum}, kinds(r), "what cannot be repaired stays reported")

	s = openStore(t, dir)
	defer s.Close()
	assert.Equal(t, StatusKilled, s.Get(inflight.ID).Status)
	assert.Equal(t, StatusActive, s.Get(good.ID).Status)
}

func TestCompleteUncommittedSeal(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	im, _ := s.Create(alice, "img")
	data := fixedVHD(t, 1<<20)
	require.NoError(t, upload(t, s, alice, im.ID, data, 1<<20))
	sealed := s.Get(im.ID)
	// Simulate a crash after the data moved into place but before the
	// record committed: put the record back to saving.
	back := sealed.clone()
	back.Status, back.Checksum, back.OSHashValue, back.Size = StatusSaving, "", "", -1
	s.mu.Lock()
	require.NoError(t, s.publish(back, back.Name))
	s.mu.Unlock()
	require.NoError(t, s.Close())

	r, err := Check(dir, CheckOptions{})
	require.NoError(t, err)
	assert.Equal(t, []string{ProblemUncommitted}, kinds(r))

	s = openStore(t, dir) // the repair at open completes the seal
	defer s.Close()
	got := s.Get(im.ID)
	assert.Equal(t, StatusActive, got.Status)
	assert.Equal(t, sealed.Checksum, got.Checksum)
	assert.Equal(t, sealed.OSHashValue, got.OSHashValue)
}

func TestCheckLockedStore(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	defer s.Close()
	_, err := Check(dir, CheckOptions{})
	assert.ErrorIs(t, err, ErrBusy)
}
