package store

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/imagefs/imagefs/store/kv"
)

// Writers that open their file several times (qemu-img convert: create
// and truncate, close; write the VHD's headers, close; open again and
// write the data) would seal a blank disk at the second close. So a seal
// made at the close of a process that opened image.vhd read-write
// (O_RDWR, as disk tools do; cp, dd, rsync and shells open write-only) is
// provisional while that process lives: if the same process opens
// image.vhd for writing again, the seal is undone and the upload goes on
// with the same data, to be sealed again at its next close. While a seal
// is provisional its data is the writer's only: other processes' opens of
// image.vhd are refused (ErrPermission) and by-id/<id>/ does not list it,
// so nobody reads (or boots) a disk that may still be incomplete. A seal
// is final once that process exits or provisionalWindow has passed; the
// writer's later opens for writing are then refused as for any sealed
// image. Where the daemon may listen to process events (root:
// CAP_NET_ADMIN), a writer that exits with a failure status after such a
// seal (qemu-img convert that failed to read its source closes its
// output, then exits 1) deactivates the image with the reason in
// imagefs_deactivate_reason (it cannot be booted; root may reactivate it).

// provisionalWindow is how long a seal made at a read-write opener's
// close stays provisional at most (qemu-img opens again within
// milliseconds), and how long after it that writer's failing exit
// deactivates the image.
const provisionalWindow = 10 * time.Second

// KeyDeactivateReason says why imagefs deactivated an image itself;
// reactivating the image removes it.
const KeyDeactivateReason = "imagefs_deactivate_reason"

// Writer is the process that opens an upload for writing.
type Writer struct {
	PID       uint32 // thread group id; 0 when unknown
	ReadWrite bool   // opened O_RDWR
}

// provisionalSeal is a seal made at the close of a read-write opener.
type provisionalSeal struct {
	proc  uint32 // the writer's thread group id
	start string // its start time (/proc/PID/stat field 22), against pid reuse
	path  string // the staging path the data returns to on a reopen
	at    time.Time
	alias string // the name the writer created the file under, if not image.vhd
}

// dataReclaimer is a DataBackend that can give sealed data back as a
// staging file (the local backend: a rename).
type dataReclaimer interface {
	// Reclaim moves the sealed data of id back to path, writable by the
	// daemon. Open files keep reading the same bytes.
	Reclaim(id, path string) error
}

func (d *localData) Reclaim(id, path string) error {
	if err := os.Rename(d.path(id), path); errors.Is(err, syscall.EXDEV) {
		return d.copyOut(id, path)
	} else if err != nil {
		return err
	}
	if err := os.Chmod(path, 0o600); err != nil {
		return err
	}
	return syncDir(d.dir)
}

// procStart returns the start time of process pid, or "" when it is gone
// (or exiting: a zombie's files are closed).
func procStart(pid uint32) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return ""
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return ""
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 20 || f[0] == "Z" || f[0] == "X" {
		return ""
	}
	return f[19] // field 22, starttime
}

// current reports whether seal p (nil: none) may still be undone: its
// window has not passed and its writer lives. It reads /proc only within
// the window; it takes no lock.
func (p *provisionalSeal) current() bool {
	return p != nil && time.Since(p.at) <= provisionalWindow && procStart(p.proc) == p.start
}

// provisionalOf returns image id's provisional seal while it may still be
// undone, or nil. It takes only Store.pubMu (read), for a moment; an
// expired seal is dropped lazily by the writers (provisionalLocked).
func (s *Store) provisionalOf(id string) *provisionalSeal {
	s.pubMu.RLock()
	l := s.live[id]
	s.pubMu.RUnlock()
	if l == nil {
		return nil
	}
	if p := l.provisional.Load(); p.current() {
		return p
	}
	return nil
}

// provisionalLocked is provisionalOf for writers: it also drops a seal
// whose writer is gone or whose window has passed. Must hold s.mu.
func (s *Store) provisionalLocked(id string) *provisionalSeal {
	l := s.live[id]
	if l == nil {
		return nil
	}
	p := l.provisional.Load()
	if p == nil {
		return nil
	}
	if !p.current() {
		l.provisional.CompareAndSwap(p, nil)
		return nil
	}
	return p
}

// Provisional reports whether image id is sealed provisionally: its
// writer (a read-write opener) may still open it again and continue the
// upload, so image.vhd shows mode 0644, its attributes are not cached,
// only the writer opens it and by-id/<id>/ does not list it. It does not
// wait for the writers (no Store.mu).
func (s *Store) Provisional(id string) bool {
	return s.provisionalOf(id) != nil
}

