package store

import "fmt"

// AttrChange is a change of a file's attributes by setattr (image.vhd, a
// scratch file: SetDataAttr; a property file: SetPropertyFileAttr): a
// size (truncate, ftruncate) when HasSize; mode, owner and times
// otherwise, which the store accepts and ignores where the file may be
// changed and refuses where it may not.
type AttrChange struct {
	HasSize bool
	Size    int64 // bytes; with HasSize
}

// SetDataAttr applies change a by c to image id's data. u is the upload
// the change comes through: a write descriptor's (ftruncate), a scratch
// file's, or nil for a change of image.vhd by path.
//
//   - Through u, a size truncates u's staged data (the writer was checked
//     at its open); a scratch file accepts and ignores every other change.
//   - By path (u nil) or without a size: sealed data refuses every change
//     (ErrImmutable, root included) and a caller that is not the owner or
//     root is refused (ErrPermission).
//   - A size by path (truncate(2) of image.vhd) sets the staged size of
//     the upload in progress without sealing it: the seal stays at its
//     writer's close. With no upload in progress the data is empty: size
//     0 changes nothing, any other size is ErrInvalid (image.vhd gets its
//     size from the data written into it).
//
// Errors: ErrNotFound, ErrImmutable, ErrPermission, ErrInvalid, and those
// of Upload.Truncate.
func (s *Store) SetDataAttr(c Caller, id string, u *Upload, a AttrChange) error {
	if u != nil && a.HasSize {
		return u.Truncate(a.Size)
	}
	if u != nil && !u.IsImageData() {
		return nil // a scratch file: mode, owner, times ignored
	}
	s.mu.Lock()
	im, err := s.getLocked(id)
	if err == nil {
		err = writable(c, im)
	}
	var cur *Upload
	if l := s.live[id]; l != nil {
		cur = l.upload
	}
	s.mu.Unlock()
	if err != nil || !a.HasSize || u != nil {
		return err
	}
	if cur == nil {
		if a.Size == 0 {
			return nil
		}
		return fmt.Errorf("%w: image %s has no upload in progress: its data is written, not truncated, into size", ErrInvalid, id)
	}
	return cur.Truncate(a.Size)
}
