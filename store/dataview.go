package store

// DataVisible reports whether the directory of image im lists image.vhd
// (and looks it up): images/<name>/ when byID is false, by-id/<id>/ when
// true.
//
// Sealed data (active, deactivated) is listed in both, except in by-id/
// while its seal is provisional (reopen.go). by-id/<id>/image.vhd
// is the sealed bytes or ENOENT, so it lists nothing else. images/<name>/
// lists the upload target of an unsealed image (queued, saving, killed) as
// DataPresent says: a writer uploads into it, and rm -r and find -delete
// must find it first, as their unlink of it deletes the image (fs/delete.go)
// before they reach the property files.
func (s *Store) DataVisible(im *Image, byID bool) bool {
	switch {
	case im == nil:
		return false
	case byID && im.Status.Sealed() && s.Provisional(im.ID):
		return false // its writer may still change it (reopen.go)
	case im.Status.Sealed():
		return true
	case byID:
		return false
	}
	return s.DataPresent(im.ID)
}

// DataBlocks returns the 512-byte blocks the sealed data of image id
// occupies in the DataBackend: st_blocks of image.vhd, fewer than its size
// when the data file has holes (a mostly empty fixed VHD). Errors wrap
// ErrNotFound when id has no sealed data.
func (s *Store) DataBlocks(id string) (int64, error) {
	return s.data.Blocks(id)
}
