package store

import "github.com/imagefs/imagefs/store/kv"

// STUB until main (memcmd's store/memindex.go) is merged: deleted then.

type memIndex struct{}

func newMemIndex() *memIndex                   { return &memIndex{} }
func (m *memIndex) apply(old, new *Image)      {}
func (m *memIndex) iter(lo, hi string) kv.Iter { return emptyIter{} }

type emptyIter struct{}

func (emptyIter) First() bool          { return false }
func (emptyIter) SeekGE(k []byte) bool { return false }
func (emptyIter) Next() bool           { return false }
func (emptyIter) Valid() bool          { return false }
func (emptyIter) Key() []byte          { return nil }
func (emptyIter) Value() []byte        { return nil }
func (emptyIter) Error() error         { return nil }
func (emptyIter) Close() error         { return nil }
