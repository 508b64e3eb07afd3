package swiftdata

import (
	"os"
	"slices"
	"time"

	"golang.org/x/sys/unix"

	"github.com/imagefs/imagefs/store"
)

// Copies of deleted images (store.DataCache). A copy whose image the
// catalog deleted (Remove on the deleting host, Evict on every other)
// leaves the cache once no file of this process has it open: at once
// when none has, else at the last close, so that a reader that had the
// image open reads it to the end and the cache's byte count stays what
// the disk holds. A download of it in flight finishes first (its openers
// get the copy, and it goes at their last close). Those copies are
// doomed; the reaper removes each when it is no longer open, pinned by
// an Open in progress, or downloading.
//
// The reaper wakes at every close of a file in the cache directory
// (inotify IN_CLOSE_NOWRITE on CACHE), or every closePoll where inotify
// is unavailable, and checks the doomed copies against /proc/self/fd.

// closePoll is how often the doomed copies are checked when inotify is
// unavailable.
const closePoll = time.Second

var _ store.DataCache = (*Backend)(nil)

// CachedIDs returns the ids of the images this host has a copy of.
func (b *Backend) CachedIDs() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	ids := make([]string, 0, len(b.entries))
	for id := range b.entries {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

// Evict removes this host's copy of id, an image the catalog no longer
// has: at once when no file of this process has it open, else at its
// last close (a download in flight finishes first). Nothing happens when
// this host has no copy.
func (b *Backend) Evict(id string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.doomLocked(id, "deleted from the catalog")
}

// doomLocked marks the copy of id (or its download in flight) to leave
// the cache at its last close, and removes it now if nothing holds it.
// Must hold b.mu.
func (b *Backend) doomLocked(id, why string) {
	if b.entries[id] == nil && b.fetching[id] == nil {
		os.Remove(b.cachePath(id)) // none known: none should be there
		return
	}
	b.doomed[id] = why
	b.reapLocked(openFiles())
	if _, held := b.doomed[id]; held {
		b.log.Info("copy of a deleted image kept in the cache until its last close", "id", id, "why", why)
	}
}

// reapLocked removes the doomed copies that nothing holds: no file of
// this process open on it (open, from openFiles), no Open in progress,
// no download. Must hold b.mu.
func (b *Backend) reapLocked(open map[string]bool) {
	for id, why := range b.doomed {
		if b.fetching[id] != nil || b.pins[id] > 0 || open[b.cachePath(id)] {
			continue
		}
		size := int64(0)
		if e := b.entries[id]; e != nil {
			size = e.size
		}
		b.dropLocked(id)
		b.log.Info("copy of a deleted image removed from the cache", "id", id, "why", why, "size", size, "cache_bytes", b.bytes)
	}
}

// pin marks an Open of id in progress: its copy is not reaped until
// unpin.
func (b *Backend) pin(id string) {
	b.mu.Lock()
	b.pins[id]++
	b.mu.Unlock()
}

// unpin ends an Open of id; a doomed copy is checked again (the Open
// failed, or its file is open now and goes at its close).
func (b *Backend) unpin(id string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.pins[id]--; b.pins[id] <= 0 {
		delete(b.pins, id)
	}
	if _, ok := b.doomed[id]; ok {
		b.reapLocked(openFiles())
	}
}

// startReaper starts the goroutines that remove doomed copies at their
// last close; Close stops them.
func (b *Backend) startReaper() {
	b.reapStop = make(chan struct{})
	kick := make(chan struct{}, 1)
	var tick <-chan time.Time
	if f, err := closeEvents(b.cfg.CacheDir); err != nil {
		b.log.Warn("no inotify on the cache directory: copies of deleted images held open are checked every second", "err", err)
		t := time.NewTicker(closePoll)
		tick = t.C
		go func() { <-b.reapStop; t.Stop() }()
	} else {
		b.closes = f
		go func() {
			buf := make([]byte, 64<<10)
			for {
				// The events are not read: any close (or an overflow)
				// is a reason to check.
				if _, err := f.Read(buf); err != nil {
					return // closed by Close
				}
				select {
				case kick <- struct{}{}:
				default:
				}
			}
		}()
	}
	go func() {
		for {
			select {
			case <-b.reapStop:
				return
			case <-kick:
			case <-tick:
			}
			b.mu.Lock()
			if len(b.doomed) > 0 {
				b.reapLocked(openFiles())
			}
			b.mu.Unlock()
		}
	}()
}

// stopReaper stops the reaper's goroutines.
func (b *Backend) stopReaper() {
	close(b.reapStop)
	if b.closes != nil {
		b.closes.Close()
	}
}

// closeEvents returns an inotify file that reports every close of a file
// opened read-only in dir (nonblocking: its Read waits in the runtime's
// poller and returns when the file is closed).
func closeEvents(dir string) (*os.File, error) {
	fd, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
	if err != nil {
		return nil, os.NewSyscallError("inotify_init1", err)
	}
	if _, err := unix.InotifyAddWatch(fd, dir, unix.IN_CLOSE_NOWRITE); err != nil {
		unix.Close(fd)
		return nil, os.NewSyscallError("inotify_add_watch", err)
	}
	return os.NewFile(uintptr(fd), "inotify:"+dir), nil
}
