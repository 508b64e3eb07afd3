package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/imagefs/imagefs/store/kv"
)

// Glance's interoperable image import, method glance-direct: a stage
// (OpenStage ... EndStage) is an upload that stops short of the seal, and
// an import (Import) is that seal, run in the background. The statuses:
//
//	queued --OpenStage--> uploading --Import--> importing --seal--> active
//	uploading --AbortStage, DiscardUpload, a remount--> queued
//	importing --refused seal, failure, a remount--> queued
//
// A refused import leaves the image queued (as Glance reverts a failed
// import), its staged data dropped, the reason in its import task's
// message. The staged data lives in this host's STORE/staging; the
// record names the host (KeyStageHost), and only that host imports it. A
// remount drops staged data (the image is queued again): staging does not
// outlive the daemon.

const (
	// KeyStageHost names the host whose STORE/staging holds the staged
	// data of an uploading or importing image (a system property).
	KeyStageHost = "imagefs_stage_host"
	// KeyImportTasks holds the image's import tasks, one JSON object
	// (ImportTask) per line, oldest first (a system property).
	KeyImportTasks = "imagefs_import_tasks"
)

// MaxImportRequest bounds the import request kept in a task (bytes of
// JSON): a larger one is ErrTooBig.
const MaxImportRequest = 8 << 10

// maxImportTasks is how many tasks an image keeps (the oldest go first);
// taskTTL is how long a finished task is listed (Glance's
// task_time_to_live, 48 h).
const (
	maxImportTasks = 5
	taskTTL        = 48 * time.Hour
)

// Task statuses, as Glance's.
const (
	TaskPending    = "pending"
	TaskProcessing = "processing"
	TaskSuccess    = "success"
	TaskFailure    = "failure"
)

// ImportTask is one import of an image (Glance's api_image_import task).
// Times are UTC seconds; ExpiresAt is zero until the task ends.
type ImportTask struct {
	ID        string          `json:"id"`
	Status    string          `json:"status"`
	Owner     string          `json:"owner,omitempty"`   // the project that asked
	UserID    string          `json:"user_id,omitempty"` // the user that asked
	RequestID string          `json:"request_id,omitempty"`
	Request   json.RawMessage `json:"import_req,omitempty"` // the import request as sent
	Message   string          `json:"message"`
	CreatedAt time.Time       `json:"created_at"`
	UpdatedAt time.Time       `json:"updated_at"`
	ExpiresAt time.Time       `json:"expires_at,omitzero"`
}

// ImportTasks returns the tasks of image id that are not expired, oldest
// first. Errors: ErrNotFound (no such image, or c does not see it).
func (s *Store) ImportTasks(c Caller, id string) ([]ImportTask, error) {
	im := s.GetFor(c, id)
	if im == nil {
		return nil, fmt.Errorf("%w: image %s", ErrNotFound, id)
	}
	now := s.opts.Now()
	var out []ImportTask
	for _, t := range parseTasks(im.Extra[KeyImportTasks]) {
		if t.ExpiresAt.IsZero() || t.ExpiresAt.After(now) {
			out = append(out, t)
		}
	}
	return out, nil
}

func parseTasks(v string) []ImportTask {
	var ts []ImportTask
	for _, line := range strings.Split(v, "\n") {
		var t ImportTask
		if line != "" && json.Unmarshal([]byte(line), &t) == nil {
			ts = append(ts, t)
		}
	}
	return ts
}

// setTasks writes ts into im (a clone being changed).
func setTasks(im *Image, ts []ImportTask) {
	if len(ts) == 0 {
		deleteExtra(im, KeyImportTasks)
		return
	}
	lines := make([]string, len(ts))
	for i, t := range ts {
		b, err := json.Marshal(t)
		if err != nil {
			panic(err) // an ImportTask always marshals
		}
		lines[i] = string(b)
	}
	setExtra(im, KeyImportTasks, strings.Join(lines, "\n"))
}

