//go:build !linux

package index

import "errors"

func populateRead(_, _ uintptr) error {
	return errors.New("only on Linux (MADV_POPULATE_READ)")
}
