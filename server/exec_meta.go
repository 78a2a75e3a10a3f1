package server

import (
	"bufio"
	"encoding/base64"
	"errors"
	"math"
	"strconv"
	"time"

	"github.com/marlinkv/marlin/engine"
)

// Running meta commands. Each becomes an item operation (ops.go); the
// reply is a two-letter code and the flags the request asked for, in the
// request's order, as memcached 1.6 writes them.
//
// State memcached keeps in RAM per item and this server keeps in the
// item's header (item.go), so it survives restarts: the stale mark (md I,
// ms I), the win mark (a client was sent W), and, for h and l, whether
// and when the item was last fetched. Recording a fetch is a write, so it
// is done only by an mg that asks for h or l (without u); other reads do
// not record it (docs/server.md, "Differences").

// meta runs one meta command line. An error ends the connection.
func (c *conn) meta(line []byte) error {
	// ms reads its data block after the line, which may refill the
	// reader's buffer the line aliases: work on a copy.
	if len(line) > 1 && line[1] == 's' {
		c.mline = append(c.mline[:0], line...)
		line = c.mline
	}
	toks, ok := tokens(c.toks, line)
	c.toks = toks[:0]
	if !ok {
		c.reply(errMetaTooMany.line)
		return nil
	}
	m, err := parseMeta(toks, c.s.cfg.MaxItemSize)
	if err != nil {
		return c.protoError(err, false) // errors are sent even with q
	}
	m.reqKey = m.key
	if c.s.cfg.Normalizer != nil && m.code != 'n' {
		// (c.key is the connection's own buffer: never an alias.)
		if c.key, err = c.s.storeKey(c.key, m.key); err != nil {
			if m.code == 's' {
				if err := c.swallow(int64(m.datalen) + 2); err != nil {
					return err
				}
			}
			c.reply(keyError(err))
			return nil
		}
		m.key = c.key
	}
	switch m.code {
	case 'n':
		c.reply("MN")
		return c.flush() // mn asks for everything before it, now
	case 'e':
		c.metaDebug(&m)
	case 'g':
		c.metaGet(&m)
	case 's':
		return c.metaSet(&m)
	case 'd':
		c.metaDelete(&m)
	case 'a':
		c.metaArith(&m)
	}
	return nil
}

// metaView is what a meta reply shows of an item.
type metaView struct {
	found    bool
	created  bool // vivified by this command (N)
	hdr      itemHdr
	data     []byte
	expiry   time.Time // before the command
	won      bool      // this client wins the right to recache (W)
	sentWon  bool      // another client was sent W before (Z)
	hitCount bool      // counted as a touch (T) rather than a get
}

// finalExpiry walks the flags in order as memcached applies them: T sets
// the expiry, N sets it on an item this command created. upTo stops the
// walk at the flag of that index (for a t flag's figure).
func (m *metaCmd) finalExpiry(start time.Time, created bool, now time.Time, upTo int) time.Time {
	exp := start
	for i, t := range m.flags {
		if i == upTo {
			break
		}
		switch {
		case t[0] == 'T':
			exp = expiryOf(m.ttlT, now)
		case t[0] == 'N' && created:
			exp = expiryOf(m.ttlN, now)
		}
	}
	return exp
}

// ttlOf is a t flag's figure: -1 for no expiry, else whole seconds left.
func ttlOf(exp, now time.Time) int64 {
	if exp.IsZero() {
		return -1
	}
	return max(int64(math.Round(exp.Sub(now).Seconds())), 0)
}

