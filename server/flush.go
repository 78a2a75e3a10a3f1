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

// flushKey holds the flush state: threshold (8 bytes LE), the pending
// delayed flush's Unix time in ms (8 bytes LE; 0: none), and the
// threshold of the last finished sweep (8 bytes LE). No client can
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
	swept     uint64 // the threshold the last finished sweep removed everything below
}

func decodeFlush(v []byte) (flushState, error) {
	if len(v) != 24 {
		return flushState{}, errors.New("server: bad flush_all state")
	}
	return flushState{binary.LittleEndian.Uint64(v), int64(binary.LittleEndian.Uint64(v[8:])),
		binary.LittleEndian.Uint64(v[16:])}, nil
}

func (f flushState) encode() []byte {
	b := binary.LittleEndian.AppendUint64(nil, f.threshold)
	b = binary.LittleEndian.AppendUint64(b, uint64(f.pendingMs))
	return binary.LittleEndian.AppendUint64(b, f.swept)
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
	if f.swept < f.threshold {
		// A sweep did not finish before the restart: how many flushed
		// items remain is unknown until this one does.
		s.sweep.start(s, -1)
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
	// Every item stored now is flushed by this flush_all: their number
	// (read before the write, so an item stored meanwhile may count) is
	// what curr_items drops by at once; the sweep removes them.
	st, err := s.db.Stats()
	if err != nil {
		return err
	}
	flushed := st.Keys
	if s.flushStored.Load() {
		flushed--
	}
	_, err = s.db.Update(flushKey, func(v []byte, _ engine.Item, found bool, next uint64) (engine.Change, error) {
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
		if threshold <= cur {
			return nil
		}
		if s.flushThreshold.CompareAndSwap(cur, threshold) {
			s.sweep.start(s, flushed)
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

// stopFlush stops a pending delayed flush's timer and the sweep
// (Shutdown).
func (s *Server) stopFlush() {
	s.flushMu.Lock()
	if s.flushTimer != nil {
		s.flushTimer.Stop()
	}
	s.flushMu.Unlock()
	s.sweep.stop()
}

// flushed reports whether a record with this sequence number was written
// before the last flush_all.
func (s *Server) flushed(seq uint64) bool { return seq < s.flushThreshold.Load() }

// dbStats returns the engine's figures and the number of items: the
// engine's keys less flushKey and the flushed items the sweep has not
// removed yet. While a sweep runs both figures move; they are read until
// the count of flushed items holds still across the read of the engine's,
// or else the count read first is used (fewer items than there are, by
// what the sweep removed during the read, never more).
func (s *Server) dbStats() (engine.Stats, int64, error) {
	var st engine.Stats
	var left int64
	for range 3 {
		left = s.sweep.left.Load()
		var err error
		if st, err = s.db.Stats(); err != nil {
			return st, 0, err
		}
		if s.sweep.left.Load() == left {
			break
		}
	}
	keys := st.Keys
	if s.flushStored.Load() {
		keys--
	}
	return st, max(keys-left, 0), nil
}
