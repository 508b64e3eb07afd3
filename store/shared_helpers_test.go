package store

import (
	"encoding/json"

	"github.com/imagefs/imagefs/store/kv"
)

// publish commits im as the record of its image (a test's direct change
// of a record, through update). Must hold s.mu.
func (s *Store) publish(im *Image, oldName string) error {
	_ = oldName // update derives a rename from the record
	_, err := s.update(im.ID, kv.Grows, func(*Image) (*Image, error) { return im.clone(), nil })
	return err
}

// jsonSize is the size of im's record as the catalog stores it.
func jsonSize(im *Image) (int, error) {
	v, err := json.Marshal(im)
	return len(v), err
}
