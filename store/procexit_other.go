//go:build !linux

package store

import "errors"

func listenProcExits() (recv func() ([][2]uint32, error), closeFn func(), err error) {
	return nil, nil, errors.New("process events need Linux")
}
