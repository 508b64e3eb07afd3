package store

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// lockStore takes STORE/lock (flock, exclusive, not waiting) for a
// store whose catalog is shared: there no embedded catalog locks the
// store directory, yet this host's staging (and its reconcile at Open,
// and imagefs fsck) belongs to one process at a time. The lock goes
// with the process (its file descriptor); release it with unlockStore.
// Errors: ErrBusy when another process holds it (the store is mounted,
// or checked), else the open's.
func lockStore(dir string) (*os.File, error) {
	path := filepath.Join(dir, "lock")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|syscall.O_CLOEXEC, modeFile)
	if err != nil {
		return nil, fmt.Errorf("lock store %s: %w", dir, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("%w: store %s is locked by another process (is it mounted, or being checked?)", ErrBusy, dir)
		}
		return nil, fmt.Errorf("lock store %s: %w", dir, err)
	}
	return f, nil
}

// unlockStore releases a lock of lockStore (nil: none).
func unlockStore(f *os.File) {
	if f != nil {
		f.Close()
	}
}
