package store

import "github.com/imagefs/imagefs/store/kv"

// catalogReachable reports whether a change could reach a shared catalog
// now (kv.Prober; nil on the embedded catalog): nil when the catalog
// answered within about a second or answers now, ErrUnavailable (EAGAIN)
// when it does not answer within the catalog's timeout (within about a
// second while it is known unreachable), ErrCatalog (EIO) when it is not
// the catalog this host mounted (kv.ErrReplaced). For a write whose
// commit comes later (a property file's close, whose error shells
// ignore): refused at the write(2) instead. A nil promises nothing about
// the commit.
func (s *Store) catalogReachable() error {
	p, ok := s.cat.kv.(kv.Prober)
	if !ok {
		return nil
	}
	ctx, cancel := s.cat.ctx()
	defer cancel()
	return catalogErr(p.Probe(ctx))
}

// catalogReplaced returns the error of a shared catalog found not to be
// the one this host mounted (wiped, recreated or restored under it:
// kv.ErrReplaced), or nil; it sends no request.
func (s *Store) catalogReplaced() error {
	if p, ok := s.cat.kv.(kv.Prober); ok {
		if err := p.Replaced(); err != nil {
			return catalogErr(err)
		}
	}
	return nil
}