func (c *conn) metaGet(m *metaCmd) {
	now := time.Now()
	record := !m.noBump && (m.has('h') || m.has('l'))
	var v metaView
	var err error
	write := m.hasT || m.hasN || m.hasR || record
	if !write {
		v, err = c.metaRead(m.key)
		// A stale item not yet won is won by this read: a write.
		write = err == nil && v.found && v.hdr.bits&(bitStale|bitWon) == bitStale
	}
	if err == nil && write {
		v, err = c.metaGetUpdate(m, now, record)
	}
	if err != nil {
		c.replyErr(nil, err)
		return
	}
	st := &c.s.stats
	if !v.found {
		st.cmdGet.Add(1)
		st.getMisses.Add(1)
		if !m.hasN {
			c.s.missed(m.key) // (with N the client was told to fill it)
		}
		if !m.noreply {
			c.metaStatus(m, "EN", m.binKey)
			c.w.WriteString("\r\n")
		}
		return
	}
	if v.hitCount {
		st.cmdTouch.Add(1)
		st.touchHits.Add(1)
	} else {
		st.cmdGet.Add(1)
		st.getHits.Add(1)
	}
	value := m.value && !(m.hasC && v.hdr.cas == m.casC)
	w := c.w
	if value {
		w.WriteString("VA ")
		w.Write(strconv.AppendInt(c.numBuf(), int64(len(v.data)), 10))
	} else {
		w.WriteString("HD")
	}
	for i, t := range m.flags {
		switch t[0] {
		case 's':
			writeFlagNum(w, 's', int64(len(v.data)))
		case 't':
			writeFlagNum(w, 't', ttlOf(m.finalExpiry(v.expiry, v.created, now, i), now))
		case 'c':
			writeFlagUint(w, 'c', v.hdr.cas)
		case 'f':
			writeFlagUint(w, 'f', uint64(v.hdr.flags))
		case 'l':
			writeFlagNum(w, 'l', v.hdr.sinceAccess(now))
		case 'h':
			var h int64
			if v.hdr.bits&bitFetched != 0 {
				h = 1
			}
			writeFlagNum(w, 'h', h)
		case 'O':
			w.WriteByte(' ')
			w.Write(t)
		case 'k':
			writeKey(w, m.reqKey, v.hdr.bits&bitBinKey != 0 || v.created && m.binKey)
		}
	}
	if v.sentWon {
		w.WriteString(" Z")
	}
	if v.hdr.bits&bitStale != 0 {
		w.WriteString(" X")
	}
	if v.won {
		w.WriteString(" W")
	}
	w.WriteString("\r\n")
	if value {
		w.Write(v.data)
		w.WriteString("\r\n")
	}
}

// metaRead reads an item for an mg that changes nothing. The data is a
// copy in c.val.
func (c *conn) metaRead(key []byte) (metaView, error) {
	buf, h, data, expiry, err := c.s.readItem(c.val[:0], key)
	c.val = buf[:0]
	if errors.Is(err, engine.ErrNotFound) {
		return metaView{}, nil
	}
	if err != nil {
		return metaView{}, err
	}
	return metaView{found: true, hdr: h, data: data, expiry: expiry, sentWon: h.bits&bitWon != 0}, nil
}

// metaGetUpdate runs an mg that may change the item: vivify (N), set the
// expiry (T), hand out a win (R, or a stale item), record the fetch (h,
// l). The view shows the item as it was before (memcached's h and l show
// the state before the command).
func (c *conn) metaGetUpdate(m *metaCmd, now time.Time, record bool) (metaView, error) {
	var v metaView
	err := c.s.update(m.key, func(cur *curItem, next uint64) (engine.Change, error) {
		if !cur.found {
			v = metaView{}
			if !m.hasN {
				return engine.Change{Op: engine.Keep}, nil
			}
			h := itemHdr{cas: next, bits: bitWon}
			if m.hasE {
				h.cas = m.casE
			}
			if m.binKey {
				h.bits |= bitBinKey
			}
			v = metaView{found: true, created: true, hdr: h, won: true, hitCount: m.hasT}
			// The view's header is the new one, but h and l show "never
			// fetched" as memcached does for a new item.
			v.hdr.bits &^= bitWon
			return engine.Change{Op: engine.Set, Value: appendItem(nil, h, nil),
				Expiry: m.finalExpiry(time.Time{}, true, now, -1)}, nil
		}
		h := cur.hdr
		v = metaView{found: true, hdr: h, data: append(c.val[:0], cur.data...), expiry: cur.expiry,
			sentWon: h.bits&bitWon != 0, hitCount: m.hasT}
		if !v.sentWon {
			// R: a client wins the recache when the item's time left
			// is below the token; a stale item is won by the first read.
			if m.hasR && !cur.expiry.IsZero() && cur.expiry.Before(expiryOf(m.ttlR, now)) || h.bits&bitStale != 0 {
				v.won = true
				h.bits |= bitWon
			}
		}
		if record {
			h.bits |= bitFetched | bitAtime
			h.atime = uint32(now.Unix())
		}
		exp := m.finalExpiry(cur.expiry, false, now, -1)
		if h == cur.hdr && exp.Equal(cur.expiry) {
			return engine.Change{Op: engine.Keep}, nil
		}
		return engine.Change{Op: engine.Set, Value: appendItem(make([]byte, 0, itemSize(h, len(cur.data))), h, cur.data), Expiry: exp}, nil
	})
	c.val = v.data[:0]
	return v, err
}

