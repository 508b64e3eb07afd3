//go:build linux

package store

import "golang.org/x/sys/unix"

// startWriteback asks the kernel to start writing bytes [off, off+n) of
// the file to disk, without waiting for it.
func startWriteback(fd uintptr, off, n int64) {
	unix.SyncFileRange(int(fd), off, n, unix.SYNC_FILE_RANGE_WRITE)
}

// dropWritten waits until bytes [off, off+n) of the file are written to
// disk and drops them from the page cache. Pages written again meanwhile
// stay (fadvise drops clean pages only), so nothing is ever lost.
func dropWritten(fd uintptr, off, n int64) {
	unix.SyncFileRange(int(fd), off, n,
		unix.SYNC_FILE_RANGE_WAIT_BEFORE|unix.SYNC_FILE_RANGE_WRITE|unix.SYNC_FILE_RANGE_WAIT_AFTER)
	unix.Fadvise(int(fd), off, n, unix.FADV_DONTNEED)
}
