package fs

import (
	"context"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// byPathRaw marks each GETATTR the kernel sent without a file handle
// (stat(2), a permission check during a path walk), so that Getattr can
// tell it from an fstat(2): go-fuse hands such a request the first open
// handle of the inode, whichever process holds it (see byPath).
type byPathRaw struct {
	fuse.RawFileSystem
	f *FS
}

func (r *byPathRaw) GetAttr(cancel <-chan struct{}, in *fuse.GetAttrIn, out *fuse.AttrOut) fuse.Status {
	if in.Flags()&fuse.FUSE_GETATTR_FH == 0 {
		r.f.pathGetattrs.Store(cancel, true)
		defer r.f.pathGetattrs.Delete(cancel)
	}
	return r.RawFileSystem.GetAttr(cancel, in, out)
}

// byPath reports whether a Getattr with handle fh was asked by path, not
// through an open file. A by-path GETATTR of a file that is no longer what
// the kernel's entry says must answer ESTALE, so that the kernel looks the
// name up again (an open(O_CREAT) then creates it anew); go-fuse gives it
// a handle whenever any process still has the inode open (a reader whose
// RELEASE, which the kernel does not wait for, is still on its way), and
// an answer for that handle (ENOENT) failed the open.
func (f *FS) byPath(ctx context.Context, fh gofs.FileHandle) bool {
	if fh == nil {
		return true
	}
	fc, ok := ctx.(*fuse.Context)
	if !ok {
		return false
	}
	_, ok = f.pathGetattrs.Load(fc.Cancel)
	return ok
}
