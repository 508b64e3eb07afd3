// Package xattr maps image properties to Linux extended attributes: the
// property key k is the attribute "user.k" on image.vhd and on the image
// directory. It implements the buffer and flag rules of getxattr(2),
// listxattr(2) and setxattr(2); fs/ calls it, store/ keeps the values.
package xattr

import (
	"strings"
	"syscall"

	"github.com/imagefs/imagefs/store"
)

// Prefix is the namespace properties live in.
const Prefix = "user."

// Setxattr flags from <sys/xattr.h>.
const (
	FlagCreate  = 0x1 // XATTR_CREATE: fail with EEXIST if the attribute exists
	FlagReplace = 0x2 // XATTR_REPLACE: fail with ENODATA if it does not
)

// Key returns the property key of attribute name, and false for names
// outside the user namespace (security.*, system.*, trusted.*), which
// imagefs does not store.
func Key(name string) (string, bool) {
	k, ok := strings.CutPrefix(name, Prefix)
	return k, ok && k != ""
}

// Name returns the attribute name of property key.
func Name(key string) string { return Prefix + key }

// NameMax is the kernel's limit on attribute names in bytes
// (XATTR_NAME_MAX): getxattr(2) of a longer name fails with ERANGE.
const NameMax = 255

// List returns the listxattr(2) payload for keys: each "user.<key>"
// followed by a NUL. Keys whose attribute name would exceed NameMax (a
// catalog may hold keys of up to 255 bytes from before they were
// refused) are left out: no getxattr could read them; their property
// files show them.
func List(keys []string) []byte {
	n := 0
	for _, k := range keys {
		n += len(Prefix) + len(k) + 1
	}
	b := make([]byte, 0, n)
	for _, k := range keys {
		if len(Prefix)+len(k) > NameMax {
			continue
		}
		b = append(b, Prefix...)
		b = append(b, k...)
		b = append(b, 0)
	}
	return b
}

// Copy copies value into dest as getxattr(2) and listxattr(2) do: it
// returns the length of value, and ERANGE when dest is non-empty but too
// short (an empty dest asks for the size only).
func Copy(dest, value []byte) (uint32, syscall.Errno) {
	if len(dest) > 0 && len(dest) < len(value) {
		return uint32(len(value)), syscall.ERANGE
	}
	copy(dest, value)
	return uint32(len(value)), 0
}

// Mode converts setxattr(2) flags to a store.SetMode. Unknown flags are
// EINVAL.
func Mode(flags uint32) (store.SetMode, syscall.Errno) {
	switch flags {
	case 0:
		return store.SetAny, 0
	case FlagCreate:
		return store.SetCreate, 0
	case FlagReplace:
		return store.SetReplace, 0
	}
	return 0, syscall.EINVAL
}
