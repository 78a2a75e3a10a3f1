package server

import (
	"errors"
	"strconv"
	"time"

	"github.com/marlinkv/marlin/engine"
)

// Running text commands: each is turned into an item operation (ops.go)
// and its outcome into memcached's reply line.

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

var storeReplies = [...]string{stored: "STORED", notStored: "NOT_STORED", exists: "EXISTS", notFound: "NOT_FOUND"}

// storeModes maps a text storage command to its mode (cas is a set with
// a CAS check).
var storeModes = map[textKind]storeMode{cmdSet: modeSet, cmdCas: modeSet, cmdAdd: modeAdd,
	cmdReplace: modeReplace, cmdAppend: modeAppend, cmdPrepend: modePrepend}

func (c *conn) store(cmd *textCmd, data []byte) {
	c.st.cmdSet.Add(1)
	r := storeReq{mode: storeModes[cmd.kind], flags: cmd.flags, expiry: expiryOf(cmd.exptime, time.Now()),
		casCheck: cmd.kind == cmdCas, cas: cmd.cas}
	res, err := c.s.store(cmd.key, &r, data)
	switch {
	case errors.Is(err, errTooLarge):
		c.replyTo(cmd, errTooLargeReply)
	case err != nil:
		c.replyErr(cmd, err)
	default:
		if cmd.kind == cmdCas {
			c.st.countCas(res.out)
		}
		c.replyTo(cmd, storeReplies[res.out])
	}
}

// retrieve runs get, gets, gat and gats: a VALUE block per key found, then
// END. gat and gats set each found item's expiry first (keeping its CAS).
func (c *conn) retrieve(cmd *textCmd) {
	touch := cmd.kind == cmdGat || cmd.kind == cmdGats
	withCas := cmd.kind == cmdGets || cmd.kind == cmdGats
	var expiry time.Time
	if touch {
		expiry = expiryOf(cmd.exptime, time.Now())
	}
	// Normalized keys are all checked before any reply is written.
	skeys := cmd.keys
	if c.s.cfg.Normalizer != nil {
		c.nbuf, c.nkeys = c.nbuf[:0], c.nkeys[:0]
		for _, k := range cmd.keys {
			start := len(c.nbuf)
			var err error
			if c.nbuf, err = c.s.cfg.Normalizer.Append(c.nbuf, k); err != nil {
				c.reply(keyError(err))
				return
			}
			c.nkeys = append(c.nkeys, [2]int{start, len(c.nbuf)})
		}
		skeys = nil
	}
	for i, k := range cmd.keys {
		sk := k
		if skeys == nil {
			sk = c.nbuf[c.nkeys[i][0]:c.nkeys[i][1]]
		}
		c.st.cmdGet.Add(1)
		var h itemHdr
		var data []byte
		var err error
		if touch {
			c.st.cmdTouch.Add(1)
			data, h, err = c.s.touch(c.val[:0], sk, expiry)
			c.val = data[:0]
		} else {
			c.val, h, data, _, err = c.s.readItem(c.val[:0], sk)
			c.val = c.val[:0]
		}
		if errors.Is(err, engine.ErrNotFound) {
			c.st.getMisses.Add(1)
			c.s.missed(sk)
			if touch {
				c.st.touchMisses.Add(1)
			}
			continue
		}
		if err != nil {
			c.replyErr(cmd, err)
			return
		}
		c.st.getHits.Add(1)
		if touch {
			c.st.touchHits.Add(1)
		}
		w := c.w
		_, _ = w.WriteString("VALUE ")
		_, _ = w.Write(k)
		_ = w.WriteByte(' ')
		_, _ = w.Write(strconv.AppendUint(c.numBuf(), uint64(h.flags), 10))
		_ = w.WriteByte(' ')
		_, _ = w.Write(strconv.AppendInt(c.numBuf(), int64(len(data)), 10))
		if withCas {
			_ = w.WriteByte(' ')
			_, _ = w.Write(strconv.AppendUint(c.numBuf(), h.cas, 10))
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

// numBuf is scratch for formatting one number, valid until the next call.
func (c *conn) numBuf() []byte { return c.nbuf24[:0] }

func (c *conn) touch(cmd *textCmd) {
	c.st.cmdTouch.Add(1)
	var err error
	c.val, _, err = c.s.touch(c.val[:0], cmd.key, expiryOf(cmd.exptime, time.Now()))
	c.val = c.val[:0]
	switch {
	case errors.Is(err, engine.ErrNotFound):
		c.st.touchMisses.Add(1)
		c.replyTo(cmd, "NOT_FOUND")
	case err != nil:
		c.replyErr(cmd, err)
	default:
		c.st.touchHits.Add(1)
		c.replyTo(cmd, "TOUCHED")
	}
}

func (c *conn) delete(cmd *textCmd) {
	out, err := c.s.delete(cmd.key, &deleteReq{})
	switch {
	case err != nil:
		c.replyErr(cmd, err)
	case out == deleted:
		c.st.deleteHits.Add(1)
		c.replyTo(cmd, "DELETED")
	default:
		c.st.deleteMisses.Add(1)
		c.replyTo(cmd, "NOT_FOUND")
	}
}

// arith runs incr and decr.
func (c *conn) arith(cmd *textCmd) {
	res, err := c.s.arith(cmd.key, &arithReq{incr: cmd.kind == cmdIncr, delta: cmd.delta})
	if err != nil {
		c.replyErr(cmd, err)
		return
	}
	c.st.countArith(cmd.kind == cmdIncr, res.out)
	switch res.out {
	case arithNonNumeric:
		c.replyTo(cmd, errNonNumeric.line)
	case arithNotFound:
		c.replyTo(cmd, "NOT_FOUND")
	default:
		c.replyTo(cmd, strconv.FormatUint(res.value, 10))
	}
}
