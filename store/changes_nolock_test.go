package store

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestOnChangeHoldsNoLock: the change hook runs with no lock of the
// store held, deliverMu included: while one call of the hook waits (as
// a kernel notification may wait for a page or directory lock), another
// goroutine's change is committed and handed to the hook, which runs at
// the same time. Each call still returns only once its own change has
// been delivered.
func TestOnChangeHoldsNoLock(t *testing.T) {
	s := newStore(t)
	a, err := s.Create(alice, "a")
	require.NoError(t, err)
	b, err := s.Create(alice, "b")
	require.NoError(t, err)
	inA, gotB := make(chan struct{}), make(chan struct{})
	s.OnChange(func(c Change) {
		switch c.ID() {
		case a.ID:
			close(inA)
			select {
			case <-gotB:
			case <-time.After(10 * time.Second):
				t.Error("the change of b was not delivered while the hook for a ran")
			}
		case b.ID:
			close(gotB)
		}
	})
	doneA := make(chan error, 1)
	go func() { doneA <- s.SetProperty(alice, a.ID, "k", "1", SetAny) }()
	<-inA
	// SetProperty of b commits, delivers its own change while the hook
	// for a still runs, and then waits for that one (an earlier batch).
	require.NoError(t, s.SetProperty(alice, b.ID, "k", "1", SetAny))
	require.NoError(t, <-doneA)
	select {
	case <-gotB:
	default:
		assert.Fail(t, "SetProperty of b returned before its change was delivered")
	}
}
