package fs

import (
	"context"
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/imagefs/imagefs/store"
)

// byIDDir is by-id/: the same images under their ids, the stable path
// (imageListDir with byID). Images are made, deleted and renamed under
// images/ only.
type byIDDir struct {
	imageListDir
}

var _ = (gofs.NodeLookuper)((*byIDDir)(nil))
var _ = (gofs.NodeReaddirer)((*byIDDir)(nil))
var _ = (gofs.NodeGetattrer)((*byIDDir)(nil))
var _ = (gofs.NodeRmdirer)((*byIDDir)(nil))

// Rmdir refuses (root.go says why).
func (d *byIDDir) Rmdir(ctx context.Context, name string) syscall.Errno { return syscall.EPERM }

// forgetImage drops a deleted image's directory entries from the kernel's
// caches (the other tree's entry is not known to the kernel as removed).
func (f *FS) forgetImage(im *store.Image) {
	f.dropEntry(f.byIDInode(), im.ID)
}

func (f *FS) byIDInode() *gofs.Inode {
	return f.root().GetChild("by-id")
}
