package store

import (
	"errors"
	"path/filepath"
	"testing"

	"github.com/google/uuid"

	"github.com/imagefs/imagefs/store/kv"
	"github.com/stretchr/testify/require"
)

// stageRaw creates a raw image of c in s and stages data into it.
func stageRaw(t *testing.T, s *Store, c Caller, name string, data []byte) string {
	t.Helper()
	im, err := s.CreateWithID(c, uuid.NewString(), name, []KeyValue{{KeyDiskFormat, DiskFormatRaw}, {KeyContainerFormat, ContainerFormatBare}})
	require.NoError(t, err)
	u, err := s.OpenStage(c, im.ID)
	require.NoError(t, err)
	_, err = u.WriteAt(data, 0)
	require.NoError(t, err)
	require.NoError(t, s.EndStage(u))
	require.Equal(t, StatusUploading, s.Get(im.ID).Status)
	return im.ID
}

// importNow imports image id of s as c and waits for the seal's outcome.
func importNow(t *testing.T, s *Store, c Caller, id string) error {
	t.Helper()
	done := make(chan error, 1)
	if err := s.Import(c, id, ImportTask{ID: "t-" + id, Owner: "p"}, func(err error) { done <- err }); err != nil {
		return err
	}
	return <-done
}

// TestImportRemountDropsStaged: a store closed (or killed) with staged
// data opens with the image queued again, its staging file gone, and its
// task (of an import in flight) failed; never uploading or importing.
func TestImportRemountDropsStaged(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{})
	require.NoError(t, err)
	id := stageRaw(t, s, alice, "staged", []byte("some raw bytes"))
	require.NoError(t, s.Close())
	s, err = Open(dir, Options{})
	require.NoError(t, err)
	defer s.Close()
	im := s.Get(id)
	require.Equal(t, StatusQueued, im.Status)
	require.NotContains(t, im.Extra, KeyStageHost)
	left, _ := filepath.Glob(filepath.Join(dir, "staging", "*"))
	require.Empty(t, left)
	// Staged and imported again.
	u, err := s.OpenStage(alice, id)
	require.NoError(t, err)
	_, err = u.WriteAt([]byte("raw"), 0)
	require.NoError(t, err)
	require.NoError(t, s.EndStage(u))
	require.NoError(t, importNow(t, s, alice, id))
	im = s.Get(id)
	require.Equal(t, StatusActive, im.Status)
	ts, err := s.ImportTasks(alice, id)
	require.NoError(t, err)
	require.Len(t, ts, 1)
	require.Equal(t, TaskSuccess, ts[0].Status)
	require.False(t, ts[0].ExpiresAt.IsZero())
}

// TestImportSharedHosts: staged data stays on the host that took it:
// another host of the shared catalog sees the image uploading, refuses
// its import with a message naming the stage's host (409 at the API),
// refuses a cp or rm of its data, and leaves it alone when it opens
// (its reconcile); the stage's host imports it and every host sees it
// active.
func TestImportSharedHosts(t *testing.T) {
	a, b, _, _, _ := twoHosts(t)
	id := stageRaw(t, a, alice, "shared-staged", []byte("bytes staged on host-a"))
	within10s(t, "host-b sees the image uploading", func() bool { im := b.Get(id); return im != nil && im.Status == StatusUploading })
	require.Equal(t, "host-a", b.Get(id).Extra[KeyStageHost])
	err := b.Import(alice, id, ImportTask{ID: "x"}, nil)
	require.ErrorIs(t, err, ErrBusy)
	require.Contains(t, err.Error(), "host-a")
	_, err = b.OpenWrite(alice, id, true)
	require.ErrorIs(t, err, ErrBusy)
	require.ErrorIs(t, b.DiscardUpload(alice, id), ErrBusy)
	_, err = b.OpenStage(alice, id)
	require.True(t, IsNotQueued(err), "stage on host-b: %v", err)
	// host-b's check (as its reconcile at Open) leaves host-a's stage alone.
	r, err := b.check(CheckOptions{Repair: true, quick: true})
	require.NoError(t, err)
	for _, p := range r.Problems {
		require.NotEqual(t, ProblemStaged, p.Kind, "host-b repaired host-a's stage: %+v", p)
	}
	require.Equal(t, StatusUploading, a.Get(id).Status)
	require.NoError(t, importNow(t, a, alice, id))
	within10s(t, "host-b sees the image active", func() bool { im := b.Get(id); return im != nil && im.Status == StatusActive })
	f, err := b.OpenRead(alice, id)
	require.NoError(t, err)
	f.Close()
}

// TestImportRefusedQueues: a raw import whose bytes are a qcow2 header is
// refused: queued again, staged data gone, task failed with the reason,
// no kill reason.
func TestImportRefusedQueues(t *testing.T) {
	s, err := Open(t.TempDir(), Options{})
	require.NoError(t, err)
	defer s.Close()
	id := stageRaw(t, s, alice, "qcow", append([]byte("QFI\xfb\x00\x00\x00\x03"), make([]byte, 4096)...))
	err = importNow(t, s, alice, id)
	require.True(t, errors.Is(err, ErrRefused), "import: %v", err)
	im := s.Get(id)
	require.Equal(t, StatusQueued, im.Status)
	require.NotContains(t, im.Extra, KeyKillReason)
	ts, _ := s.ImportTasks(alice, id)
	require.Len(t, ts, 1)
	require.Equal(t, TaskFailure, ts[0].Status)
	require.Contains(t, ts[0].Message, "qcow2")
	left, _ := filepath.Glob(filepath.Join(s.Dir(), "staging", "*"))
	require.Empty(t, left)
	// Others may not import (not the owner), nor a queued image.
	require.ErrorIs(t, s.Import(alice, id, ImportTask{}, nil), ErrNotStaged)
}

// TestImportUncommittedSealCompleted: a daemon that stopped after an
// import handed its raw data over and before the seal's commit: the next
// Open completes the seal from the data as a raw disk (the record's
// disk_format), and the task succeeds.
func TestImportUncommittedSealCompleted(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{})
	require.NoError(t, err)
	data := []byte("raw bytes of an import that crashed before its commit")
	id := stageRaw(t, s, alice, "uncommitted", data)
	u := s.CurrentUpload(id)
	s.mu.Lock()
	_, err = s.update(id, kv.Small, func(cur *Image) (*Image, error) {
		next := cur.clone()
		next.Status = StatusImporting
		setTasks(next, []ImportTask{{ID: "t", Status: TaskProcessing}})
		return next, nil
	})
	s.mu.Unlock()
	require.NoError(t, err)
	u.mu.Lock()
	require.NoError(t, s.handOver(u)) // the crash: no commitSeal
	u.mu.Unlock()
	require.NoError(t, s.Close())
	s, err = Open(dir, Options{})
	require.NoError(t, err)
	defer s.Close()
	im := s.Get(id)
	require.Equal(t, StatusActive, im.Status, "%+v", im)
	require.Equal(t, int64(len(data)), im.Size)
	require.NotContains(t, im.Extra, KeyStageHost)
	ts, _ := s.ImportTasks(alice, id)
	require.Len(t, ts, 1)
	require.Equal(t, TaskSuccess, ts[0].Status)
}