// DataAlias reports whether name is the name under which the writer of
// image id's data created it (cp FILE images/NAME/, qemu-img convert ...
// images/NAME/FILE) while the image is not sealed or its seal is
// provisional: the name then leads to the image's data. It does not wait
// for the writers (no Store.mu).
func (s *Store) DataAlias(id, name string) bool {
	s.pubMu.RLock()
	l := s.live[id]
	alias := ""
	if l != nil {
		alias = l.alias
	}
	s.pubMu.RUnlock()
	if l == nil || name == "" || alias != name {
		return false
	}
	if im := s.Get(id); im == nil {
		return false
	} else if !im.Status.Sealed() {
		return true
	}
	return s.provisionalOf(id) != nil
}

// provisionalFor returns an error when image id's seal is provisional and
// process proc (nil: unknown) is not its writer: the data may still
// change, only the writer reads it. Errors: ErrPermission.
func (s *Store) provisionalFor(id string, proc func() uint32) error {
	p := s.provisionalOf(id)
	if p == nil || (proc != nil && proc() == p.proc) {
		return nil
	}
	return fmt.Errorf("%w: image %s: its writer (process %d) may still write it: only that process reads it until it exits or %s after its close", ErrPermission, id, p.proc, provisionalWindow)
}

// reopenProvisional undoes the provisional seal of image id when w is the
// process that made it and opens image.vhd for writing again: the record
// goes back to saving, the data back to staging, and the image's upload
// goes on with it (no other process read the data in between:
// provisionalFor). Otherwise it does nothing; OpenWrite then applies its
// rules.
func (s *Store) reopenProvisional(c Caller, id string, w Writer) error {
	s.mu.Lock()
	l := s.live[id]
	p := s.provisionalLocked(id)
	s.mu.Unlock()
	if l == nil || p == nil || p.proc != w.PID {
		return nil
	}
	l.sealMu.Lock() // no seal of this image while the record goes back
	defer l.sealMu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.live[id] != l || s.provisionalLocked(id) != p {
		return nil
	}
	now := s.opts.Now().UTC().Truncate(time.Second)
	rec, ok := s.data.(dataReclaimer)
	if !ok {
		return nil
	}
	ch, err := s.update(id, kv.Small, func(im *Image) (*Image, error) {
		if im == nil || im.Status != StatusActive || mayModify(c, im) != nil {
			return nil, nil
		}
		next := im.clone()
		next.Status = StatusSaving
		next.Checksum, next.OSHashAlgo, next.OSHashValue = "", "", ""
		next.Size, next.VirtualSize = -1, -1
		for _, k := range []string{KeyVHDDiskType, KeyVHDCreator, KeyVHDUniqueID, KeyVHDWarnings, KeyVHDSizeMiBAligned} {
			deleteExtra(next, k)
		}
		next.UpdatedAt = now
		return next, nil
	})
	if err != nil || ch.New == nil {
		return err
	}
	l.provisional.Store(nil)
	fail := func(err error) error {
		reason := "the seal was undone for the writer's reopen but its data could not be taken back; upload again"
		kill, kerr := s.update(id, kv.Small, func(cur *Image) (*Image, error) {
			if cur == nil || cur.Status != StatusSaving {
				return nil, nil
			}
			killed := cur.clone()
			killed.Status = StatusKilled
			setExtra(killed, KeyKillReason, reason)
			return killed, nil
		})
		if kerr == nil && kill.New != nil {
			s.emit(Event{Kind: EventKilled, ID: id, Reason: reason})
		}
		return fmt.Errorf("take back the sealed data of %s: %w", id, err)
	}
	if err := rec.Reclaim(id, p.path); err != nil {
		return fail(err)
	}
	f, err := os.OpenFile(p.path, os.O_RDWR, 0)
	if err != nil {
		os.Remove(p.path)
		return fail(err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		os.Remove(p.path)
		return fail(err)
	}
	// hash nil: the next seal hashes the data in one pass. dirty: a close
	// without a write seals it again.
	u := &Upload{s: s, id: id, path: p.path, f: f, dirty: true, started: true}
	u.setSize(fi.Size())
	u.isData.Store(true)
	s.pubMu.Lock()
	l.upload = u
	l.unlinked = false
	s.pubMu.Unlock()
	s.log.Info("seal undone: its writer opened image.vhd for writing again", "id", id, "pid", w.PID)
	return nil
}

// writerWatch follows the exits of the writers of provisional seals.
type writerWatch struct {
	once    sync.Once
	running atomic.Bool
	closed  atomic.Bool
	done    chan struct{} // closed when the listener goroutine has ended
	mu      sync.Mutex    // guards pids; taken alone or under Store.mu, nothing under it
	pids    map[uint32]watchedSeal
}

// watchedSeal is the seal a watched writer made: image id, with that
// checksum.
type watchedSeal struct {
	id, checksum string
	at           time.Time
}

// watchWriter remembers that process pid sealed image id with checksum,
// starting the process events listener the first time. Must hold s.mu.
func (s *Store) watchWriter(pid uint32, id, checksum string) {
	s.ww.once.Do(func() {
		recv, closeFn, err := listenProcExits()
		if err != nil {
			s.log.Info("no process events: a read-write writer that fails after its seal is not noticed", "err", err)
			return
		}
		s.ww.done = make(chan struct{})
		s.ww.running.Store(true)
		// The goroutine owns the socket: it closes it when stopWatch asks
		// (each receive waits at most 1 s), so no receive or commit runs
		// after Close.
		go func() {
			defer close(s.ww.done)
			defer closeFn()
			for !s.ww.closed.Load() {
				exits, err := recv()
				if err != nil {
					s.log.Error("process events", "err", err)
					return
				}
				for _, e := range exits {
					if s.ww.closed.Load() {
						return
					}
					s.writerExited(e[0], e[1])
				}
			}
		}()
	})
	if !s.ww.running.Load() {
		return
	}
	now := time.Now()
	s.ww.mu.Lock()
	defer s.ww.mu.Unlock()
	if s.ww.pids == nil {
		s.ww.pids = map[uint32]watchedSeal{}
	}
	for p, w := range s.ww.pids {
		if now.Sub(w.at) > provisionalWindow {
			delete(s.ww.pids, p)
		}
	}
	s.ww.pids[pid] = watchedSeal{id: id, checksum: checksum, at: now}
}

// stopWatch stops the process events listener, if it runs, and waits for
// it to end (at most about 1 s: its receive times out).
func (s *Store) stopWatch() {
	if s.ww.closed.Swap(true) {
		return
	}
	s.ww.once.Do(func() {}) // a seal after this starts no listener
	if s.ww.running.Load() {
		<-s.ww.done
	}
}

// writerExited handles the exit of process pid with wait status code: if
// it is the writer of a seal still in place and it failed, the image is
// deactivated with the reason. An exit of any other process takes only
// writerWatch.mu.
func (s *Store) writerExited(pid, code uint32) {
	s.ww.mu.Lock()
	w, ok := s.ww.pids[pid]
	if ok {
		delete(s.ww.pids, pid)
	}
	s.ww.mu.Unlock()
	if !ok || code == 0 || time.Since(w.at) > provisionalWindow {
		return
	}
	s.pubMu.RLock()
	l := s.live[w.id]
	s.pubMu.RUnlock()
	defer s.deliver()
	if l != nil {
		l.sealMu.Lock()
		defer l.sealMu.Unlock()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if im, err := s.getLocked(w.id); err != nil || im.Status != StatusActive || im.Checksum != w.checksum {
		return
	}
	if l := s.live[w.id]; l != nil {
		l.provisional.Store(nil)
	}
	how := fmt.Sprintf("exited with status %d", code>>8)
	if sig := code & 0x7f; sig != 0 {
		how = fmt.Sprintf("was killed by signal %d", sig)
	}
	reason := fmt.Sprintf("the writer (process %d, which opened image.vhd read-write) %s after its close sealed the image: the data is probably incomplete (a failed qemu-img convert?); delete the image and upload again", pid, how)
	ch, err := s.update(w.id, kv.Small, func(im *Image) (*Image, error) {
		if im == nil || im.Status != StatusActive || im.Checksum != w.checksum {
			return nil, nil
		}
		next := im.clone()
		next.Status = StatusDeactivated
		setExtra(next, KeyDeactivateReason, reason)
		next.UpdatedAt = s.opts.Now().UTC().Truncate(time.Second)
		return next, nil
	})
	if err != nil {
		s.log.Error("deactivating an image whose writer failed", "id", w.id, "err", err)
		return
	}
	if ch.New == nil {
		return
	}
	s.log.Warn("image deactivated", "id", w.id, "reason", reason)
}
