package server

import (
	"bytes"
	"encoding/binary"
	"errors"
	"time"

	"github.com/marlinkv/marlin/engine"
)

// flush_all without a pass over the keys. Every record carries the
// sequence number of the write that stored it (engine.Item.Seq), and
// sequence numbers only grow, so "every item stored before now is gone"
// is one number: the flush threshold, the sequence number of the flush's
// own write. It is stored under flushKey with one engine write: as
// durable as any write in the sync mode, and O(1) at a billion keys.
// Reads and writes treat an item whose record is older than the
// threshold as absent (Server.update, Server.readItem); its bytes go
// when the key is written again or deleted, or when the sweep
// (sweep.go) reaches it. A touch only rewrites a live item, so a
// rewritten record is never one that should have been flushed.
//
// flush_all with a delay stores the time too; the flush happens when it
// comes (a timer; at Open, a time already past applies at once, which
// also drops what was stored after that time and before the restart).

// flushKey holds the flush state: threshold (8 bytes LE) and the pending
// delayed flush's Unix time in ms (8 bytes LE; 0: none). No client can
// name it: it holds a space and a newline, which end a key in the text
// and meta protocols (a base64 key decodes to at most 187 bytes, and
// this one is 250), and the binary protocol refuses it (reservedKey).
var flushKey = append([]byte("\x00marlin.flush_all \r\n"), make([]byte, maxKeyLen-len("\x00marlin.flush_all \r\n"))...)

// reservedKey reports whether k is a key the server keeps for itself.
func reservedKey(k []byte) bool { return bytes.Equal(k, flushKey) }

// flushState is the server's copy of the stored state.
type flushState struct {
	threshold uint64
	pendingMs int64
}

func decodeFlush(v []byte) (flushState, error) {
	if len(v) != 16 {
		return flushState{}, errors.New("server: bad flush_all state")
	}
	return flushState{binary.LittleEndian.Uint64(v), int64(binary.LittleEndian.Uint64(v[8:]))}, nil
}

func (f flushState) encode() []byte {
	b := binary.LittleEndian.AppendUint64(nil, f.threshold)
	return binary.LittleEndian.AppendUint64(b, uint64(f.pendingMs))
}

// loadFlush reads the stored flush state at New and arms a pending flush.
func (s *Server) loadFlush() error {
	v, err := s.db.Get(flushKey)
	if errors.Is(err, engine.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	f, err := decodeFlush(v)
	if err != nil {
		return err
	}
	s.flushStored.Store(true)
	s.flushThreshold.Store(f.threshold)
	if f.pendingMs != 0 {
		s.armFlush(time.UnixMilli(f.pendingMs))
	}
	return nil
}

// flushAll runs flush_all with the given delay (exptime rules).
func (s *Server) flushAll(delay int64) error {
	s.stats.cmdFlush.Add(1)
	if delay <= 0 {
		return s.flushNow(0)
	}
	at := expiryOf(delay, time.Now())
	_, err := s.db.Update(flushKey, func(v []byte, _ engine.Item, found bool, _ uint64) (engine.Change, error) {
		var f flushState
		if found {
			var err error
			if f, err = decodeFlush(v); err != nil {
				return engine.Change{}, err
			}
		}
		f.pendingMs = at.UnixMilli()
		return engine.Change{Op: engine.Set, Value: f.encode()}, nil
	})
	if err == nil {
		s.flushStored.Store(true)
		s.armFlush(at)
	}
	return err
}

// flushNow makes every item stored so far absent. pendingMs, if not 0, is
// the delayed flush being applied (cleared only if it is still the one
// stored).
func (s *Server) flushNow(pendingMs int64) error {
	var threshold uint64
	_, err := s.db.Update(flushKey, func(v []byte, _ engine.Item, found bool, next uint64) (engine.Change, error) {
		var f flushState
		if found {
			var err error
			if f, err = decodeFlush(v); err != nil {
				return engine.Change{}, err
			}
		}
		if pendingMs != 0 && f.pendingMs != pendingMs {
			threshold = f.threshold // superseded by a later flush_all
			return engine.Change{Op: engine.Keep}, nil
		}
		f.threshold, f.pendingMs = next, 0
		threshold = next
		return engine.Change{Op: engine.Set, Value: f.encode()}, nil
	})
	if err != nil {
		return err
	}
	s.flushStored.Store(true)
	for {
		cur := s.flushThreshold.Load()
		if threshold <= cur || s.flushThreshold.CompareAndSwap(cur, threshold) {
			return nil
		}
	}
}

// armFlush applies the delayed flush due at at, once.
func (s *Server) armFlush(at time.Time) {
	ms := at.UnixMilli()
	s.flushMu.Lock()
	defer s.flushMu.Unlock()
	if s.flushTimer != nil {
		s.flushTimer.Stop()
	}
	s.flushTimer = time.AfterFunc(time.Until(at), func() {
		if err := s.flushNow(ms); err != nil && !errors.Is(err, engine.ErrClosed) {
			s.log.Error("marlin serve: delayed flush_all failed", "err", err)
		}
	})
}

// stopFlush stops a pending delayed flush's timer (Shutdown).
func (s *Server) stopFlush() {
	s.flushMu.Lock()
	defer s.flushMu.Unlock()
	if s.flushTimer != nil {
		s.flushTimer.Stop()
	}
}

// flushed reports whether a record with this sequence number was written
// before the last flush_all.
func (s *Server) flushed(seq uint64) bool { return seq < s.flushThreshold.Load() }

// items returns the number of items: the engine's keys less flushKey.
func (s *Server) items(keys int64) int64 {
	if s.flushStored.Load() {
		keys--
	}
	return max(keys, 0)
}
