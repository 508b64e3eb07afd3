package fs

import (
	"context"
	"slices"
	"sync"
	"syscall"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/imagefs/imagefs/store"
)

// Deleting an image the way tools delete a directory tree.
//
// rm -r and find -delete (gnulib fts) read a directory, keep it open and
// remove its entries with unlinkat(dirfd, name) in the order read, then
// the directory itself. An image directory lists image.vhd first, and an
// unlink of image.vhd by a process that holds that image directory open
// (an OPENDIR of it by the same process, not yet released) deletes the
// image: record, name and data, in one commit, exactly as rmdir does. If
// the delete is refused (protected, not the owner, a read-only mount; and
// always under by-id/, where images are not deleted) the unlink fails with
// that error and nothing changes; the tool goes on to properties/, whose
// files that process then cannot remove either (the same error, for
// ghostTTL), and reports the refusal.
//
// A bare unlink(path) of image.vhd by a process without the directory
// open is what cp -f, install, mv across filesystems and
// cp --remove-destination do before they create the file again: it never
// deletes an image (EPERM on sealed data; the discard of an unsealed
// upload).
//
// After the delete the tool goes on: it opens properties/, removes what
// it lists, removes properties/ and then the image directory. For the
// process that deleted the image (and for ghostTTL at most) the deleted
// image's directory stays a ghost: it reads as empty, its properties/
// reads as empty, rmdir of properties/ and of images/<name> succeeds
// (without touching the catalog), so the tool exits 0. Every other
// process finds the image gone at once.

// ghostTTL is how long the deleting process may walk the deleted image's
// directory.
const ghostTTL = 30 * time.Second

// ghost is an image deleted by an unlink of its image.vhd, seen by the
// process that deleted it until it removes the directory.
type ghost struct {
	im   *store.Image // the record before the delete
	tgid uint32       // the deleting process
}

// ghosts are the deleted images that are still ghosts, by id.
type ghosts struct {
	mu sync.Mutex
	m  map[string]*ghost
}

// add makes im a ghost for process tgid; after ghostTTL it is dropped,
// and so is the kernel's entry of images/<name> if it still leads to it.
func (f *FS) addGhost(im *store.Image, tgid uint32) {
	g := &ghost{im: im, tgid: tgid}
	f.ghosts.mu.Lock()
	if f.ghosts.m == nil {
		f.ghosts.m = map[string]*ghost{}
	}
	f.ghosts.m[im.ID] = g
	f.ghosts.mu.Unlock()
	time.AfterFunc(ghostTTL, func() {
		if f.dropGhost(im.ID, g) {
			images := f.root().GetChild("images")
			if ch := images.GetChild(im.Name); ch != nil {
				if d, ok := ch.Operations().(*imageDir); ok && d.id == im.ID {
					f.dropEntry(images, im.Name)
				}
			}
		}
	})
}

// dropGhost forgets ghost g of image id; it reports whether g was still
// there.
func (f *FS) dropGhost(id string, g *ghost) bool {
	f.ghosts.mu.Lock()
	defer f.ghosts.mu.Unlock()
	if f.ghosts.m[id] != g {
		return false
	}
	delete(f.ghosts.m, id)
	return true
}

// ghostFor returns the record of deleted image id if the caller is the
// process that deleted it (and the ghost has not expired), else nil.
func (f *FS) ghostFor(ctx context.Context, id string) *ghost {
	f.ghosts.mu.Lock()
	g := f.ghosts.m[id]
	f.ghosts.mu.Unlock()
	if g == nil || callerProcess(ctx) != g.tgid {
		return nil
	}
	return g
}

// ghostNamed returns the caller's ghost named name, or nil.
func (f *FS) ghostNamed(ctx context.Context, name string) *ghost {
	f.ghosts.mu.Lock()
	var named []*ghost
	for _, g := range f.ghosts.m {
		if g.im.Name == name {
			named = append(named, g)
		}
	}
	f.ghosts.mu.Unlock()
	if len(named) == 0 {
		return nil
	}
	tgid := callerProcess(ctx)
	for _, g := range named {
		if g.tgid == tgid {
			return g
		}
	}
	return nil
}

// refusals are the deletes by unlink refused, by image id: the process
// and the error, until when.
type refusals struct {
	mu sync.Mutex
	m  map[string][]refusal
}

type refusal struct {
	tgid  uint32
	errno syscall.Errno
	until time.Time
}

// refuse records that process tgid's delete of image id was refused with
// errno.
func (f *FS) refuse(id string, tgid uint32, errno syscall.Errno) {
	now := time.Now()
	f.refused.mu.Lock()
	defer f.refused.mu.Unlock()
	if f.refused.m == nil {
		f.refused.m = map[string][]refusal{}
	}
	for k, rs := range f.refused.m { // drop the expired ones
		rs = slices.DeleteFunc(rs, func(r refusal) bool { return now.After(r.until) })
		if len(rs) == 0 {
			delete(f.refused.m, k)
		} else {
			f.refused.m[k] = rs
		}
	}
	f.refused.m[id] = append(f.refused.m[id], refusal{tgid: tgid, errno: errno, until: now.Add(ghostTTL)})
}