// metaStorageModes maps ms's M token to a storage mode.
var metaStorageModes = map[byte]storeMode{0: modeSet, 'S': modeSet, 'E': modeAdd, 'A': modeAppend, 'P': modePrepend, 'R': modeReplace}

func (c *conn) metaSet(m *metaCmd) error {
	data, err := c.readData(m.datalen)
	if err != nil {
		if errors.Is(err, errBadDataChunk) {
			c.reply(errBadDataChunk.line)
			return nil
		}
		return err
	}
	now := time.Now()
	r := storeReq{mode: metaStorageModes[m.mode], flags: m.clientFlags, hasNewCas: m.hasE, newCas: m.casE}
	if m.hasT {
		r.expiry = expiryOf(m.ttlT, now)
	}
	if m.binKey {
		r.bits = bitBinKey
	}
	setLike := r.mode == modeSet || r.mode == modeReplace
	// memcached: a C token makes set and replace a cas; append and
	// prepend check a nonzero one; add ignores it.
	r.casCheck, r.cas = m.hasC && (setLike || m.casC != 0 && r.mode != modeAdd), m.casC
	r.invalidate = m.invalidate && setLike && m.hasC
	if m.hasN && (r.mode == modeAppend || r.mode == modePrepend) {
		r.vivify, r.vivifyExpiry = true, expiryOf(m.ttlN, now)
	}
	c.st.cmdSet.Add(1)
	res, err := c.s.store(m.key, &r, data)
	switch {
	case errors.Is(err, errTooLarge):
		c.reply(errTooLargeReply)
		return nil
	case err != nil:
		c.replyErr(nil, err)
		return nil
	}
	if setLike && m.hasC {
		c.st.countCas(res.out)
	}
	if res.out == stored && m.noreply {
		return nil
	}
	c.w.WriteString(metaStoreCodes[res.out])
	for _, t := range m.flags {
		switch t[0] {
		case 'O':
			c.w.WriteByte(' ')
			c.w.Write(t)
		case 'k':
			writeKey(c.w, m.reqKey, m.binKey)
		case 'c':
			cas := uint64(0)
			if res.out == stored {
				cas = res.cas
			}
			writeFlagUint(c.w, 'c', cas)
		}
	}
	c.w.WriteString("\r\n")
	return nil
}

var metaStoreCodes = [...]string{stored: "HD", notStored: "NS", exists: "EX", notFound: "NF"}

func (c *conn) metaDelete(m *metaCmd) {
	r := deleteReq{casCheck: m.hasC, cas: m.casC, invalidate: m.invalidate, hasNewCas: m.hasE, newCas: m.casE}
	if m.invalidate && m.hasT {
		r.hasExpiry, r.expiry = true, expiryOf(m.ttlT, time.Now())
	}
	out, err := c.s.delete(m.key, &r)
	if err != nil {
		c.replyErr(nil, err)
		return
	}
	code := "HD"
	switch out {
	case deleted:
		if !m.invalidate {
			c.st.deleteHits.Add(1)
		}
		if m.noreply {
			return
		}
	case deleteNotFound:
		c.st.deleteMisses.Add(1)
		code = "NF"
	case deleteExists:
		c.st.deleteMisses.Add(1)
		code = "EX"
	}
	c.metaStatus(m, code, m.binKey)
	c.w.WriteString("\r\n")
}