// finishTask ends the task of im in progress (pending or processing), if
// any, with status (TaskSuccess, TaskFailure) and message.
func finishTask(im *Image, status, message string, now time.Time) {
	ts := parseTasks(im.Extra[KeyImportTasks])
	for i := len(ts) - 1; i >= 0; i-- {
		if ts[i].Status == TaskPending || ts[i].Status == TaskProcessing {
			ts[i].Status, ts[i].Message, ts[i].UpdatedAt, ts[i].ExpiresAt = status, message, now, now.Add(taskTTL)
			setTasks(im, ts)
			return
		}
	}
}

// stagedStatus reports whether st is a status of staged data (uploading,
// importing).
func stagedStatus(st Status) bool { return st == StatusUploading || st == StatusImporting }

// errNotQueued: a stage of an image that is not queued.
var errNotQueued = fmt.Errorf("%w: only a queued image takes staged data", ErrBusy)

// ErrNotStaged: an import of an image that is not uploading (nothing
// staged, or its import already started). Wraps ErrBusy.
var ErrNotStaged = fmt.Errorf("%w: the image has no staged data to import", ErrBusy)

// OpenStage starts the stage of image id's data by c (PUT .../stage): the
// image goes from queued to uploading, naming this host as the stage's
// (KeyStageHost), and the returned Upload takes the data (WriteAt, in
// order for hashing as it arrives). End it with EndStage (the data stays
// staged, unsealed, until Import) or AbortStage (the data is dropped,
// the image queued again). Errors: ErrNotFound, ErrPermission (not the
// owner), ErrInvalid (disk_format or container_format unset), ErrBusy
// wrapping errNotQueued (the image is not queued: IsNotQueued) or an
// upload open on this host, ErrCatalog, ErrUnavailable.
func (s *Store) OpenStage(c Caller, id string) (*Upload, error) {
	defer s.deliver()
	s.mu.Lock()
	defer s.mu.Unlock()
	im, err := s.getLocked(id)
	if err == nil {
		err = mayModify(c, im)
	}
	if err != nil {
		return nil, err
	}
	if im.Status != StatusQueued {
		return nil, fmt.Errorf("%w: image %s is %s", errNotQueued, id, im.Status)
	}
	if msg := FormatsMissing(im); msg != "" {
		return nil, fmt.Errorf("%w: image %s: %s", ErrInvalid, id, msg)
	}
	l := s.liveLocked(id)
	if l.upload != nil {
		return nil, fmt.Errorf("%w: image %s has an upload open on this host", ErrBusy, id)
	}
	u, err := s.newUpload(id, "", 0)
	if err != nil {
		return nil, err
	}
	// Never saving: touch finds it dirty and changes no status.
	u.stage, u.dirty, u.started, u.writers = true, true, true, 1
	_, err = s.update(id, kv.Small, func(cur *Image) (*Image, error) {
		if cur == nil {
			return nil, fmt.Errorf("%w: image %s", ErrNotFound, id)
		}
		if cur.Status != StatusQueued || s.uploadsElsewhere(id) {
			return nil, fmt.Errorf("%w: image %s is %s", errNotQueued, id, cur.Status)
		}
		next := cur.clone()
		next.Status = StatusUploading
		setExtra(next, KeyStageHost, s.opts.Host)
		next.UpdatedAt = s.now()
		return next, nil
	})
	if err != nil {
		u.discard()
		return nil, err
	}
	s.pubMu.Lock()
	l.upload = u
	l.unlinked = false
	s.pubMu.Unlock()
	s.log.Info("stage started", "id", id, "uid", c.UID)
	return u, nil
}

// IsNotQueued reports whether err is OpenStage's refusal of an image that
// is not queued.
func IsNotQueued(err error) bool { return errors.Is(err, errNotQueued) }

// EndStage ends a stage whose data arrived whole: the data stays staged
// (not sealed, not readable) and the image uploading, until Import.
// Errors: ErrNotFound (the image was deleted or its staged data
// discarded meanwhile).
func (s *Store) EndStage(u *Upload) error {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.writers--
	if err := u.usable(); err != nil {
		return err
	}
	s.log.Info("staged", "id", u.id, "size", u.size)
	return nil
}

