package fs

import (
	"fmt"
	"syscall"
	"testing"

	"github.com/imagefs/imagefs/store"
)

// TestUnavailableIsEAGAIN: a catalog that cannot be reached refuses a
// change with EAGAIN (try again), not EIO.
func TestUnavailableIsEAGAIN(t *testing.T) {
	err := fmt.Errorf("%w: etcd: context deadline exceeded", store.ErrUnavailable)
	if got := toErrno(err); got != syscall.EAGAIN {
		t.Fatalf("toErrno(%v) = %v, want EAGAIN", err, got)
	}
}