func (c *conn) metaArith(m *metaCmd) {
	now := time.Now()
	incr := m.mode != 'D' && m.mode != '-'
	r := arithReq{incr: incr, delta: m.delta, casCheck: m.hasC && m.casC != 0, cas: m.casC,
		create: m.hasN, initial: m.initial, hasNewCas: m.hasE, newCas: m.casE}
	if m.hasN {
		r.createExpiry = m.finalExpiry(time.Time{}, true, now, -1)
	}
	if m.hasT {
		r.hasExpiry, r.expiry = true, expiryOf(m.ttlT, now)
	}
	var old time.Time
	res, err := c.s.arith(m.key, &r)
	if err != nil {
		c.replyErr(nil, err)
		return
	}
	c.st.countArith(incr, res.out)
	switch res.out {
	case arithNonNumeric:
		c.reply(errNonNumeric.line)
		return
	case arithNotFound:
		c.metaStatus(m, "NF", m.binKey)
		c.w.WriteString("\r\n")
		return
	case arithExists:
		c.metaStatus(m, "EX", m.binKey)
		c.w.WriteString("\r\n")
		return
	case arithDone:
		if m.noreply {
			return
		}
		// t shows the expiry as of its place among the flags: T before
		// it has applied. The item's old expiry is the new one unless T
		// came at all.
		old = res.expiry
		if m.hasT {
			old = res.oldExpiry
		}
	}
	created := res.out == arithCreated
	num := strconv.AppendUint(c.nbufB[:0], res.value, 10) // (numBuf is used below)
	w := c.w
	if m.value {
		w.WriteString("VA ")
		w.Write(strconv.AppendInt(c.numBuf(), int64(len(num)), 10))
	} else {
		w.WriteString("HD")
	}
	for i, t := range m.flags {
		switch t[0] {
		case 'c':
			writeFlagUint(w, 'c', res.cas)
		case 't':
			writeFlagNum(w, 't', ttlOf(m.finalExpiry(old, created, now, i), now))
		case 'O':
			w.WriteByte(' ')
			w.Write(t)
		case 'k':
			writeKey(w, m.reqKey, m.binKey)
		}
	}
	if m.value {
		w.WriteString("\r\n")
		w.Write(num)
	}
	w.WriteString("\r\n")
}

// metaDebug answers me: the item's metadata in memcached's words.
func (c *conn) metaDebug(m *metaCmd) {
	v, err := c.metaRead(m.key)
	switch {
	case err != nil:
		c.replyErr(nil, err)
		return
	case !v.found:
		c.reply("EN")
		return
	}
	now := time.Now()
	w := c.w
	w.WriteString("ME ")
	if v.hdr.bits&bitBinKey != 0 {
		w.WriteString(base64.StdEncoding.EncodeToString(m.reqKey))
	} else {
		w.Write(m.reqKey)
	}
	w.WriteString(" exp=")
	w.Write(strconv.AppendInt(c.numBuf(), ttlOf(v.expiry, now), 10))
	w.WriteString(" la=")
	w.Write(strconv.AppendInt(c.numBuf(), v.hdr.sinceAccess(now), 10))
	w.WriteString(" cas=")
	w.Write(strconv.AppendUint(c.numBuf(), v.hdr.cas, 10))
	if v.hdr.bits&bitFetched != 0 {
		w.WriteString(" fetch=yes")
	} else {
		w.WriteString(" fetch=no")
	}
	// No slab classes here: cls is always 1; size is what the item takes
	// in the log (key and stored value).
	w.WriteString(" cls=1 size=")
	w.Write(strconv.AppendInt(c.numBuf(), int64(len(m.key)+itemSize(v.hdr, len(v.data))), 10))
	w.WriteString("\r\n")
}

// metaStatus writes a status code and the O and k flags, which every
// reply carries, hit or miss.
func (c *conn) metaStatus(m *metaCmd, code string, binKey bool) {
	c.w.WriteString(code)
	for _, t := range m.flags {
		switch t[0] {
		case 'O':
			c.w.WriteByte(' ')
			c.w.Write(t)
		case 'k':
			writeKey(c.w, m.reqKey, binKey)
		}
	}
}

// writeKey writes " k<key>", the key in base64 and a b flag after it if
// it was sent so.
func writeKey(w *bufio.Writer, key []byte, bin bool) {
	w.WriteString(" k")
	if !bin {
		w.Write(key)
		return
	}
	w.WriteString(base64.StdEncoding.EncodeToString(key))
	w.WriteString(" b")
}

func writeFlagNum(w *bufio.Writer, f byte, n int64) {
	var b [24]byte
	w.WriteByte(' ')
	w.WriteByte(f)
	w.Write(strconv.AppendInt(b[:0], n, 10))
}

func writeFlagUint(w *bufio.Writer, f byte, n uint64) {
	var b [24]byte
	w.WriteByte(' ')
	w.WriteByte(f)
	w.Write(strconv.AppendUint(b[:0], n, 10))
}