// AbortStage ends a stage whose data did not arrive whole (the client
// went away, the body was short or too big): the staged data is dropped
// and the image queued again. reason is logged. Errors: ErrCatalog (the
// status did not commit: the image stays uploading until the next Open).
func (s *Store) AbortStage(u *Upload, reason string) error {
	defer s.deliver()
	u.mu.Lock()
	defer u.mu.Unlock()
	u.writers--
	if u.state != uploadOpen {
		return nil // deleted or discarded meanwhile
	}
	s.log.Warn("stage aborted; image queued again", "id", u.id, "size", u.size, "reason", reason)
	u.discard()
	s.dropUpload(u)
	return s.unstage(u.id, StatusUploading, "")
}

// unstage returns image id from status from (uploading or importing) to
// queued without its stage host, ending its task in progress with a
// failure and message (if message is not ""). Must not hold s.mu.
func (s *Store) unstage(id string, from Status, message string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, err := s.update(id, kv.Small, func(cur *Image) (*Image, error) {
		if cur == nil || cur.Status != from {
			return nil, nil
		}
		return unstaged(cur, message, s.now()), nil
	})
	return err
}

// unstaged returns im queued again, its stage host and sizes removed, its
// task in progress ended with a failure (message "": none).
func unstaged(im *Image, message string, now time.Time) *Image {
	next := im.clone()
	next.Status = StatusQueued
	next.Size, next.VirtualSize = -1, -1
	deleteExtra(next, KeyStageHost)
	if message != "" {
		finishTask(next, TaskFailure, message, now)
	}
	next.UpdatedAt = now
	return next
}

// Import seals the staged data of image id in the background, as c asks
// (POST .../import, method glance-direct): the image goes from uploading
// to importing with task t added (status processing; its times are set
// here), and the seal runs as an upload's does (the inspection of the
// record's disk_format, the hashes, the hand-over): active, or queued
// again with the staged data dropped and the task failed with the
// reason. done, if not nil, is called with the seal's outcome (nil, an
// error wrapping ErrRefused for refused data, another error) once the
// image left importing. Errors (nothing changed): ErrNotFound,
// ErrPermission, ErrNotStaged (not uploading), ErrBusy (staged on
// another host: the message names it; or the stage is still arriving),
// ErrTooBig (t.Request over MaxImportRequest), ErrCatalog.
func (s *Store) Import(c Caller, id string, t ImportTask, done func(error)) error {
	defer s.deliver()
	if len(t.Request) > MaxImportRequest {
		return fmt.Errorf("%w: import request of %d bytes, at most %d", ErrTooBig, len(t.Request), MaxImportRequest)
	}
	im := s.Get(id)
	if im == nil {
		return fmt.Errorf("%w: image %s", ErrNotFound, id)
	}
	if err := mayModify(c, im); err != nil {
		return err
	}
	if im.Status != StatusUploading {
		return fmt.Errorf("%w: image %s is %s", ErrNotStaged, id, im.Status)
	}
	if h := im.Extra[KeyStageHost]; h != s.opts.Host {
		return fmt.Errorf("%w: image %s was staged on host %s: import it through that host's API (staged data stays on the host that took it)", ErrBusy, id, h)
	}
	u := s.CurrentUpload(id)
	if u == nil {
		return fmt.Errorf("%w: image %s: its staged data is not on this host (discarded?)", ErrNotStaged, id)
	}
	u.mu.Lock() // Upload.mu before Store.mu; held by the seal
	unlock := true
	defer func() {
		if unlock {
			u.mu.Unlock()
		}
	}()
	if !u.stage || u.state != uploadOpen || s.CurrentUpload(id) != u {
		return fmt.Errorf("%w: image %s: its staged data changed meanwhile", ErrNotStaged, id)
	}
	if u.writers > 0 {
		return fmt.Errorf("%w: image %s: its data is still being staged", ErrBusy, id)
	}
	now := s.now()
	t.Status, t.CreatedAt, t.UpdatedAt, t.ExpiresAt, t.Message = TaskProcessing, now, now, time.Time{}, ""
	s.mu.Lock()
	_, err := s.update(id, kv.Small, func(cur *Image) (*Image, error) {
		if cur == nil {
			return nil, fmt.Errorf("%w: image %s", ErrNotFound, id)
		}
		if cur.Status != StatusUploading || cur.Extra[KeyStageHost] != s.opts.Host {
			return nil, fmt.Errorf("%w: image %s is %s", ErrNotStaged, id, cur.Status)
		}
		next := cur.clone()
		next.Status = StatusImporting
		ts := slices.DeleteFunc(parseTasks(cur.Extra[KeyImportTasks]), func(o ImportTask) bool {
			return !o.ExpiresAt.IsZero() && !o.ExpiresAt.After(now)
		})
		ts = append(ts, t)
		if len(ts) > maxImportTasks {
			ts = ts[len(ts)-maxImportTasks:]
		}
		setTasks(next, ts)
		next.UpdatedAt = now
		return next, nil
	})
	s.mu.Unlock()
	if err != nil {
		return err
	}
	s.log.Info("import started", "id", id, "task", t.ID, "uid", c.UID)
	unlock = false
	s.imports.Add(1)
	go func() {
		defer s.imports.Done()
		err := s.sealImport(u)
		u.mu.Unlock()
		s.deliver()
		if done != nil {
			done(err)
		}
	}()
	return nil
}

