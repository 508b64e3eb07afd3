package store

import "time"

// EventKind says what happened to an image.
type EventKind int

const (
	EventCreated EventKind = iota + 1 // mkdir: a new queued image
	EventSealed                       // an upload was sealed: the image is active
	EventKilled                       // an upload was refused or interrupted: the image is killed
	EventDeleted                      // the image and its data were removed
)

func (k EventKind) String() string {
	switch k {
	case EventCreated:
		return "created"
	case EventSealed:
		return "sealed"
	case EventKilled:
		return "killed"
	case EventDeleted:
		return "deleted"
	}
	return "unknown"
}

// Event is one significant change of the catalog, for metrics. The log
// line of the same change (through the store's logger) carries the
// details.
type Event struct {
	Kind EventKind
	ID   string
	// Size is the sealed data's size in bytes (EventSealed).
	Size int64
	// Duration is how long the seal took: check, hashing the rest,
	// sync and commit (EventSealed).
	Duration time.Duration
	// Reason is why an upload was killed (EventKilled).
	Reason string
}

// Observer receives the store's events (Options.Events). Observe is
// called synchronously, sometimes with store locks held: it must be quick
// and must not call back into the Store.
type Observer interface {
	Observe(Event)
}

// emit hands e to the observer, if any.
func (s *Store) emit(e Event) {
	if s.opts.Events != nil {
		s.opts.Events.Observe(e)
	}
}
