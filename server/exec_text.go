package server

import (
	"errors"
	"strconv"
	"time"

	"github.com/marlinkv/marlin/engine"
)

// Running text commands. Every write goes through engine.Update, so the
// checks memcached makes against the current item (add, replace, cas,
// append, incr) and the write happen with no other write in between, and
// the stored CAS is the write's own sequence number.

// expiryOf turns an exptime as sent into an engine expiry: 0 never; up to
// 30 days, seconds from now; larger, a Unix time; negative (or a Unix
// time already past), expired at once (the engine then removes the key).
func expiryOf(exptime int64, now time.Time) time.Time {
	switch {
	case exptime == 0:
		return time.Time{}
	case exptime < 0:
		return now.Add(-time.Second)
	case exptime <= relativeExptimeMax:
		return now.Add(time.Duration(exptime) * time.Second)
	}
	t := time.Unix(exptime, 0)
	if !t.After(now) {
		return now.Add(-time.Second)
	}
	return t
}

// storeOutcome is a storage command's reply.
type storeOutcome int

const (
	stored storeOutcome = iota
	notStored
	exists
	notFound
)

var storeReplies = [...]string{stored: "STORED", notStored: "NOT_STORED", exists: "EXISTS", notFound: "NOT_FOUND"}

func (c *conn) store(cmd *textCmd, data []byte) {
	c.s.stats.cmdSet.Add(1)
	out, _, err := c.storeItem(cmd, data, cmd.kind == cmdCas)
	switch {
	case errors.Is(err, errTooLarge):
		c.replyTo(cmd, errTooLargeReply)
	case err != nil:
		c.replyErr(cmd, err)
	default:
		if cmd.kind == cmdCas {
			switch out {
			case stored:
				c.s.stats.casHits.Add(1)
			case exists:
				c.s.stats.casBadval.Add(1)
			case notFound:
				c.s.stats.casMisses.Add(1)
			}
		}
		c.replyTo(cmd, storeReplies[out])
	}
}

// storeItem runs a storage command against the current item and returns
// the outcome and the new item's CAS. With casCheck the write also needs
// the item to exist with CAS cmd.cas (the cas command, or a binary
// request that carries a CAS).
func (c *conn) storeItem(cmd *textCmd, data []byte, casCheck bool) (storeOutcome, uint64, error) {
	expiry := expiryOf(cmd.exptime, time.Now())
	var out storeOutcome
	var newCas uint64
	_, err := c.s.db.Update(cmd.key, func(v []byte, cur engine.Item, found bool, next uint64) (engine.Change, error) {
		out, newCas = stored, next
		var flags uint32
		var cas uint64
		var old []byte
		if found {
			var err error
			if flags, cas, old, err = parseItem(v); err != nil {
				return engine.Change{}, err
			}
			found = !c.s.flushed(cas)
		}
		if casCheck {
			switch {
			case !found:
				out = notFound
				return engine.Change{Op: engine.Keep}, nil
			case cas != cmd.cas:
				out = exists
				return engine.Change{Op: engine.Keep}, nil
			}
		}
		switch cmd.kind {
		case cmdAdd:
			if found {
				out = notStored
				return engine.Change{Op: engine.Keep}, nil
			}
		case cmdReplace:
			if !found {
				out = notStored
				return engine.Change{Op: engine.Keep}, nil
			}
		case cmdAppend, cmdPrepend:
			// The item keeps its flags and expiry; only the data grows.
			if !found {
				out = notStored
				return engine.Change{Op: engine.Keep}, nil
			}
			if len(old)+len(data) > c.s.cfg.MaxItemSize {
				return engine.Change{}, errTooLarge
			}
			nv := make([]byte, 0, itemHeader+len(old)+len(data))
			if cmd.kind == cmdAppend {
				nv = append(appendItem(nv, flags, next, old), data...)
			} else {
				nv = append(appendItem(nv, flags, next, data), old...)
			}
			return engine.Change{Op: engine.Set, Value: nv, Expiry: cur.Expiry}, nil
		}
		return engine.Change{Op: engine.Set, Value: appendItem(make([]byte, 0, itemHeader+len(data)), cmd.flags, next, data),
			Expiry: expiry}, nil
	})
	return out, newCas, err
}

var errTooLarge = errors.New("object too large for cache")

// retrieve runs get, gets, gat and gats: a VALUE block per key found, then
// END. gat and gats set each found item's expiry first (keeping its CAS).
func (c *conn) retrieve(cmd *textCmd) {
	touch := cmd.kind == cmdGat || cmd.kind == cmdGats
	withCas := cmd.kind == cmdGets || cmd.kind == cmdGats
	var expiry time.Time
	if touch {
		expiry = expiryOf(cmd.exptime, time.Now())
	}
	for _, k := range cmd.keys {
		c.s.stats.cmdGet.Add(1)
		var v []byte
		var err error
		if touch {
			c.s.stats.cmdTouch.Add(1)
			v, err = c.touchItem(k, expiry)
		} else {
			v, _, err = c.s.db.AppendItem(c.val[:0], k)
			c.val = v[:0]
		}
		if errors.Is(err, engine.ErrNotFound) {
			c.s.stats.getMisses.Add(1)
			if touch {
				c.s.stats.touchMisses.Add(1)
			}
			continue
		}
		if err != nil {
			c.replyErr(cmd, err)
			return
		}
		flags, cas, data, err := parseItem(v)
		if err != nil {
			c.replyErr(cmd, err)
			return
		}
		if c.s.flushed(cas) {
			c.s.stats.getMisses.Add(1)
			continue
		}
		c.s.stats.getHits.Add(1)
		if touch {
			c.s.stats.touchHits.Add(1)
		}
		w := c.w
		_, _ = w.WriteString("VALUE ")
		_, _ = w.Write(k)
		_ = w.WriteByte(' ')
		_, _ = w.Write(strconv.AppendUint(c.numBuf(), uint64(flags), 10))
		_ = w.WriteByte(' ')
		_, _ = w.Write(strconv.AppendInt(c.numBuf(), int64(len(data)), 10))
		if withCas {
			_ = w.WriteByte(' ')
			_, _ = w.Write(strconv.AppendUint(c.numBuf(), cas, 10))
		}
		_, _ = w.WriteString("\r\n")
		_, _ = w.Write(data)
		_, _ = w.WriteString("\r\n")
		if c.w.Buffered() > bufSize {
			// A long multi-get: let the replies go out as they come.
			if err := c.flush(); err != nil {
				return
			}
		}
	}
	c.reply("END")
}

