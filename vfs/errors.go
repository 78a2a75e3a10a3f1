package vfs

import "errors"

// ErrLocked is wrapped by the error FS.Lock returns when another holder has
// the lock.
var ErrLocked = errors.New("vfs: locked by another process")

// ErrInjected is wrapped by every error an ErrorFS injects, so tests can
// tell injected failures from real ones with errors.Is.
var ErrInjected = errors.New("vfs: injected error")
