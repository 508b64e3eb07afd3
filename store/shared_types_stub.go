package store

import "encoding/json"

// Declarations swrite owns (store/shared.go on its branch), stubbed here
// so that the read side builds before the merge. The lead deletes this
// file, and the sharedStub line of Store, at the merge.

// uploadKey is the tracked state of an upload/<id> key: its ModRev and
// the host that holds it.
type uploadKey struct {
	rev  int64
	host string
}

// sharedStub holds the fields swrite declares on Store.
type sharedStub struct {
	// uploadKeys: the upload/<id> keys of the catalog as this host knows
	// them (Scan, Watch, own commits); guarded by mu.
	uploadKeys map[string]uploadKey
}

// uploadKeyGone is called, with no store lock held, for every DELETE of
// an upload/<id> key the watch reports (swrite: kill the orphan).
func (s *Store) uploadKeyGone(id string) {}

// prefixUpload: upload/<id> -> JSON {"host": H, "since": RFC3339}, Leased
// (shared catalogs only).
const prefixUpload = "upload/"

// uploadsElsewhere reports whether another host holds image id's upload
// key. Must hold s.mu.
func (s *Store) uploadsElsewhere(id string) bool {
	k, ok := s.uploadKeys[id]
	return ok && k.rev != 0 && k.host != s.opts.Host
}

// uploadHost returns the host an upload/<id> value names ("" if none).
func uploadHost(v []byte) string {
	var u struct {
		Host string `json:"host"`
	}
	json.Unmarshal(v, &u)
	return u.Host
}
