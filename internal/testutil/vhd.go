package testutil

import (
	"crypto/rand"
	"encoding/binary"
	"testing"
)

// FixedVHD returns a fixed VHD of a dataSize-byte disk (a multiple of 512)
// of random bytes: the data followed by a footer (Microsoft VHD
// specification v1.0, "Hard Disk Footer Format"; Disk Geometry is an
// arbitrary CHS, whose mismatch with the size is only a warning).
func FixedVHD(t testing.TB, dataSize int) []byte {
	t.Helper()
	b := make([]byte, dataSize+512)
	if _, err := rand.Read(b[:dataSize]); err != nil {
		t.Fatal(err)
	}
	f := b[dataSize:]
	copy(f[0:], "conectix")
	binary.BigEndian.PutUint32(f[8:], 2)           // Features: reserved bit
	binary.BigEndian.PutUint32(f[12:], 0x00010000) // File Format Version
	binary.BigEndian.PutUint64(f[16:], ^uint64(0)) // Data Offset (fixed)
	copy(f[28:], "test")
	binary.BigEndian.PutUint32(f[32:], 0x00010000)
	copy(f[36:], "Wi2k")
	binary.BigEndian.PutUint64(f[40:], uint64(dataSize)) // Original Size
	binary.BigEndian.PutUint64(f[48:], uint64(dataSize)) // Current Size
	binary.BigEndian.PutUint16(f[56:], uint16(dataSize/512/17/4))
	f[58], f[59] = 4, 17
	binary.BigEndian.PutUint32(f[60:], 2) // Disk Type: fixed
	if _, err := rand.Read(f[68:84]); err != nil {
		t.Fatal(err)
	}
	var sum uint32
	for _, c := range f {
		sum += uint32(c)
	}
	binary.BigEndian.PutUint32(f[64:], ^sum)
	return b
}
