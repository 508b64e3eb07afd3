package fs

import (
	"context"
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"
)

// go-fuse takes a directory without Rmdir (or Unlink) as one where
// rmdir(2) (unlink(2)) succeeds: it answers OK and drops the child from
// its tree, so `rmdir MNT/by-id` made by-id/ vanish until the next mount.
// Every directory that has no such operation of its own refuses it here.

func (r *rootNode) Rmdir(ctx context.Context, name string) syscall.Errno { return syscall.EPERM }

func (d *byIDDir) Rmdir(ctx context.Context, name string) syscall.Errno { return syscall.EPERM }

// Rmdir of properties/ (the only directory in an image directory): EPERM,
// but for the process that just deleted the image by unlinking its
// image.vhd (delete.go), for which the directory is gone already.
func (d *imageDir) Rmdir(ctx context.Context, name string) syscall.Errno {
	if name == "properties" && !d.byID && d.image() == nil && d.fsys.ghostFor(ctx, d.id) != nil {
		return 0
	}
	return syscall.EPERM
}

func (d *byPropertyDir) Rmdir(ctx context.Context, name string) syscall.Errno { return syscall.EPERM }

func (d *viewKeyDir) Rmdir(ctx context.Context, name string) syscall.Errno { return syscall.EPERM }

// Unlink of a view's symlink.
func (d *viewValueDir) Unlink(ctx context.Context, name string) syscall.Errno { return syscall.EPERM }

var (
	_ = (gofs.NodeRmdirer)((*rootNode)(nil))
	_ = (gofs.NodeRmdirer)((*byIDDir)(nil))
	_ = (gofs.NodeRmdirer)((*imageDir)(nil))
	_ = (gofs.NodeRmdirer)((*byPropertyDir)(nil))
	_ = (gofs.NodeRmdirer)((*viewKeyDir)(nil))
	_ = (gofs.NodeUnlinker)((*viewValueDir)(nil))
)
