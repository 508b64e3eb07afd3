package swiftdata

import (
	"io"
	"os"
	"sync"
	"time"

	"github.com/imagefs/imagefs/store"
)

// stream sends the complete segments of an in-order upload while its
// writer is still writing (store.DataStreamer): the store says how many
// leading bytes of the staging file are final (Written), a goroutine
// sends each segment they complete, and the seal (Put) takes the
// segments sent and sends the rest. Abort (the writer went back, or the
// upload was dropped) stops it and deletes what it sent.
//
// A writer faster than Swift is held back (Written waits) so that at most
// one complete segment waits while another is sent: the seal then has at
// most about two segments left to send, whatever the image's size, rather
// than everything the writer got ahead by. A segment that takes longer
// than the Backend's Timeout ends the holding back for the upload (the
// seal sends what is left).
type stream struct {
	b            *Backend
	id, path     string
	prefix       string
	mu           sync.Mutex
	final        int64 // leading bytes that never change
	sent         []sloSegment
	stop         bool  // Abort or Put: send no more
	aborted      bool  // what was sent is void
	err          error // a failed send: the seal sends the rest
	wake, done   chan struct{}
	segmentBytes int64
	// progress is closed (and replaced) at every change that may let a
	// held writer go on: a segment sent, a stop, a failure, run's end.
	progress chan struct{}
	ended    bool // run returned: nothing more will be sent
	unheld   bool // a segment took longer than the timeout: hold no more
}

// Stream starts sending the upload of image id staged at path; see
// store.DataStreamer.
func (b *Backend) Stream(id, path string) store.DataStream {
	st := &stream{b: b, id: id, path: path, prefix: b.uploadPrefix(id, path),
		wake: make(chan struct{}, 1), done: make(chan struct{}), segmentBytes: b.cfg.SegmentSize,
		progress: make(chan struct{})}
	b.mu.Lock()
	if old := b.streams[path]; old != nil {
		old.Abort()
	}
	b.streams[path] = st
	b.mu.Unlock()
	go st.run()
	return st
}

// Written says that bytes [0, n) of the staging file are final. It
// returns once the writer is at most one complete segment ahead of the
// one being sent (see stream), or once the stream stopped or failed;
// waiting for one segment takes the Backend's Timeout at most.
func (st *stream) Written(n int64) {
	st.mu.Lock()
	grew := n/st.segmentBytes > st.final/st.segmentBytes
	if n > st.final {
		st.final = n
	}
	st.mu.Unlock()
	if grew {
		select {
		case st.wake <- struct{}{}:
		default:
		}
	}
	st.hold()
}

// hold waits while the final bytes reach past the segment after the one
// being sent.
func (st *stream) hold() {
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		st.mu.Lock()
		sent := len(st.sent)
		if st.stop || st.err != nil || st.ended || st.unheld || sent >= MaxSegments ||
			st.final <= int64(sent+2)*st.segmentBytes {
			st.mu.Unlock()
			return
		}
		progress := st.progress
		st.mu.Unlock()
		if timer == nil {
			timer = time.NewTimer(st.b.cfg.Timeout)
		} else {
			timer.Reset(st.b.cfg.Timeout)
		}
		select {
		case <-progress:
		case <-timer.C:
			st.mu.Lock()
			if len(st.sent) == sent { // no segment within the timeout
				st.unheld = true
			}
			st.mu.Unlock()
		}
	}
}

// progressed wakes the writers held by hold. Must hold st.mu.
func (st *stream) progressed() {
	close(st.progress)
	st.progress = make(chan struct{})
}

// Abort voids the stream: it stops and its segments are deleted.
func (st *stream) Abort() {
	st.mu.Lock()
	if st.aborted {
		st.mu.Unlock()
		return
	}
	st.aborted, st.stop = true, true
	st.progressed()
	st.mu.Unlock()
	st.b.mu.Lock()
	if st.b.streams[st.path] == st {
		delete(st.b.streams, st.path)
	}
	st.b.mu.Unlock()
	select {
	case st.wake <- struct{}{}:
	default:
	}
	st.b.aborts.Add(1)
	go func() { // the writer does not wait for Swift
		defer st.b.aborts.Done()
		<-st.done
		st.b.deleteSegments(st.prefix)
	}()
}

// run sends each segment that the final bytes complete, in order, until
// stopped or a send fails.
func (st *stream) run() {
	defer close(st.done)
	defer func() {
		st.mu.Lock()
		st.ended = true
		st.progressed()
		st.mu.Unlock()
	}()
	var f *os.File
	defer func() {
		if f != nil {
			f.Close()
		}
	}()
	for range st.wake {
		for {
			st.mu.Lock()
			i := len(st.sent)
			ready := int64(i+1)*st.segmentBytes <= st.final
			if st.stop || st.err != nil || !ready || i >= MaxSegments {
				st.mu.Unlock()
				break
			}
			st.mu.Unlock()
			if f == nil {
				var err error
				if f, err = os.Open(st.path); err != nil {
					st.fail(err)
					break
				}
				if err := st.b.ensureContainers(); err != nil {
					st.fail(err)
					break
				}
			}
			seg, err := st.b.putSegment(st.prefix, i, io.NewSectionReader(f, int64(i)*st.segmentBytes, st.segmentBytes))
			if err != nil {
				st.fail(err)
				break
			}
			st.b.st.streamed.Add(1)
			st.mu.Lock()
			st.sent = append(st.sent, seg)
			st.progressed()
			st.mu.Unlock()
		}
		st.mu.Lock()
		stop := st.stop || st.err != nil
		st.mu.Unlock()
		if stop {
			return
		}
	}
}

func (st *stream) fail(err error) {
	st.b.log.Warn("sending a segment during the upload failed; the seal sends it again", "id", st.id, "err", err)
	st.mu.Lock()
	st.err = err
	st.progressed()
	st.mu.Unlock()
}

// takeStream ends the stream of the staging file path, if any, and returns
// the segments it sent (none if it was aborted) and their prefix ("" when
// there is no stream).
func (b *Backend) takeStream(path string) ([]sloSegment, string) {
	b.mu.Lock()
	st := b.streams[path]
	delete(b.streams, path)
	b.mu.Unlock()
	if st == nil {
		return nil, ""
	}
	st.mu.Lock()
	st.stop = true
	st.progressed()
	st.mu.Unlock()
	select {
	case st.wake <- struct{}{}:
	default:
	}
	<-st.done // the segment in flight, if any
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.aborted {
		return nil, ""
	}
	return st.sent, st.prefix
}
