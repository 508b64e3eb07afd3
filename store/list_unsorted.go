package store

// ListUnsorted is every published image, in no particular order: List
// without its sort by name, for a caller that orders them by its own
// keys (the Images API's list, whose order is total). The records are
// the published ones, shared: read-only.
func (s *Store) ListUnsorted() []*Image {
	s.commitMu.RLock()
	defer s.commitMu.RUnlock()
	s.pubMu.RLock()
	defer s.pubMu.RUnlock()
	out := make([]*Image, 0, len(s.images))
	for _, im := range s.images {
		out = append(out, im)
	}
	return out
}
