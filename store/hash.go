package store

import (
	"crypto/md5"
	"crypto/sha512"
	"encoding/hex"
	"hash"
	"io"
	"sync"
	"sync/atomic"
)

// chunkSize is the unit data is hashed in; FUSE writes are at most 1 MiB.
const chunkSize = 1 << 20

// hashPipe computes MD5 (Glance's checksum) and SHA-512 (os_hash_value) of
// a byte stream, each in its own goroutine so the two run in parallel with
// each other and with the writer. Feed it bytes in order; a chunk is
// copied, so the caller's buffer may be reused at once.
type hashPipe struct {
	n   int64 // bytes fed so far
	md5 hash.Hash
	sha hash.Hash
	chs [2]chan *chunk
	wg  sync.WaitGroup
}

type chunk struct {
	b      []byte
	refs   atomic.Int32
	pooled bool
}

var chunkPool = sync.Pool{New: func() any { return &chunk{b: make([]byte, chunkSize), pooled: true} }}

var zeroChunk = &chunk{b: make([]byte, chunkSize)}

func (c *chunk) release() {
	if c.pooled && c.refs.Add(-1) == 0 {
		chunkPool.Put(c)
	}
}

func newHashPipe() *hashPipe {
	p := &hashPipe{md5: md5.New(), sha: sha512.New()}
	for i, h := range []hash.Hash{p.md5, p.sha} {
		ch := make(chan *chunk, 16)
		p.chs[i] = ch
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			for c := range ch {
				h.Write(c.b)
				c.release()
			}
		}()
	}
	return p
}

func (p *hashPipe) send(c *chunk) {
	c.refs.Store(2)
	p.chs[0] <- c
	p.chs[1] <- c
}

// write feeds b (any length).
func (p *hashPipe) write(b []byte) {
	for len(b) > 0 {
		c := chunkPool.Get().(*chunk)
		n := copy(c.b[:chunkSize], b)
		c.b = c.b[:n]
		b = b[n:]
		p.n += int64(n)
		p.send(c)
	}
}

// zeros feeds n zero bytes (a hole or a truncate that extends the file).
func (p *hashPipe) zeros(n int64) {
	for n > 0 {
		k := min(n, chunkSize)
		c := &chunk{b: zeroChunk.b[:k]}
		p.send(c)
		p.n += k
		n -= k
	}
}

// ReadFrom feeds all of r.
func (p *hashPipe) readFrom(r io.Reader) error {
	for {
		c := chunkPool.Get().(*chunk)
		c.b = c.b[:chunkSize]
		n, err := io.ReadFull(r, c.b)
		if n > 0 {
			c.b = c.b[:n]
			p.n += int64(n)
			p.send(c)
		} else {
			chunkPool.Put(c)
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// finish waits for the hashers and returns the hex MD5 and SHA-512.
func (p *hashPipe) finish() (md5hex, sha512hex string) {
	p.stop()
	return hex.EncodeToString(p.md5.Sum(nil)), hex.EncodeToString(p.sha.Sum(nil))
}

// stop ends the goroutines; the sums are discarded.
func (p *hashPipe) stop() {
	if p.chs[0] == nil {
		return
	}
	close(p.chs[0])
	close(p.chs[1])
	p.chs[0], p.chs[1] = nil, nil
	p.wg.Wait()
}
