package fs

import (
	"context"
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/imagefs/imagefs/store"
)

// imagesDir is images/: one directory per image, named by the image's
// name. mkdir creates an image, rmdir deletes one, rename renames one.
type imagesDir struct {
	gofs.Inode
	fsys *FS
}

var _ = (gofs.NodeLookuper)((*imagesDir)(nil))
var _ = (gofs.NodeReaddirer)((*imagesDir)(nil))
var _ = (gofs.NodeMkdirer)((*imagesDir)(nil))
var _ = (gofs.NodeRmdirer)((*imagesDir)(nil))
var _ = (gofs.NodeRenamer)((*imagesDir)(nil))
var _ = (gofs.NodeGetattrer)((*imagesDir)(nil))

func (d *imagesDir) Getattr(ctx context.Context, f gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	// Anyone may create an image; only the owner deletes or renames it
	// (the store checks), like /tmp.
	d.fsys.fixedDirAttr(&out.Attr, syscall.S_ISVTX|0o777)
	out.SetTimeout(cacheTimeout)
	return 0
}

func (d *imagesDir) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	im := d.fsys.st.LookupFor(caller(ctx), name)
	if im == nil {
		if g := d.fsys.ghostNamed(ctx, name); g != nil {
			// The process that deleted the image by unlinking its
			// image.vhd goes on to rmdir the directory (delete.go).
			n := &imageDir{node: node{fsys: d.fsys, id: g.im.ID}}
			n.ghostDirAttr(g, &out.Attr)
			return d.NewInode(ctx, n, gofs.StableAttr{Mode: syscall.S_IFDIR, Ino: g.im.Ino(store.SlotDir)}), 0
		}
		return nil, syscall.ENOENT
	}
	return d.fsys.imageDirInode(ctx, &d.Inode, im, false, out), 0
}

func (d *imagesDir) Readdir(ctx context.Context) (gofs.DirStream, syscall.Errno) {
	ims := d.fsys.st.ListFor(caller(ctx))
	ents := make([]fuse.DirEntry, len(ims))
	for i, im := range ims {
		ents[i] = fuse.DirEntry{Name: im.Name, Ino: im.Ino(store.SlotDir), Mode: syscall.S_IFDIR}
	}
	return withDots(&d.Inode, ents), 0
}

func (d *imagesDir) Mkdir(ctx context.Context, name string, mode uint32, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	im, err := d.fsys.st.Create(caller(ctx), name)
	if err != nil {
		return nil, toErrno(err)
	}
	ino := d.fsys.imageDirInode(ctx, &d.Inode, im, false, out)
	noteMade(ino, im, callerProcess(ctx)) // copyin.go
	return ino, 0
}

func (d *imagesDir) Rmdir(ctx context.Context, name string) syscall.Errno {
	if g := d.fsys.ghostNamed(ctx, name); g != nil {
		// The process that deleted the image by unlinking its image.vhd
		// removes its directory (delete.go); the catalog is not asked:
		// the name may be another image's by now.
		d.fsys.dropGhost(g.im.ID, g)
		return 0
	}
	im := d.fsys.st.LookupFor(caller(ctx), name)
	if im == nil {
		return syscall.ENOENT
	}
	if err := d.fsys.st.Delete(caller(ctx), im.ID); err != nil {
		return toErrno(err)
	}
	d.fsys.forgetImage(im)
	return 0
}

func (d *imagesDir) Rename(ctx context.Context, name string, newParent gofs.InodeEmbedder, newName string, flags uint32) syscall.Errno {
	if _, ok := newParent.(*imagesDir); !ok {
		return toErrno(store.ErrCrossDirectory)
	}
	// RENAME_NOREPLACE (mv -n, mv --no-clobber, mv's first try) asks for
	// what every rename here does: the store never replaces another
	// image, a taken name is EEXIST. RENAME_EXCHANGE and RENAME_WHITEOUT
	// are not supported.
	if _, errno := renameMode(flags); errno != 0 {
		return errno
	}
	im := d.fsys.st.LookupFor(caller(ctx), name)
	if im == nil {
		return syscall.ENOENT
	}
	return toErrno(d.fsys.st.Rename(caller(ctx), im.ID, newName))
}

// byIDDir is by-id/: the same images under their ids, the stable path.
type byIDDir struct {
	gofs.Inode
	fsys *FS
}

var _ = (gofs.NodeLookuper)((*byIDDir)(nil))
var _ = (gofs.NodeReaddirer)((*byIDDir)(nil))
var _ = (gofs.NodeGetattrer)((*byIDDir)(nil))

func (d *byIDDir) Getattr(ctx context.Context, f gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	d.fsys.fixedDirAttr(&out.Attr, 0o755)
	out.SetTimeout(cacheTimeout)
	return 0
}

func (d *byIDDir) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	im := d.fsys.st.GetFor(caller(ctx), name)
	if im == nil {
		return nil, syscall.ENOENT
	}
	return d.fsys.imageDirInode(ctx, &d.Inode, im, true, out), 0
}

func (d *byIDDir) Readdir(ctx context.Context) (gofs.DirStream, syscall.Errno) {
	ims := d.fsys.st.ListFor(caller(ctx))
	ents := make([]fuse.DirEntry, len(ims))
	for i, im := range ims {
		ents[i] = fuse.DirEntry{Name: im.ID, Ino: im.Ino(store.SlotByIDDir), Mode: syscall.S_IFDIR}
	}
	return withDots(&d.Inode, ents), 0
}

// imageDirInode returns the inode of an image directory under images/
// (byID false) or by-id/ and fills out.
func (f *FS) imageDirInode(ctx context.Context, parent *gofs.Inode, im *store.Image, byID bool, out *fuse.EntryOut) *gofs.Inode {
	slot := uint32(store.SlotDir)
	if byID {
		slot = store.SlotByIDDir
	}
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
	return parent.NewInode(ctx, n, gofs.StableAttr{Mode: syscall.S_IFDIR, Ino: im.Ino(slot)})
}

// setProperty sets a property through a property file or an xattr. A
// name change made that way (not by rename(2), which the kernel tracks
// itself) drops the kernel's entry of the old name, so images/<old> stops
// resolving at once.
func (f *FS) setProperty(c store.Caller, id, key, value string, mode store.SetMode) error {
	ch, err := f.st.ChangeProperty(c, id, key, value, mode)
	f.propertyChanged(ch)
	return err
}

// propertyChanged drops the kernel's entry of an image's old name after a
// property change that renamed it (ch, the store's commit, tells the old
// name; a zero Change: nothing changed).
func (f *FS) propertyChanged(ch store.Change) {
	if ch.Old != nil && ch.New != nil && ch.Old.Name != ch.New.Name {
		f.dropEntry(f.root().GetChild("images"), ch.Old.Name)
	}
}

// forgetImage drops a deleted image's directory entries from the kernel's
// caches (the other tree's entry is not known to the kernel as removed).
func (f *FS) forgetImage(im *store.Image) {
	f.dropEntry(f.byIDInode(), im.ID)
}

func (f *FS) byIDInode() *gofs.Inode {
	return f.root().GetChild("by-id")
}

func (f *FS) root() *gofs.Inode { return f.rootNode.EmbeddedInode() }
