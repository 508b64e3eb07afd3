package fs

import (
	"errors"
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/imagefs/imagefs/store"
	"golang.org/x/sys/unix"
)

// toErrno is the one mapping from store errors to errnos.
//
//	ErrNotFound -> ENOENT      ErrExists -> EEXIST       ErrImmutable -> EPERM
//	ErrPermission -> EACCES    ErrNotPermitted -> EPERM  ErrInvalid -> EINVAL
//	ErrTooBig -> E2BIG         ErrQuota -> ENOSPC        ErrRefused -> EINVAL
//	ErrBusy -> EBUSY           ErrCatalog -> EIO         ErrNoSpace -> ENOSPC
//	ErrCrossDirectory -> EPERM errNotUserXattr -> EOPNOTSUPP
//	ErrUnavailable -> EAGAIN      ErrWrongData -> EINVAL (Open only)
//	syscall.Errno -> itself
//
// Two faces map one store error otherwise, here too: toXattrErrno (a
// missing property is ENODATA) and toRenamePropertyErrno (a value the new
// key refuses is EPERM).
func toErrno(err error) syscall.Errno {
	if err == nil {
		return 0
	}
	for _, m := range errnoMap {
		if errors.Is(err, m.err) {
			return m.errno
		}
	}
	var en syscall.Errno
	if errors.As(err, &en) {
		return en
	}
	return syscall.EIO
}

var errnoMap = []struct {
	err   error
	errno syscall.Errno
}{
	{store.ErrNoMember, syscall.ENOENT}, // wraps ErrNotFound
	{store.ErrNotFound, syscall.ENOENT},
	{store.ErrExists, syscall.EEXIST},
	{store.ErrImmutable, syscall.EPERM},
	{store.ErrPermission, syscall.EACCES},
	{store.ErrNotPermitted, syscall.EPERM},
	{store.ErrInvalid, syscall.EINVAL},
	{store.ErrTooBig, syscall.E2BIG},
	{store.ErrQuota, syscall.ENOSPC},
	{store.ErrRefused, syscall.EINVAL},
	{store.ErrNotStaged, syscall.EBUSY}, // wraps ErrBusy; an import is the API's only
	{store.ErrBusy, syscall.EBUSY},
	{store.ErrCatalog, syscall.EIO},
	{store.ErrNoSpace, syscall.ENOSPC},
	{store.ErrUnavailable, syscall.EAGAIN},
	// A remote data store (Swift) unreachable, or its data not matching
	// the catalog: the open fails, as a disk's read error would.
	{store.ErrDataStore, syscall.EIO},
	// Not EXDEV: mv would then copy and remove, and a copy into an image
	// directory is an upload (a property file moved there would kill an
	// unsealed image).
	{store.ErrCrossDirectory, syscall.EPERM},
	{errNotUserXattr, syscall.EOPNOTSUPP},
	// Open's refusal of a shared catalog's data directory: no request
	// meets it (the mount does not start).
	{store.ErrWrongData, syscall.EINVAL},
	// RemoveTag's (the Images API's): the mount rewrites the tags file.
	{store.ErrNoTag, syscall.ENOENT},
}

// errNotUserXattr: an xattr name outside user.* (ACLs, security labels,
// capabilities, trusted.*): imagefs keeps none, as filesystems without
// those namespaces answer (EOPNOTSUPP), for get, set, list and remove.
// ENODATA made ls -l ask three times per file.
var errNotUserXattr = errors.New("xattr namespace not supported")

// toXattrErrno maps a store error for an xattr call: a missing key is
// ENODATA there, not ENOENT.
func toXattrErrno(err error) syscall.Errno {
	if errors.Is(err, store.ErrNotFound) {
		return syscall.ENODATA
	}
	return toErrno(err)
}

// toSetxattrErrno maps a store error for setxattr(2): as toXattrErrno,
// except that an unreachable shared catalog (ErrUnavailable) is EBUSY,
// not EAGAIN: the kernel's VFS takes a setxattr handler's EAGAIN for "no
// handler, try the security module" and turns it into EOPNOTSUPP
// (__vfs_setxattr_noperm), which would tell the caller that the mount
// has no user.* attributes at all. removexattr(2) passes EAGAIN through.
func toSetxattrErrno(err error) syscall.Errno {
	if errors.Is(err, store.ErrUnavailable) {
		return syscall.EBUSY
	}
	return toXattrErrno(err)
}

// toWriteErrno maps a store error for a write(2) (a property file's, an
// upload's): as toErrno, except that an unreachable shared catalog (ErrUnavailable)
// is EBUSY, not EAGAIN: a write(2) of a blocking descriptor is not
// expected to say EAGAIN, and Go's runtime (os.File.Write) takes it for
// "would block" and waits, forever, for the FUSE file to poll writable
// again. The close's commit keeps EAGAIN.
func toWriteErrno(err error) syscall.Errno {
	if errors.Is(err, store.ErrUnavailable) {
		return syscall.EBUSY
	}
	return toErrno(err)
}

// toRenamePropertyErrno maps a store error for a rename in properties/:
// a value (or new key) that breaks the new key's rule is EPERM, because
// rename(2)'s EINVAL means moving a directory into itself, which is what
// mv prints for it.
func toRenamePropertyErrno(err error) syscall.Errno {
	if errors.Is(err, store.ErrInvalid) {
		return syscall.EPERM
	}
	return toErrno(err)
}

// renameMode translates rename(2)'s flags: RENAME_NOREPLACE is passed to
// the store, which decides it under its lock; RENAME_EXCHANGE and
// RENAME_WHITEOUT are not supported (EINVAL).
func renameMode(flags uint32) (store.RenameMode, syscall.Errno) {
	switch flags {
	case 0:
		return store.RenameReplace, 0
	case unix.RENAME_NOREPLACE:
		return store.RenameNoReplace, 0
	}
	return 0, syscall.EINVAL
}

// renameWithin translates a rename(2) whose source directory is d (an
// image directory or a properties/ directory): a target directory that
// is not d's kind of directory of d's image is store.ErrCrossDirectory,
// and flags go through renameMode.
func renameWithin[D interface {
	*imageDir | *propsDir
	imageID() string
}](d D, newParent gofs.InodeEmbedder, flags uint32) (store.RenameMode, syscall.Errno) {
	if np, ok := newParent.(D); !ok || np.imageID() != d.imageID() {
		return 0, toErrno(store.ErrCrossDirectory)
	}
	return renameMode(flags)
}
