package swiftdata

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"sort"
	"strings"
	"time"

	"github.com/imagefs/imagefs/store"
	"github.com/ncw/swift/v2"
)

// The data store as fsck sees it (store.DataObjects): the manifests and
// the segments grouped by upload, each manifest's segments, the removal
// of orphans now (not after the delete delay), and an image's data
// streamed from Swift segment by segment, past the cache.

// deletedHeader is the manifest's metadata a delete (Remove) sets before
// the objects go after the delete delay: "TIME HOST", TIME in RFC 3339
// (UTC) and HOST the deleting host. Every host, and fsck, sees an image
// in its delayed-delete window by it.
const deletedHeader = "X-Object-Meta-Imagefs-Deleted"

// maxManifestBytes bounds the manifest read (1,000 segments of about 200
// bytes each are 200 KB).
const maxManifestBytes = 4 << 20

// listCtx returns the context of a listing (many pages: no deadline on
// the whole; the connection's timeout bounds each call).
func listCtx() (context.Context, context.CancelFunc) { return context.WithCancel(context.Background()) }

// ListObjects lists the manifests and the segments (store.DataObjects).
// The segments are grouped by upload: the prefix ID/UPLOAD of their
// names; UPLOAD ends with "@HOST" when the upload's host is known.
func (b *Backend) ListObjects() (*store.ObjectListing, error) {
	ctx, cancel := listCtx()
	defer cancel()
	ls := &store.ObjectListing{Manifests: map[string]time.Time{}}
	objs, err := b.conn.ObjectsAll(ctx, b.cfg.Container, nil)
	if err != nil && !errors.Is(err, swift.ContainerNotFound) {
		return nil, failure("list container "+b.cfg.Container, err)
	}
	for _, o := range objs {
		ls.Manifests[o.Name] = o.LastModified
	}
	segs, err := b.conn.ObjectsAll(ctx, b.segments, nil)
	if err != nil && !errors.Is(err, swift.ContainerNotFound) {
		return nil, failure("list container "+b.segments, err)
	}
	byPrefix := map[string]*store.UploadObjects{}
	for _, o := range segs {
		prefix := o.Name
		if i := strings.LastIndexByte(o.Name, '/'); i > 0 {
			prefix = o.Name[:i]
		}
		u := byPrefix[prefix]
		if u == nil {
			id, upload, _ := strings.Cut(prefix, "/")
			u = &store.UploadObjects{ID: id, Prefix: prefix}
			if i := strings.LastIndexByte(upload, '@'); i >= 0 {
				u.Host = upload[i+1:]
			}
			byPrefix[prefix] = u
		}
		u.Segments = append(u.Segments, store.SegmentObject{Name: o.Name, Size: o.Bytes, MD5: o.Hash, Modified: o.LastModified})
	}
	for _, u := range byPrefix {
		ls.Uploads = append(ls.Uploads, *u)
	}
	sort.Slice(ls.Uploads, func(i, j int) bool { return ls.Uploads[i].Prefix < ls.Uploads[j].Prefix })
	return ls, nil
}

// Manifest reads the manifest of image id now (store.DataObjects):
// errors wrap store.ErrNotFound when there is none, store.ErrDataStore
// when Swift fails.
func (b *Backend) Manifest(id string) (*store.ManifestInfo, error) {
	ctx, cancel := b.call()
	defer cancel()
	info, h, err := b.conn.Object(ctx, b.cfg.Container, id)
	if errors.Is(err, swift.ObjectNotFound) || errors.Is(err, swift.ContainerNotFound) {
		return nil, fmt.Errorf("%w: no object %s in %s", store.ErrNotFound, id, b.cfg.Container)
	}
	if err != nil {
		return nil, failure("read the manifest of image "+id, err)
	}
	mi := &store.ManifestInfo{Size: info.Bytes, Modified: info.LastModified}
	if v := h[deletedHeader]; v != "" {
		at, host, _ := strings.Cut(v, " ")
		if t, err := time.Parse(time.RFC3339Nano, at); err == nil {
			mi.DeletedAt, mi.DeletedBy = t, host
		}
	}
	if !h.IsLargeObjectSLO() {
		return mi, nil // a plain object: its own bytes
	}
	resp, _, err := b.conn.Call(ctx, b.conn.StorageUrl, swift.RequestOpts{
		Container: b.cfg.Container, ObjectName: id, Operation: "GET",
		Parameters: url.Values{"multipart-manifest": {"get"}},
		ErrorMap:   map[int]error{404: swift.ObjectNotFound},
		OnReAuth:   func() (string, error) { return b.conn.StorageUrl, nil },
	})
	if errors.Is(err, swift.ObjectNotFound) {
		return nil, fmt.Errorf("%w: no object %s in %s", store.ErrNotFound, id, b.cfg.Container)
	}
	if err != nil {
		return nil, failure("read the manifest of image "+id, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxManifestBytes))
	if err != nil {
		return nil, failure("read the manifest of image "+id, err)
	}
	var segs []struct {
		Name  string `json:"name"`
		Bytes int64  `json:"bytes"`
		Hash  string `json:"hash"`
	}
	if err := json.Unmarshal(raw, &segs); err != nil {
		return nil, fmt.Errorf("%w: the manifest of image %s does not decode: %v", store.ErrDataStore, id, err)
	}
	mi.Segments = []store.SegmentObject{}
	mi.Size = 0
	for _, s := range segs {
		name := strings.TrimPrefix(s.Name, "/")
		container, obj, _ := strings.Cut(name, "/")
		if container != b.segments {
			obj = name // another container's: named whole, never found in the listing
		}
		mi.Segments = append(mi.Segments, store.SegmentObject{Name: obj, Size: s.Bytes, MD5: s.Hash})
		mi.Size += s.Bytes
	}
	return mi, nil
}

