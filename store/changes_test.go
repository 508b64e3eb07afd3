package store

import (
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// changeLog records what OnChange delivers and checks that the hook runs
// with no store lock held (it calls Get, which takes Store.mu).
type changeLog struct {
	s  *Store
	mu sync.Mutex
	cs []Change
}

func (l *changeLog) observe(c Change) {
	l.s.Get(c.ID()) // deadlocks if a store lock were held
	l.mu.Lock()
	defer l.mu.Unlock()
	l.cs = append(l.cs, c)
}

// take returns the changes delivered since the last take.
func (l *changeLog) take() []Change {
	l.mu.Lock()
	defer l.mu.Unlock()
	cs := l.cs
	l.cs = nil
	return cs
}

func TestOnChangeDeliversBeforeReturn(t *testing.T) {
	s := newStore(t)
	log := &changeLog{s: s}
	s.OnChange(log.observe)

	im, err := s.Create(alice, "img")
	require.NoError(t, err)
	cs := log.take()
	require.Len(t, cs, 1)
	assert.Nil(t, cs[0].Old)
	assert.Equal(t, im, cs[0].New)

	require.NoError(t, s.SetProperty(alice, im.ID, "os_distro", "ubuntu", SetAny))
	cs = log.take()
	require.Len(t, cs, 1)
	assert.Equal(t, im, cs[0].Old)
	v, _ := cs[0].New.Property("os_distro")
	assert.Equal(t, "ubuntu", v)

	require.NoError(t, s.RenameProperty(alice, im.ID, "os_distro", "os_version", RenameReplace))
	cs = log.take()
	require.Len(t, cs, 1)
	_, had := cs[0].New.Property("os_distro")
	assert.False(t, had)

	require.NoError(t, s.RemoveProperty(alice, im.ID, "os_version"))
	assert.Len(t, log.take(), 1)

	require.NoError(t, s.Rename(alice, im.ID, "img2"))
	cs = log.take()
	require.Len(t, cs, 1)
	assert.Equal(t, "img", cs[0].Old.Name)
	assert.Equal(t, "img2", cs[0].New.Name)

	// A refused change delivers nothing.
	require.Error(t, s.SetProperty(bob, im.ID, "os_distro", "x", SetAny))
	assert.Empty(t, log.take())

	// An upload: the first write makes it saving, the seal active; each
	// is delivered by the call that made it.
	data := fixedVHD(t, 1<<20)
	u, err := s.OpenWrite(alice, im.ID, true)
	require.NoError(t, err)
	assert.Empty(t, log.take(), "opening changes no record")
	_, err = u.WriteAt(data[:4096], 0)
	require.NoError(t, err)
	cs = log.take()
	require.Len(t, cs, 1)
	assert.Equal(t, StatusSaving, cs[0].New.Status)
	_, err = u.WriteAt(data[4096:], 4096)
	require.NoError(t, err)
	assert.Empty(t, log.take(), "later writes change no record")
	require.NoError(t, s.CloseWriter(u))
	cs = log.take()
	require.Len(t, cs, 1)
	assert.Equal(t, StatusActive, cs[0].New.Status)
	require.NoError(t, s.EndWriter(u))

	require.NoError(t, s.Delete(alice, im.ID))
	cs = log.take()
	require.Len(t, cs, 1)
	assert.Equal(t, im.ID, cs[0].Old.ID)
	assert.Nil(t, cs[0].New)

	// A refused upload: killed, delivered by the CloseWriter that refused it.
	bad, err := s.Create(alice, "bad")
	require.NoError(t, err)
	log.take()
	require.Error(t, upload(t, s, alice, bad.ID, []byte("not a VHD"), 512))
	cs = log.take()
	require.NotEmpty(t, cs)
	assert.Equal(t, StatusKilled, cs[len(cs)-1].New.Status)
}

// TestOnChangeConcurrent: with many goroutines changing records at once,
// every change is delivered exactly once, and each goroutine's own change
// has been delivered when its call returns.
func TestOnChangeConcurrent(t *testing.T) {
	s := newStore(t)
	im, err := s.Create(alice, "img")
	require.NoError(t, err)
	var mu sync.Mutex
	seen := map[string]int{}
	s.OnChange(func(c Change) {
		v, _ := c.New.Property("k")
		mu.Lock()
		seen[v]++
		mu.Unlock()
	})
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 20 {
				v := string(rune('a'+g)) + string(rune('a'+i))
				if !assert.NoError(t, s.SetProperty(alice, im.ID, "k", v, SetAny)) {
					return
				}
				mu.Lock()
				n := seen[v]
				mu.Unlock()
				assert.Equal(t, 1, n, "change %s delivered before SetProperty returned", v)
			}
		}()
	}
	wg.Wait()
	assert.Len(t, seen, 8*20)
}