func (c *conn) numBuf() []byte {
	var b [24]byte
	return b[:0]
}

// touchItem sets key's expiry, keeping its value, flags and CAS, and
// returns the stored value (a copy). ErrNotFound if absent.
func (c *conn) touchItem(key []byte, expiry time.Time) ([]byte, error) {
	var out []byte
	_, err := c.s.db.Update(key, func(v []byte, _ engine.Item, found bool, _ uint64) (engine.Change, error) {
		if !found {
			return engine.Change{Op: engine.Keep}, nil
		}
		if _, cas, _, err := parseItem(v); err != nil || c.s.flushed(cas) {
			return engine.Change{Op: engine.Keep}, err
		}
		out = v
		return engine.Change{Op: engine.Set, Value: v, Expiry: expiry}, nil
	})
	if err == nil && out == nil {
		err = engine.ErrNotFound
	}
	return out, err
}

func (c *conn) touch(cmd *textCmd) {
	c.s.stats.cmdTouch.Add(1)
	_, err := c.touchItem(cmd.key, expiryOf(cmd.exptime, time.Now()))
	switch {
	case errors.Is(err, engine.ErrNotFound):
		c.s.stats.touchMisses.Add(1)
		c.replyTo(cmd, "NOT_FOUND")
	case err != nil:
		c.replyErr(cmd, err)
	default:
		c.s.stats.touchHits.Add(1)
		c.replyTo(cmd, "TOUCHED")
	}
}

func (c *conn) delete(cmd *textCmd) {
	found := false
	_, err := c.s.db.Update(cmd.key, func(v []byte, _ engine.Item, f bool, _ uint64) (engine.Change, error) {
		if f {
			_, cas, _, err := parseItem(v)
			if err != nil {
				return engine.Change{}, err
			}
			f = !c.s.flushed(cas)
		}
		found = f
		if !f {
			return engine.Change{Op: engine.Keep}, nil
		}
		return engine.Change{Op: engine.Remove}, nil
	})
	switch {
	case err != nil:
		c.replyErr(cmd, err)
	case found:
		c.s.stats.deleteHits.Add(1)
		c.replyTo(cmd, "DELETED")
	default:
		c.s.stats.deleteMisses.Add(1)
		c.replyTo(cmd, "NOT_FOUND")
	}
}

// maxNumLen: a counter is a decimal uint64 of at most 20 digits.
const maxNumLen = 20

var errNonNumericValue = errors.New("non-numeric")

// arith runs incr and decr: the item's data must be a decimal number
// (memcached: up to 20 digits); incr wraps at 2^64, decr stops at 0. The
// new number keeps the item's flags and expiry and gets a new CAS.
func (c *conn) arith(cmd *textCmd) {
	var result uint64
	found := false
	_, err := c.s.db.Update(cmd.key, func(v []byte, cur engine.Item, f bool, next uint64) (engine.Change, error) {
		if !f {
			return engine.Change{Op: engine.Keep}, nil
		}
		flags, cas, data, err := parseItem(v)
		if err != nil {
			return engine.Change{}, err
		}
		if found = !c.s.flushed(cas); !found {
			return engine.Change{Op: engine.Keep}, nil
		}
		if len(data) == 0 || len(data) > maxNumLen {
			return engine.Change{}, errNonNumericValue
		}
		n, err := strconv.ParseUint(string(data), 10, 64)
		if err != nil {
			return engine.Change{}, errNonNumericValue
		}
		if cmd.kind == cmdIncr {
			n += cmd.delta
		} else if cmd.delta > n {
			n = 0
		} else {
			n -= cmd.delta
		}
		result = n
		nv := appendItem(make([]byte, 0, itemHeader+maxNumLen), flags, next, nil)
		nv = strconv.AppendUint(nv, n, 10)
		return engine.Change{Op: engine.Set, Value: nv, Expiry: cur.Expiry}, nil
	})
	hits, misses := &c.s.stats.incrHits, &c.s.stats.incrMisses
	if cmd.kind == cmdDecr {
		hits, misses = &c.s.stats.decrHits, &c.s.stats.decrMisses
	}
	switch {
	case errors.Is(err, errNonNumericValue):
		c.replyTo(cmd, errNonNumeric.line)
	case err != nil:
		c.replyErr(cmd, err)
	case !found:
		misses.Add(1)
		c.replyTo(cmd, "NOT_FOUND")
	default:
		hits.Add(1)
		c.replyTo(cmd, strconv.FormatUint(result, 10))
	}
}
