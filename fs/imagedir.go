package fs

import (
	"context"
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/imagefs/imagefs/store"
)

// imageDir is images/<name>/ or by-id/<id>/: the data file (image.vhd,
// or image.raw for a raw image: store.Image.DataName), properties/ and
// any scratch files (uploads in progress under other names).
type imageDir struct {
	node
	byID bool
	// holders are the processes that have this directory open
	// (delete.go).
	holders holders
	// made: this directory was made by mkdir (copyin.go).
	made made
}

var _ = (gofs.NodeLookuper)((*imageDir)(nil))
var _ = (gofs.NodeReaddirer)((*imageDir)(nil))
var _ = (gofs.NodeGetattrer)((*imageDir)(nil))
var _ = (gofs.NodeCreater)((*imageDir)(nil))
var _ = (gofs.NodeUnlinker)((*imageDir)(nil))
var _ = (gofs.NodeRenamer)((*imageDir)(nil))
var _ = (gofs.NodeGetxattrer)((*imageDir)(nil))
var _ = (gofs.NodeSetxattrer)((*imageDir)(nil))
var _ = (gofs.NodeListxattrer)((*imageDir)(nil))
var _ = (gofs.NodeRemovexattrer)((*imageDir)(nil))
var _ = (gofs.NodeRmdirer)((*imageDir)(nil))

func (d *imageDir) fillDirAttr(im *store.Image, a *fuse.Attr) {
	d.fillAttr(im, a)
	a.Mode = syscall.S_IFDIR | modeFor(im, 0o755)
	a.Nlink = 3
}

func (d *imageDir) Getattr(ctx context.Context, f gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	im := d.imageFor(ctx)
	if im == nil {
		if g := d.fsys.ghostFor(ctx, d.id); g != nil && !d.byID {
			d.ghostDirAttr(g, &out.Attr)
			out.SetTimeout(uncached)
			return 0
		}
		return syscall.ENOENT
	}
	d.fillDirAttr(im, &out.Attr)
	out.SetTimeout(untilChanged)
	return 0
}

func (d *imageDir) propsSlot() uint32 {
	if d.byID {
		return store.SlotByIDPropsDir
	}
	return store.SlotPropsDir
}

func (d *imageDir) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	im := d.imageFor(ctx)
	if im == nil {
		if g := d.fsys.ghostFor(ctx, d.id); g != nil && !d.byID && name == "properties" {
			// rm -r goes on into properties/ of the image it deleted.
			d.ghostDirAttr(g, &out.Attr)
			p := &propsDir{node: node{fsys: d.fsys, id: d.id}}
			return d.NewInode(ctx, p, gofs.StableAttr{Mode: syscall.S_IFDIR, Ino: g.im.Ino(d.propsSlot())}), 0
		}
		return nil, syscall.ENOENT
	}
	switch name {
	case im.DataName():
		if !d.fsys.st.DataVisible(im, d.byID) {
			return nil, syscall.ENOENT // none (yet); a writer creates it
		}
		return d.fsys.dataInode(ctx, &d.Inode, im, out), 0
	case "properties":
		p := &propsDir{node: node{fsys: d.fsys, id: d.id}}
		d.fillDirAttr(im, &out.Attr)
		out.SetEntryTimeout(untilChanged)
		out.SetAttrTimeout(untilChanged)
		return d.NewInode(ctx, p, gofs.StableAttr{Mode: syscall.S_IFDIR, Ino: im.Ino(d.propsSlot())}), 0
	}
	u := d.fsys.st.Scratch(d.id, name)
	if u == nil && d.fsys.st.DataAlias(d.id, name) {
		// The name a writer created the image's data under, while it
		// writes (qemu-img convert opens it again by name).
		ch := d.fsys.dataInode(ctx, &d.Inode, im, out)
		out.SetEntryTimeout(uncached)
		out.SetAttrTimeout(uncached)
		return ch, 0
	}
	if u == nil {
		return nil, syscall.ENOENT
	}
	return d.fsys.scratchInode(ctx, &d.Inode, im, u, out), 0
}

// Readdir lists image.vhd first: rm -r and find -delete remove entries in
// the order read, and their unlink of image.vhd deletes the image before
// they reach the property files (delete.go).
func (d *imageDir) Readdir(ctx context.Context) (gofs.DirStream, syscall.Errno) {
	im := d.imageFor(ctx)
	if im == nil {
		if g := d.fsys.ghostFor(ctx, d.id); g != nil && !d.byID {
			return withDots(&d.Inode, nil), 0
		}
		return nil, syscall.ENOENT
	}
	var ents []fuse.DirEntry
	if dn := im.DataName(); dn != "" && d.fsys.st.DataVisible(im, d.byID) {
		ents = append(ents, fuse.DirEntry{Name: dn, Ino: im.Ino(store.SlotData), Mode: syscall.S_IFREG})
	}
	ents = append(ents, fuse.DirEntry{Name: "properties", Ino: im.Ino(d.propsSlot()), Mode: syscall.S_IFDIR})
	for _, name := range d.fsys.st.ScratchNames(d.id) {
		if u := d.fsys.st.Scratch(d.id, name); u != nil {
			ents = append(ents, fuse.DirEntry{Name: name, Ino: im.Ino(u.Slot()), Mode: syscall.S_IFREG})
		}
	}
	return withDots(&d.Inode, ents), 0
}

