package fs

import (
	"context"
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/imagefs/imagefs/store"
)

// imageListDir is what images/ and by-id/ share: the images the caller
// may see, one directory each, named by the image's name (images/) or by
// its id (by-id/, byID).
type imageListDir struct {
	gofs.Inode
	fsys *FS
	byID bool
}

var _ = (gofs.NodeLookuper)((*imageListDir)(nil))
var _ = (gofs.NodeReaddirer)((*imageListDir)(nil))
var _ = (gofs.NodeGetattrer)((*imageListDir)(nil))

// dirSlot is the inode slot of an image directory under images/ (byID
// false) or by-id/.
func dirSlot(byID bool) uint32 {
	if byID {
		return store.SlotByIDDir
	}
	return store.SlotDir
}

func (d *imageListDir) Getattr(ctx context.Context, f gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	if d.byID {
		d.fsys.fixedDirAttr(&out.Attr, 0o755)
	} else {
		// Anyone may create an image; only the owner deletes or renames
		// it (the store checks), like /tmp.
		d.fsys.fixedDirAttr(&out.Attr, syscall.S_ISVTX|0o777)
	}
	out.SetTimeout(cacheTimeout)
	return 0
}

func (d *imageListDir) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	var im *store.Image
	if d.byID {
		im = d.fsys.st.GetFor(caller(ctx), name)
	} else {
		im = d.fsys.st.LookupFor(caller(ctx), name)
	}
	if im == nil && !d.byID {
		if g := d.fsys.ghostNamed(ctx, name); g != nil {
			// The process that deleted the image by unlinking its
			// image.vhd goes on to rmdir the directory (delete.go).
			n := &imageDir{node: node{fsys: d.fsys, id: g.im.ID}}
			n.ghostDirAttr(g, &out.Attr)
			return d.NewInode(ctx, n, gofs.StableAttr{Mode: syscall.S_IFDIR, Ino: g.im.Ino(store.SlotDir)}), 0
		}
	}
	if im == nil {
		return nil, syscall.ENOENT
	}
	return d.fsys.imageDirInode(ctx, &d.Inode, im, d.byID, out), 0
}

func (d *imageListDir) Readdir(ctx context.Context) (gofs.DirStream, syscall.Errno) {
	ims := d.fsys.st.ListFor(caller(ctx))
	ents := make([]fuse.DirEntry, len(ims))
	for i, im := range ims {
		name := im.Name
		if d.byID {
			name = im.ID
		}
		ents[i] = fuse.DirEntry{Name: name, Ino: im.Ino(dirSlot(d.byID)), Mode: syscall.S_IFDIR}
	}
	return withDots(&d.Inode, ents), 0
}

// imagesDir is images/: one directory per image, named by the image's
// name. mkdir creates an image, rmdir deletes one, rename renames one.
type imagesDir struct {
	imageListDir
}

var _ = (gofs.NodeMkdirer)((*imagesDir)(nil))
var _ = (gofs.NodeRmdirer)((*imagesDir)(nil))
var _ = (gofs.NodeRenamer)((*imagesDir)(nil))

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