// sealImport seals the staged data of u (an importing image), as an
// upload's close does; a seal that fails other than by a refusal (I/O,
// the catalog) also leaves the image queued, never importing. Must hold
// u.mu.
func (s *Store) sealImport(u *Upload) error {
	start := time.Now()
	err := s.seal(u)
	if err == nil {
		s.log.Info("import done", "id", u.id, "import_ms", time.Since(start).Milliseconds())
		return nil
	}
	if !errors.Is(err, ErrRefused) {
		s.log.Error("import failed; image queued again", "id", u.id, "err", err)
		if u.state == uploadOpen {
			u.discard()
			s.dropUpload(u)
		}
		if im := s.Get(u.id); im != nil && im.Status == StatusImporting {
			if uerr := s.unstage(u.id, StatusImporting, "Error: "+err.Error()); uerr != nil {
				s.log.Error("import failed and its image stays importing until the next mount", "id", u.id, "err", uerr)
			}
		}
	}
	return err
}

// refuseImport drops the refused staged data of u and queues its image
// again, its task failed with the reason; the error wraps ErrRefused.
// Must hold u.mu.
func (s *Store) refuseImport(u *Upload, refusal string) error {
	s.log.Warn("import refused; image queued again", "id", u.id, "reason", refusal)
	u.discard()
	s.dropUpload(u)
	if err := s.unstage(u.id, StatusImporting, "Error: the image data is not acceptable: "+refusal); err != nil {
		return err
	}
	return fmt.Errorf("%w: %s", ErrRefused, refusal)
}

// discardStaged is DiscardUpload of an uploading image (rm image.vhd on
// the mount): its staged data is dropped and it is queued again. Only the
// stage's host has the data; an importing image is ErrBusy. Must hold
// l.sealMu and s.mu, and u.mu when u is not nil; returns with s.mu
// released.
func (s *Store) discardStaged(im *Image, l *liveImage, u *Upload) error {
	if im.Status == StatusImporting || im.Extra[KeyStageHost] != s.opts.Host || u != nil && u.writers > 0 {
		s.mu.Unlock()
		return fmt.Errorf("%w: image %s is %s (staged on host %s)", ErrBusy, im.ID, im.Status, im.Extra[KeyStageHost])
	}
	s.pubMu.Lock()
	l.upload = nil
	l.unlinked = true
	s.pubMu.Unlock()
	_, err := s.update(im.ID, kv.Small, func(cur *Image) (*Image, error) {
		if cur == nil || cur.Status != StatusUploading {
			return nil, nil
		}
		return unstaged(cur, "", s.now()), nil
	})
	s.mu.Unlock()
	if u != nil {
		u.discard()
	}
	if err != nil {
		return err
	}
	s.log.Info("staged data discarded", "id", im.ID)
	return nil
}
