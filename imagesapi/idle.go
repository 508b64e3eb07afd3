package imagesapi

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"
)

// DefaultClientSocketTimeout is Glance's client_socket_timeout (900 s):
// an image body (PUT .../file, PUT .../stage) from which no byte arrives
// for this long is cut off, as Glance's eventlet server cuts the socket.
const DefaultClientSocketTimeout = 900 * time.Second

// idleBody returns r's body for receive, bounded by the no-progress limit
// s.opts.ClientSocketTimeout: the connection's read deadline is set to now
// plus the limit, moved on after each read that brings bytes, and cleared
// when the body ends; the total time of an upload is not bounded. A read
// past the deadline fails with an error naming the limit (receive then
// answers 400 and its caller aborts the upload, as a body cut off). The
// plain body when the limit is off (negative) or the connection takes no
// deadline (http.ErrNotSupported).
func (s *Server) idleBody(w http.ResponseWriter, r *http.Request) io.Reader {
	d := s.opts.ClientSocketTimeout
	if d < 0 {
		return r.Body
	}
	rc := http.NewResponseController(w)
	if err := rc.SetReadDeadline(time.Now().Add(d)); err != nil {
		s.log.Warn("api: no read deadline for an image body; client_socket_timeout does not apply", "err", err)
		return r.Body
	}
	return &idleReader{body: r.Body, rc: rc, d: d}
}

// idleReader is idleBody's reader.
type idleReader struct {
	body io.Reader
	rc   *http.ResponseController
	d    time.Duration
}

func (ir *idleReader) Read(p []byte) (int, error) {
	n, err := ir.body.Read(p)
	switch {
	case err == io.EOF:
		// The whole body is in: no deadline while the upload seals (the
		// server's background read of the idle connection would take it
		// as the client gone).
		ir.rc.SetReadDeadline(time.Time{})
	case err != nil && errors.Is(err, os.ErrDeadlineExceeded):
		err = fmt.Errorf("no data from the client for %s (client_socket_timeout)", ir.d)
	case n > 0:
		ir.rc.SetReadDeadline(time.Now().Add(ir.d))
	}
	return n, err
}
