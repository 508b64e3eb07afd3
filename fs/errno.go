package fs

import (
	"context"
	"errors"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/imagefs/imagefs/store"
)

// toErrno is the one mapping from store errors to errnos.
//
//	ErrNotFound -> ENOENT      ErrExists -> EEXIST       ErrImmutable -> EPERM
//	ErrPermission -> EACCES    ErrNotPermitted -> EPERM  ErrInvalid -> EINVAL
//	ErrTooBig -> E2BIG         ErrQuota -> ENOSPC        ErrRefused -> EINVAL
//	ErrBusy -> EBUSY           ErrCatalog -> EIO         syscall.Errno -> itself
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
	{store.ErrNotFound, syscall.ENOENT},
	{store.ErrExists, syscall.EEXIST},
	{store.ErrImmutable, syscall.EPERM},
	{store.ErrPermission, syscall.EACCES},
	{store.ErrNotPermitted, syscall.EPERM},
	{store.ErrInvalid, syscall.EINVAL},
	{store.ErrTooBig, syscall.E2BIG},
	{store.ErrQuota, syscall.ENOSPC},
	{store.ErrRefused, syscall.EINVAL},
	{store.ErrBusy, syscall.EBUSY},
	{store.ErrCatalog, syscall.EIO},
}

// caller returns who made the request.
func caller(ctx context.Context) store.Caller {
	if c, ok := fuse.FromContext(ctx); ok {
		return store.Caller{UID: c.Uid, GID: c.Gid}
	}
	return store.Root
}