// RemoveManifest deletes the manifest of image id now (its segments
// stay; store.DataObjects). None is no error.
func (b *Backend) RemoveManifest(id string) error {
	ctx, cancel := b.call()
	defer cancel()
	err := b.conn.ObjectDelete(ctx, b.cfg.Container, id)
	if err != nil && !errors.Is(err, swift.ObjectNotFound) && !errors.Is(err, swift.ContainerNotFound) {
		return failure("delete the manifest of image "+id, err)
	}
	return nil
}

// RemoveSegments deletes the segments named PREFIX/... now, and an
// object named PREFIX itself (a stray name without an upload's "/",
// which ListObjects gives as its own prefix) (store.DataObjects).
func (b *Backend) RemoveSegments(prefix string) error {
	if err := b.deleteSegments(prefix); err != nil {
		return failure("delete the segments "+prefix+"/", err)
	}
	ctx, cancel := b.call()
	defer cancel()
	if err := b.conn.ObjectDelete(ctx, b.segments, prefix); err != nil && !errors.Is(err, swift.ObjectNotFound) && !errors.Is(err, swift.ContainerNotFound) {
		return failure("delete the segment "+prefix, err)
	}
	return nil
}

// ReadData streams the data of image id from Swift, each segment of its
// manifest read on its own (not through the manifest, whose reads Swift
// cuts short at a segment that does not match it), past this host's
// cache (store.DataObjects). A missing segment fails the read with an
// error wrapping store.ErrNotFound.
func (b *Backend) ReadData(id string) (io.ReadCloser, error) {
	mi, err := b.Manifest(id)
	if err != nil {
		return nil, err
	}
	if mi.Segments == nil {
		f, _, err := b.conn.ObjectOpen(context.Background(), b.cfg.Container, id, false, nil)
		if err != nil {
			return nil, b.readErr(id, b.cfg.Container, id, err)
		}
		return f, nil
	}
	return &segReader{b: b, id: id, segs: mi.Segments}, nil
}

func (b *Backend) readErr(id, container, name string, err error) error {
	if errors.Is(err, swift.ObjectNotFound) || errors.Is(err, swift.ContainerNotFound) {
		return fmt.Errorf("%w: image %s: object %s/%s is missing", store.ErrNotFound, id, container, name)
	}
	return failure(fmt.Sprintf("image %s: read %s/%s", id, container, name), err)
}

// segReader reads the segments of a manifest one after the other.
type segReader struct {
	b    *Backend
	id   string
	segs []store.SegmentObject
	cur  io.ReadCloser
	n    int64 // bytes of the current segment read
}

func (r *segReader) Read(p []byte) (int, error) {
	for {
		if r.cur == nil {
			if len(r.segs) == 0 {
				return 0, io.EOF
			}
			f, _, err := r.b.conn.ObjectOpen(context.Background(), r.b.segments, r.segs[0].Name, false, nil)
			if err != nil {
				return 0, r.b.readErr(r.id, r.b.segments, r.segs[0].Name, err)
			}
			r.cur, r.n = f, 0
		}
		n, err := r.cur.Read(p)
		r.n += int64(n)
		if err == io.EOF {
			r.cur.Close()
			r.cur = nil
			r.segs = r.segs[1:]
			err = nil
			if n == 0 {
				continue
			}
		}
		if err != nil {
			err = r.b.readErr(r.id, r.b.segments, r.segs[0].Name, err)
		}
		return n, err
	}
}

func (r *segReader) Close() error {
	if r.cur != nil {
		r.cur.Close()
		r.cur = nil
	}
	return nil
}

// markDeleted sets the manifest's deletedHeader (Remove): every host and
// fsck see that the image's objects wait for the delete delay. No
// manifest is no error.
func (b *Backend) markDeleted(id string, at time.Time) error {
	ctx, cancel := b.call()
	defer cancel()
	v := at.UTC().Format(time.RFC3339Nano) + " " + b.cfg.Host
	err := b.conn.ObjectUpdate(ctx, b.cfg.Container, id, swift.Headers{deletedHeader: strings.TrimSpace(v)})
	if err != nil && !errors.Is(err, swift.ObjectNotFound) && !errors.Is(err, swift.ContainerNotFound) {
		return failure("mark the manifest of deleted image "+id, err)
	}
	return nil
}

var _ store.DataObjects = (*Backend)(nil)
