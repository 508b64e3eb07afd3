package store

import "github.com/imagefs/imagefs/store/kv"

// publish commits im as the record of its image (a test's direct change
// of a record, through update). Must hold s.mu.
func (s *Store) publish(im *Image, oldName string) error {
	_ = oldName // update derives a rename from the record
	_, err := s.update(im.ID, kv.Grows, func(*Image) (*Image, error) { return im.clone(), nil })
	return err
}