// refusedFor returns the error of the caller's refused delete of image
// id, or 0.
func (f *FS) refusedFor(ctx context.Context, id string) syscall.Errno {
	f.refused.mu.Lock()
	rs := slices.Clone(f.refused.m[id])
	f.refused.mu.Unlock()
	if len(rs) == 0 {
		return 0
	}
	tgid, now := callerProcess(ctx), time.Now()
	for _, r := range rs {
		if r.tgid == tgid && now.Before(r.until) {
			return r.errno
		}
	}
	return 0
}

// holders counts the open directory handles of an image directory by the
// pid (thread id) that opened them.
type holders struct {
	mu   sync.Mutex
	pids map[uint32]int
}

func (h *holders) add(pid uint32) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.pids == nil {
		h.pids = map[uint32]int{}
	}
	h.pids[pid]++
}

func (h *holders) remove(pid uint32) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.pids[pid]--; h.pids[pid] <= 0 {
		delete(h.pids, pid)
	}
}

// heldBy reports whether process tgid (thread pid) holds the directory
// open. The thread ids of the opens are mapped to their processes only
// here, so an OPENDIR costs no /proc read.
func (h *holders) heldBy(pid, tgid uint32) bool {
	h.mu.Lock()
	pids := make([]uint32, 0, len(h.pids))
	for p := range h.pids {
		pids = append(pids, p)
	}
	h.mu.Unlock()
	for _, p := range pids {
		if p == pid || p == tgid || tgidOf(p) == tgid {
			return true
		}
	}
	return false
}

var _ = (gofs.NodeOpendirHandler)((*imageDir)(nil))

// OpendirHandle opens an image directory for reading, and counts the
// opener among the directory's holders until the handle is released.
func (d *imageDir) OpendirHandle(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	var pid uint32
	if c, ok := fuse.FromContext(ctx); ok {
		pid = c.Pid
	}
	d.holders.add(pid)
	return &imageDirHandle{d: d, pid: pid}, 0, 0
}

// heldByCaller reports whether the calling process holds d open.
func (d *imageDir) heldByCaller(ctx context.Context) bool {
	c, ok := fuse.FromContext(ctx)
	if !ok {
		return false
	}
	return d.holders.heldBy(c.Pid, callerProcess(ctx))
}

// imageDirHandle is an open image directory: go-fuse's directory stream
// of Readdir, plus the holder count.
type imageDirHandle struct {
	d    *imageDir
	pid  uint32
	ds   gofs.DirStream
	once sync.Once
}

var _ = (gofs.FileReaddirenter)((*imageDirHandle)(nil))
var _ = (gofs.FileSeekdirer)((*imageDirHandle)(nil))
var _ = (gofs.FileReleasedirer)((*imageDirHandle)(nil))

func (h *imageDirHandle) Readdirent(ctx context.Context) (*fuse.DirEntry, syscall.Errno) {
	if h.ds == nil {
		ds, errno := h.d.Readdir(ctx)
		if errno != 0 {
			return nil, errno
		}
		h.ds = ds
	}
	if !h.ds.HasNext() {
		return nil, 0
	}
	e, errno := h.ds.Next()
	return &e, errno
}

// Seekdir repositions the stream, as go-fuse's own directory handle does.
func (h *imageDirHandle) Seekdir(ctx context.Context, off uint64) syscall.Errno {
	if h.ds == nil {
		ds, errno := h.d.Readdir(ctx)
		if errno != 0 {
			return errno
		}
		h.ds = ds
	}
	if sd, ok := h.ds.(gofs.FileSeekdirer); ok {
		return sd.Seekdir(ctx, off)
	}
	return syscall.ENOTSUP
}

func (h *imageDirHandle) Releasedir(ctx context.Context, flags uint32) {
	h.once.Do(func() {
		if h.ds != nil {
			h.ds.Close()
		}
		h.d.holders.remove(h.pid)
	})
}

// deleteByUnlink deletes the image of d: the unlink of its image.vhd by a
// process that holds d open (see above). Under by-id/, where images are
// not deleted (rmdir by-id/<id> is EPERM), it is refused with EPERM.
// After a refusal, that process's removals of the image's property files
// fail with the same error for ghostTTL: rm -r goes on into properties/
// after the refusal, and must not strip what it could not delete.
func (d *imageDir) deleteByUnlink(ctx context.Context) syscall.Errno {
	im := d.image()
	if im == nil {
		return syscall.ENOENT
	}
	errno := syscall.EPERM
	if !d.byID {
		errno = toErrno(d.fsys.st.Delete(caller(ctx), im.ID))
	}
	if errno != 0 {
		d.fsys.refuse(im.ID, callerProcess(ctx), errno)
		return errno
	}
	d.fsys.addGhost(im, callerProcess(ctx))
	d.fsys.forgetImage(im)
	return 0
}

// ghostDirAttr fills the attributes of a ghost's directory (image
// directory or properties/): as before the delete, with no links left.
func (n *node) ghostDirAttr(g *ghost, a *fuse.Attr) {
	n.fillAttr(g.im, a)
	a.Mode = syscall.S_IFDIR | modeFor(g.im, 0o755)
	a.Nlink = 0
}
