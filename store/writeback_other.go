//go:build !linux

package store

func startWriteback(fd uintptr, off, n int64) {}

func dropWritten(fd uintptr, off, n int64) {}
