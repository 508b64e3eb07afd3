package store

// DataCache is a DataBackend that keeps copies of sealed data on this
// host apart from the data store itself (Swift: the verified cache of
// each host). Deleting an image removes its data through the deleting
// host's Remove; every other host learns of the delete from the catalog,
// and the store tells its backend to drop its copy: for each image
// another host deletes (the watch, a relist, a catch-up from the
// snapshot), and at Open for each copy of an image the catalog no longer
// has (a host that was down during the delete).
type DataCache interface {
	// CachedIDs returns the ids of the images this host has a copy of.
	CachedIDs() []string
	// Evict drops this host's copy of image id, deleted from the
	// catalog: at once when no file has it open, else at its last close
	// (an open file reads to its end). Nothing happens when there is no
	// copy. It does not touch the data store.
	Evict(id string)
}

// evictCopy tells a DataCache backend that another host deleted image
// id. It returns at once (Evict runs in a goroutine of its own): the
// caller holds the store's locks.
func (s *Store) evictCopy(id string) {
	if dc, ok := s.data.(DataCache); ok {
		go dc.Evict(id)
	}
}

// evictOrphanCopies drops the copies a DataCache backend holds of images
// the loaded catalog does not have (deleted while this host was down).
// Called by Open once the catalog is loaded, before the watch starts.
func (s *Store) evictOrphanCopies() {
	dc, ok := s.data.(DataCache)
	if !ok {
		return
	}
	var gone []string
	for _, id := range dc.CachedIDs() {
		if s.published(id) == nil {
			gone = append(gone, id)
		}
	}
	for _, id := range gone {
		dc.Evict(id)
	}
	if len(gone) > 0 {
		s.log.Info("copies of images the catalog no longer has evicted from this host's cache", "images", len(gone))
	}
}
