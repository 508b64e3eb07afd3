package store

import (
	"errors"
	"fmt"
	"syscall"
)

// Errors returned by the store. Each is wrapped with a message naming the
// image, key or rule; test with errors.Is. fs/ maps each to one errno.
var (
	// ErrNotFound: no such image, property or scratch file (ENOENT).
	ErrNotFound = errors.New("not found")
	// ErrExists: the name or key is taken (EEXIST).
	ErrExists = errors.New("already exists")
	// ErrImmutable: sealed image data or a system-maintained property; nobody
	// may change it, root included (EPERM).
	ErrImmutable = errors.New("immutable")
	// ErrPermission: the caller is not allowed to do this (EACCES).
	ErrPermission = errors.New("permission denied")
	// ErrNotPermitted: the operation is refused by policy (EPERM), for
	// example deleting a protected image.
	ErrNotPermitted = errors.New("operation not permitted")
	// ErrInvalid: a value or name breaks a rule (EINVAL).
	ErrInvalid = errors.New("invalid")
	// ErrTooBig: a value exceeds its size limit (E2BIG).
	ErrTooBig = errors.New("too big")
	// ErrQuota: too many properties on one image (ENOSPC).
	ErrQuota = errors.New("quota exceeded")
	// ErrNoSpace: the catalog's filesystem lacks the free space a commit
	// needs (ENOSPC); nothing was changed. It wraps syscall.ENOSPC.
	ErrNoSpace = fmt.Errorf("%w", syscall.ENOSPC)
	// ErrRefused: the uploaded data is not an acceptable VHD; the image
	// is now killed (EINVAL at the writer's close).
	ErrRefused = errors.New("upload refused")
	// ErrCrossDirectory: a rename between two directories (another image,
	// or properties/ and the image directory) is refused. fs maps it to
	// EPERM, not EXDEV: after EXDEV mv would copy and remove, and a copy
	// into an image directory is an upload.
	ErrCrossDirectory = errors.New("cross-directory move")
	// ErrBusy: the object is in use in a way that forbids the change (EBUSY).
	ErrBusy = errors.New("busy")
	// ErrCatalog: the catalog's database failed to read or commit; nothing
	// was changed (EIO).
	ErrCatalog = errors.New("catalog error")
	// ErrUnavailable: a shared catalog could not be reached (or did not
	// answer) within the call's deadline; the change was refused, or its
	// outcome is unknown until the catalog answers again (EAGAIN).
	ErrUnavailable = errors.New("catalog unavailable")
	// ErrDataStore: a remote data store (Swift) could not be reached
	// within its bounded wait, refused a request, or served data that
	// does not match the catalog's size and hashes (EIO). A seal that
	// fails with it kills the image with the reason.
	ErrDataStore = errors.New("data store error")
)