// Create makes image.vhd again (cp --remove-destination and mv across
// filesystems unlink it first), an upload of the image's data under
// another name (cp FILE.vhd images/NAME/), or, under a temporary name, a
// scratch file that a rename completes (rsync): store.CreateFile.
func (d *imageDir) Create(ctx context.Context, name string, flags uint32, mode uint32, out *fuse.EntryOut) (*gofs.Inode, gofs.FileHandle, uint32, syscall.Errno) {
	c := caller(ctx)
	w := store.Writer{PID: callerProcess(ctx), ReadWrite: flags&syscall.O_ACCMODE == syscall.O_RDWR}
	u, err := d.fsys.st.CreateFile(c, d.id, name, w)
	if err != nil {
		return nil, nil, 0, toErrno(err)
	}
	data := u.IsImageData()
	im := d.image()
	if im == nil {
		d.fsys.st.EndWriter(u)
		return nil, nil, 0, syscall.ENOENT
	}
	var ch *gofs.Inode
	var fuseFlags uint32
	if data {
		ch, fuseFlags = d.fsys.dataInode(ctx, &d.Inode, im, out), fuse.FOPEN_DIRECT_IO
		if name != im.DataName() {
			// The image's data under the name the writer gave: the name
			// lasts as long as the kernel's entry, which is not kept.
			out.SetEntryTimeout(uncached)
			out.SetAttrTimeout(uncached)
		}
	} else {
		ch = d.fsys.scratchInode(ctx, &d.Inode, im, u, out)
	}
	return ch, &uploadHandle{st: d.fsys.st, u: u, write: true, opener: w.PID, node: ch}, fuseFlags, 0
}

// Unlink of the data file (image.vhd, image.raw) deletes the image when
// the caller holds this directory open (rm -r, find -delete: see
// delete.go); otherwise it
// discards an unsealed upload (cp --remove-destination, install, mv
// across filesystems) and is EPERM on sealed data.
func (d *imageDir) Unlink(ctx context.Context, name string) syscall.Errno {
	if d.image() == nil && !d.byID && d.fsys.ghostFor(ctx, d.id) != nil {
		return 0 // went with the image the caller deleted (a scratch file)
	}
	if im := d.image(); im != nil && name == im.DataName() || im == nil && store.IsDataName(name) {
		if d.heldByCaller(ctx) {
			return d.deleteByUnlink(ctx)
		}
		return toErrno(d.fsys.st.DiscardUpload(caller(ctx), d.id))
	}
	if name == "properties" {
		return syscall.EISDIR
	}
	if errno := d.fsys.refusedFor(ctx, d.id); errno != 0 {
		return errno // rm -r goes on after a refused delete (delete.go)
	}
	return toErrno(d.fsys.st.RemoveScratch(caller(ctx), d.id, name))
}

func (d *imageDir) Rename(ctx context.Context, name string, newParent gofs.InodeEmbedder, newName string, flags uint32) syscall.Errno {
	mode, errno := renameWithin(d, newParent, flags)
	if errno != 0 {
		return errno
	}
	scratch := d.GetChild(name)
	if err := d.fsys.st.RenameScratch(caller(ctx), d.id, name, newName, mode); err != nil {
		return toErrno(err)
	}
	if (store.IsDataName(newName) || !store.IsTempName(newName)) && scratch != nil {
		// The kernel now maps image.vhd to the scratch file's inode, and
		// may keep that entry for a jiffy or two even uncached. Drop the
		// inode's cached attributes (no directory lock is needed, unlike
		// an entry notification during a rename): the next stat asks
		// Getattr, whose ESTALE makes the kernel look image.vhd up again
		// and find the image's own inode, the one by-id/<id>/image.vhd has.
		scratch.NotifyContent(-1, 0)
	}
	return 0
}

// imageDirInode returns the inode of an image directory under images/
// (byID false) or by-id/ and fills out.
func (f *FS) imageDirInode(ctx context.Context, parent *gofs.Inode, im *store.Image, byID bool, out *fuse.EntryOut) *gofs.Inode {
	n := &imageDir{node: node{fsys: f, id: im.ID}, byID: byID}
	n.fillDirAttr(im, &out.Attr)
	out.SetAttrTimeout(untilChanged)
	if !f.allowOther {
		// With several users (--allow-other) the entry is not cached: the
		// kernel shares cached entries between users, so every walk through
		// an image directory asks the daemon, which applies the caller's
		// visibility. Otherwise it is kept until the image is renamed or
		// deleted, which drop it (the kernel itself for rename(2) and
		// rmdir(2); setProperty and forgetImage otherwise).
		out.SetEntryTimeout(untilChanged)
	}
	f.usage.touch(im.ID)
	return parent.NewInode(ctx, n, gofs.StableAttr{Mode: syscall.S_IFDIR, Ino: im.Ino(dirSlot(byID))})
}

// Rmdir of properties/ (the only directory in an image directory): EPERM,
// but for the process that just deleted the image by unlinking its
// image.vhd (delete.go), for which the directory is gone already.
func (d *imageDir) Rmdir(ctx context.Context, name string) syscall.Errno {
	if name == "properties" && !d.byID && d.image() == nil && d.fsys.ghostFor(ctx, d.id) != nil {
		return 0
	}
	return syscall.EPERM
}
