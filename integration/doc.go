// Package integration holds the FUSE integration tests of imagefs: each
// test mounts a real filesystem by running the real imagefs binary as a
// subprocess on a temporary store, drives it with the real tools operators
// use (cp, dd, cat, a shell redirection, rsync, qemu-img, getfattr and
// setfattr, mv, rm, rmdir) and with plain system calls, and checks the
// bytes, properties and errnos that ../shared/docs/layout.md promises.
//
// The tests need root and /dev/fuse. Without them they are skipped, except
// when CI=true, where they fail. Tools they drive: qemu-img, rsync,
// getfattr/setfattr, cmp, md5sum, sha512sum, umount.
//
// Run them with
//
//	go test -count=1 ./integration/
//
// go test -race ./integration/ (or IMAGEFS_RACE=1) builds the daemon with
// the race detector too; a race the daemon reports fails the test that was
// running.
package integration
