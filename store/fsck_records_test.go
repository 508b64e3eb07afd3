package store

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// rawCommit writes to the catalog behind the store's back, as a bug or a
// damaged disk might.
func rawCommit(t *testing.T, s *Store, fn func(t *txn)) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	tx := s.cat.begin()
	fn(tx)
	require.NoError(t, tx.commit())
}

// TestCheckRecordsAndIndex: records whose status and properties disagree,
// inode ranges that collide, and a property index that disagrees with
// the records are reported; --repair fixes what it can without losing
// data, and the rest stays reported.
func TestCheckRecordsAndIndex(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	noSum, _ := s.Create(alice, "active-without-checksum")
	require.NoError(t, upload(t, s, alice, noSum.ID, fixedVHD(t, 1<<20), 1<<20))
	stale, _ := s.Create(alice, "queued-with-checksum")
	reason, _ := s.Create(alice, "active-with-kill-reason")
	require.NoError(t, upload(t, s, alice, reason.ID, fixedVHD(t, 1<<20), 1<<20))
	indexed, _ := s.Create(alice, "indexed")
	require.NoError(t, s.SetProperty(alice, indexed.ID, "os_distro", "superos", SetAny))

	rawCommit(t, s, func(tx *txn) {
		a := s.images[noSum.ID].clone()
		a.Checksum = ""
		tx.putImage(a) // the index keeps the old checksum: also an index problem
		q := s.images[stale.ID].clone()
		q.Checksum, q.Size = "0123456789abcdef0123456789abcdef", 4096
		tx.putImage(q)
		r := s.images[reason.ID].clone()
		setExtra(r, KeyKillReason, "left over")
		tx.putImage(r)
		tx.put(entry("os_distro", "ghost", indexed.ID), nil)
		tx.putSeqIno(1) // behind every image's range
	})
	require.NoError(t, s.Close())

	r, err := Check(dir, CheckOptions{})
	require.NoError(t, err)
	assert.ElementsMatch(t, []string{ProblemRecord, ProblemStaleHashes, ProblemKillReason, ProblemInode, ProblemPropertyIndex}, kinds(r), "%v", r.Problems)
	assert.False(t, r.OK())

	r, err = Check(dir, CheckOptions{Repair: true})
	require.NoError(t, err)
	for _, p := range r.Problems {
		assert.Equal(t, p.Kind != ProblemRecord, p.Repaired, "%s", p)
	}

	r, err = Check(dir, CheckOptions{VerifyData: true})
	require.NoError(t, err)
	assert.Equal(t, []string{ProblemRecord}, kinds(r), "only the record without a checksum remains: %v", r.Problems)

	s = openStore(t, dir)
	defer s.Close()
	require.NoError(t, s.CheckIndex())
	q := s.Get(stale.ID)
	_, has := q.Property(KeyChecksum)
	assert.False(t, has, "stale checksum cleared")
	assert.NotContains(t, s.Get(reason.ID).Extra, KeyKillReason)
	next, err := s.Create(alice, "after-repair")
	require.NoError(t, err)
	for _, im := range s.List() {
		if im.ID != next.ID {
			assert.NotEqual(t, im.InoBase, next.InoBase, "a new image gets a range of its own")
		}
	}
}
