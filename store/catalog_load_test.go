package store

import (
	"fmt"
	"runtime"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestLoadAllShards: Open loads every record whatever the number of
// loading workers (loadAll splits the ids into ranges, one per worker).
func TestLoadAllShards(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	want := map[string]string{}
	for i := range 60 {
		im, err := s.Create(Root, fmt.Sprintf("img-%02d", i))
		require.NoError(t, err)
		want[im.ID] = im.Name
	}
	require.NoError(t, s.Close())
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(0))
	for _, procs := range []int{1, 2, 3, 7, 16} {
		runtime.GOMAXPROCS(procs)
		s := openStore(t, dir)
		got := map[string]string{}
		var prev string
		require.NoError(t, s.cat.loadAll(0, func(im *Image) error {
			require.Less(t, prev, im.ID, "records come in key order")
			prev = im.ID
			got[im.ID] = im.Name
			return nil
		}))
		require.Equal(t, want, got, "GOMAXPROCS %d", procs)
		require.Len(t, s.List(), len(want))
		require.NoError(t, s.Close())
	}
}
