package fs

import (
	"context"
	"log/slog"
	"sync"
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/imagefs/imagefs/store"
)

// A failed copy of a directory tree into images/ leaves nothing behind.
//
// cp -a BACKUP/X images/ (also cp -r --preserve, tar x, Python's
// copytree) makes images/X with mkdir, which creates the image with its
// image.vhd and properties/; its exclusive creates of those then fail
// (EEXIST), and at the end it sets the times of the directory it made.
// An image whose maker sets the directory's times while the image is
// still exactly as mkdir made it (queued, no upload begun, no property
// set) is such a failed copy: it is deleted, and the times call succeeds.
// `imagefs restore` is the way to restore a backup.

// made is what mkdir made of an image directory: the record and the
// process.
type made struct {
	mu    sync.Mutex
	im    *store.Image // the record as created; nil once anything changed
	maker uint32       // the process that made it
}

// noteMade records that process maker made the image im (mkdir).
func noteMade(ino *gofs.Inode, im *store.Image, maker uint32) {
	if d, ok := ino.Operations().(*imageDir); ok && d.id == im.ID {
		d.made.mu.Lock()
		d.made.im, d.made.maker = im, maker
		d.made.mu.Unlock()
	}
}

var _ = (gofs.NodeSetattrer)((*imageDir)(nil))

// Setattr of an image directory: chown (owner, group) gives the image to
// that uid, root only (Store.SetOwner; others get EPERM); times and mode
// are not kept (EOPNOTSUPP), but the times call of a copy that put
// nothing into the image it made removes that image (see above).
func (d *imageDir) Setattr(ctx context.Context, f gofs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	if in.Valid&(fuse.FATTR_UID|fuse.FATTR_GID) != 0 {
		return d.chown(ctx, in, out)
	}
	const times = fuse.FATTR_ATIME | fuse.FATTR_MTIME | fuse.FATTR_ATIME_NOW | fuse.FATTR_MTIME_NOW
	if in.Valid&times != 0 && !d.byID && d.removeUnfilled(ctx) {
		out.Mode = syscall.S_IFDIR | 0o700
		return 0
	}
	return syscall.ENOTSUP
}

// removeUnfilled deletes d's image if the caller made it and nothing has
// happened to it since; it reports whether it did.
func (d *imageDir) removeUnfilled(ctx context.Context) bool {
	d.made.mu.Lock()
	im, maker := d.made.im, d.made.maker
	d.made.mu.Unlock()
	st := d.fsys.st
	if im == nil || st.Get(d.id) != im || st.CurrentUpload(d.id) != nil || len(st.ScratchNames(d.id)) != 0 ||
		callerProcess(ctx) != maker {
		return false
	}
	if err := st.Delete(caller(ctx), d.id); err != nil {
		return false
	}
	slog.Warn("image removed: the copy of a directory into it (cp -a, tar) put nothing in; restore backups with imagefs restore",
		"id", im.ID, "name", im.Name)
	d.fsys.forgetImage(im)
	d.fsys.dropEntry(d.fsys.root().GetChild("images"), im.Name)
	return true
}

// chown of an image directory (images/<name> or by-id/<id>): the image's
// owner becomes the uid given, its group the gid given (each kept when
// not given), through Store.SetOwner: root only (EPERM), as chown(2).
// A change of mode or times in the same call is not kept, as above.
func (d *imageDir) chown(ctx context.Context, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	im := d.imageFor(ctx)
	if im == nil {
		return syscall.ENOENT
	}
	o := store.OwnerOf(im) // a project stays unless a uid is given
	if in.Valid&fuse.FATTR_UID != 0 {
		o.Project = ""
		o.UID = in.Uid
	}
	if in.Valid&fuse.FATTR_GID != 0 {
		o.GID = in.Gid
	}
	if _, err := d.fsys.st.SetOwner(caller(ctx), d.id, o); err != nil {
		return toErrno(err)
	}
	return d.Getattr(ctx, nil, out)
}
