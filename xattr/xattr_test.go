package xattr

import (
	"syscall"
	"testing"

	"github.com/imagefs/imagefs/store"
	"github.com/stretchr/testify/assert"
)

func TestKey(t *testing.T) {
	k, ok := Key("user.os_distro")
	assert.True(t, ok)
	assert.Equal(t, "os_distro", k)
	for _, n := range []string{"security.selinux", "system.posix_acl_access", "trusted.x", "user.", "os_distro"} {
		_, ok := Key(n)
		assert.False(t, ok, n)
	}
	assert.Equal(t, "user.min_ram", Name("min_ram"))
}

func TestList(t *testing.T) {
	assert.Equal(t, []byte("user.a\x00user.bc\x00"), List([]string{"a", "bc"}))
	assert.Empty(t, List(nil))
}

func TestCopy(t *testing.T) {
	n, errno := Copy(nil, []byte("superos"))
	assert.Equal(t, uint32(7), n)
	assert.Equal(t, syscall.Errno(0), errno, "size query")

	n, errno = Copy(make([]byte, 3), []byte("superos"))
	assert.Equal(t, uint32(7), n)
	assert.Equal(t, syscall.ERANGE, errno, "short buffer")

	buf := make([]byte, 10)
	n, errno = Copy(buf, []byte("superos"))
	assert.Equal(t, syscall.Errno(0), errno)
	assert.Equal(t, "superos", string(buf[:n]))
}

func TestMode(t *testing.T) {
	m, errno := Mode(0)
	assert.Equal(t, store.SetAny, m)
	assert.Zero(t, errno)
	m, _ = Mode(FlagCreate)
	assert.Equal(t, store.SetCreate, m)
	m, _ = Mode(FlagReplace)
	assert.Equal(t, store.SetReplace, m)
	_, errno = Mode(3)
	assert.Equal(t, syscall.EINVAL, errno)
}
