package index

import "strings"

// A snapshot's file is built as Dir/index.db.loading and renamed to
// Dir/index.db with its handle kept open, so that the lock is never let go
// (see ReplaceAll). bbolt and the os package go on naming that file by the
// path it was opened with, index.db.loading, which no longer exists: the
// errors the index returns name index.db instead (liveName).

// liveNameError is an error whose message names the live file; it wraps the
// original, so errors.Is and errors.As still see its cause (ENOSPC, …).
type liveNameError struct {
	err error
	msg string
}

func (e *liveNameError) Error() string { return e.msg }
func (e *liveNameError) Unwrap() error { return e.err }

// liveName returns err with Dir/index.db.loading replaced by Dir/index.db
// in its message; err itself when it does not name the temporary file.
func (ix *Index) liveName(err error) error {
	if err == nil {
		return nil
	}
	tmp := ix.path + loadingSuffix
	msg := err.Error()
	if !strings.Contains(msg, tmp) {
		return err
	}
	return &liveNameError{err: err, msg: strings.ReplaceAll(msg, tmp, ix.path)}
}
