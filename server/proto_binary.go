package server

import (
	"encoding/binary"
	"errors"
	"io"
	"strconv"
	"time"

	"github.com/marlinkv/marlin/engine"
)

// memcached's binary protocol (protocol_binary.h; libmemcached's
// memccapable -b tests it). A request is a 24-byte header, then extras,
// key and value; a response echoes the opcode and opaque. A connection
// may send binary requests (first byte 0x80) and text commands; each
// request is answered in its own protocol.

const (
	binReqMagic = 0x80
	binResMagic = 0x81
	binHeader   = 24
)

// Binary opcodes.
const (
	opGet        = 0x00
	opSet        = 0x01
	opAdd        = 0x02
	opReplace    = 0x03
	opDelete     = 0x04
	opIncrement  = 0x05
	opDecrement  = 0x06
	opQuit       = 0x07
	opFlush      = 0x08
	opGetQ       = 0x09
	opNoop       = 0x0a
	opVersion    = 0x0b
	opGetK       = 0x0c
	opGetKQ      = 0x0d
	opAppend     = 0x0e
	opPrepend    = 0x0f
	opStat       = 0x10
	opSetQ       = 0x11
	opAddQ       = 0x12
	opReplaceQ   = 0x13
	opDeleteQ    = 0x14
	opIncrementQ = 0x15
	opDecrementQ = 0x16
	opQuitQ      = 0x17
	opFlushQ     = 0x18
	opAppendQ    = 0x19
	opPrependQ   = 0x1a
	opTouch      = 0x1c
	opGAT        = 0x1d
	opGATQ       = 0x1e
	opGATK       = 0x23
	opGATKQ      = 0x24
)

// Binary status codes.
const (
	stOK          = 0x0000
	stNotFound    = 0x0001
	stExists      = 0x0002
	stTooLarge    = 0x0003
	stInvalid     = 0x0004
	stNotStored   = 0x0005
	stNonNumeric  = 0x0006
	stUnknownCmd  = 0x0081
	stServerError = 0x0084
)

var binStatusText = map[uint16]string{
	stNotFound: "Not found", stExists: "Data exists for key.", stTooLarge: "Too large.",
	stInvalid: "Invalid arguments", stNotStored: "Not stored.", stNonNumeric: "Non-numeric server-side value for incr or decr",
	stUnknownCmd: "Unknown command", stServerError: "Server error",
}

// binReq is one request; key, extras and value alias the connection's
// body buffer until the next request.
type binReq struct {
	op     byte
	opaque uint32
	cas    uint64
	extras []byte
	key    []byte // as the client sent it (replies name it)
	skey   []byte // what the engine stores: key, normalized (normalize.go)
	value  []byte
}

// quiet reports whether op is a quiet variant (no reply on success, or
// on a miss for gets).
func quiet(op byte) bool {
	switch op {
	case opGetQ, opGetKQ, opSetQ, opAddQ, opReplaceQ, opDeleteQ, opIncrementQ, opDecrementQ,
		opQuitQ, opFlushQ, opAppendQ, opPrependQ, opGATQ, opGATKQ:
		return true
	}
	return false
}

// readBinary reads one request. A body longer than the item limit (plus
// room for a key and extras) is refused: the connection is closed, as
// there is no way to answer it without reading it.
func (c *conn) readBinary() (binReq, error) {
	var h [binHeader]byte
	c.need(binHeader)
	if _, err := io.ReadFull(c.r, h[:]); err != nil {
		return binReq{}, err
	}
	keyLen := int(binary.BigEndian.Uint16(h[2:]))
	extLen := int(h[4])
	body := int(binary.BigEndian.Uint32(h[8:]))
	if body < keyLen+extLen || body > c.s.cfg.MaxItemSize+maxKeyLen+64 {
		return binReq{}, errBinaryFrame
	}
	if cap(c.data) < body {
		c.data = make([]byte, body)
	}
	b := c.data[:body]
	c.need(body)
	if _, err := io.ReadFull(c.r, b); err != nil {
		return binReq{}, err
	}
	return binReq{op: h[1], opaque: binary.BigEndian.Uint32(h[12:]), cas: binary.BigEndian.Uint64(h[16:]),
		extras: b[:extLen], key: b[extLen : extLen+keyLen], value: b[extLen+keyLen:]}, nil
}

var errBinaryFrame = errors.New("server: bad binary request frame")

// binReply writes one response packet.
func (c *conn) binReply(req *binReq, status uint16, cas uint64, extras, key, value []byte) {
	var h [binHeader]byte
	h[0] = binResMagic
	h[1] = req.op
	binary.BigEndian.PutUint16(h[2:], uint16(len(key)))
	h[4] = byte(len(extras))
	binary.BigEndian.PutUint16(h[6:], status)
	binary.BigEndian.PutUint32(h[8:], uint32(len(extras)+len(key)+len(value)))
	binary.BigEndian.PutUint32(h[12:], req.opaque)
	binary.BigEndian.PutUint64(h[16:], cas)
	_, _ = c.w.Write(h[:])
	_, _ = c.w.Write(extras)
	_, _ = c.w.Write(key)
	_, _ = c.w.Write(value)
}

// binServerError answers a request the engine failed, and logs why.
func (c *conn) binServerError(req *binReq, err error) {
	c.s.log.Warn("marlin serve: binary command failed", "op", req.op, "err", err)
	c.binError(req, stServerError)
}

// binError answers a failed request (quiet ones too: errors are always
// sent).
func (c *conn) binError(req *binReq, status uint16) {
	c.binReply(req, status, 0, nil, nil, []byte(binStatusText[status]))
}

// binary runs one binary request. An error ends the connection.
func (c *conn) binary() error {
	req, err := c.readBinary()
	if err != nil {
		return err
	}
	// A large body's buffer is not kept for an idle connection (the
	// request aliases it until this returns).
	if cap(c.data) > 64<<10 {
		defer func() { c.data = nil }()
	}
	c.setOp(binOps[req.op])
	q := quiet(req.op)
	if len(req.key) > maxKeyLen || reservedKey(req.key) {
		c.binError(&req, stInvalid)
		return nil
	}
	req.skey = req.key
	if c.s.cfg.Normalizer != nil && len(req.key) > 0 {
		if c.key, err = c.s.storeKey(c.key, req.key); err != nil {
			c.binError(&req, stInvalid)
			return nil
		}
		req.skey = c.key
	}
	switch req.op {
	case opNoop:
		c.binReply(&req, stOK, 0, nil, nil, nil)
	case opVersion:
		c.binReply(&req, stOK, 0, nil, nil, []byte(c.s.cfg.Version))
	case opQuit, opQuitQ:
		if !q {
			c.binReply(&req, stOK, 0, nil, nil, nil)
		}
		return errClose
	case opFlush, opFlushQ:
		var delay int64
		if len(req.extras) == 4 {
			delay = int64(binary.BigEndian.Uint32(req.extras))
		}
		if err := c.s.flushAll(delay); err != nil {
			c.binError(&req, stServerError)
		} else if !q {
			c.binReply(&req, stOK, 0, nil, nil, nil)
		}
	case opGet, opGetQ, opGetK, opGetKQ, opGAT, opGATQ, opGATK, opGATKQ, opTouch:
		c.binGet(&req, q)
	case opSet, opSetQ, opAdd, opAddQ, opReplace, opReplaceQ, opAppend, opAppendQ, opPrepend, opPrependQ:
		c.binStore(&req, q)
	case opDelete, opDeleteQ:
		c.binDelete(&req, q)
	case opIncrement, opIncrementQ, opDecrement, opDecrementQ:
		c.binArith(&req, q)
	case opStat:
		c.binStat(&req)
	default:
		c.binError(&req, stUnknownCmd)
	}
	return nil
}

func (c *conn) binGet(req *binReq, q bool) {
	touch := req.op == opGAT || req.op == opGATQ || req.op == opGATK || req.op == opGATKQ || req.op == opTouch
	withKey := req.op == opGetK || req.op == opGetKQ || req.op == opGATK || req.op == opGATKQ
	if len(req.key) == 0 || touch && len(req.extras) != 4 || !touch && len(req.extras) != 0 {
		c.binError(req, stInvalid)
		return
	}
	c.st.cmdGet.Add(1)
	var h itemHdr
	var data []byte
	var err error
	if touch {
		c.st.cmdTouch.Add(1)
		data, h, err = c.s.touch(c.val[:0], req.skey, expiryOf(int64(binary.BigEndian.Uint32(req.extras)), time.Now()))
		c.val = data[:0]
	} else {
		c.val, h, data, _, err = c.s.readItem(c.val[:0], req.skey)
		c.val = c.val[:0]
	}
	switch {
	case errors.Is(err, engine.ErrNotFound):
		c.st.getMisses.Add(1)
		c.s.missed(req.skey)
		if !q {
			if withKey {
				c.binReply(req, stNotFound, 0, nil, req.key, nil)
			} else {
				c.binError(req, stNotFound)
			}
		}
		return
	case err != nil:
		c.binServerError(req, err)
		return
	}
	c.st.getHits.Add(1)
	var ext [4]byte
	binary.BigEndian.PutUint32(ext[:], h.flags)
	if req.op == opTouch {
		c.binReply(req, stOK, h.cas, ext[:], nil, nil) // flags, no value (as memcached)
		return
	}
	var key []byte
	if withKey {
		key = req.key
	}
	c.binReply(req, stOK, h.cas, ext[:], key, data)
}

func (c *conn) binStore(req *binReq, q bool) {
	var r storeReq
	switch req.op {
	case opSet, opSetQ:
		r.mode = modeSet
	case opAdd, opAddQ:
		r.mode = modeAdd
	case opReplace, opReplaceQ:
		r.mode = modeReplace
	case opAppend, opAppendQ:
		r.mode = modeAppend
	case opPrepend, opPrependQ:
		r.mode = modePrepend
	}
	appendLike := r.mode == modeAppend || r.mode == modePrepend
	if len(req.key) == 0 || appendLike && len(req.extras) != 0 || !appendLike && len(req.extras) != 8 {
		c.binError(req, stInvalid)
		return
	}
	if len(req.value) > c.s.cfg.MaxItemSize {
		c.binError(req, stTooLarge)
		return
	}
	if !appendLike {
		r.flags = binary.BigEndian.Uint32(req.extras)
		r.expiry = expiryOf(int64(binary.BigEndian.Uint32(req.extras[4:])), time.Now())
	}
	// A CAS in the request makes set, replace, append and prepend
	// conditional on it (a cas command of the text protocol).
	r.casCheck, r.cas = req.cas != 0 && r.mode != modeAdd, req.cas
	c.st.cmdSet.Add(1)
	res, err := c.s.store(req.skey, &r, req.value)
	switch {
	case errors.Is(err, errTooLarge):
		c.binError(req, stTooLarge)
	case err != nil:
		c.binServerError(req, err)
	case res.out == stored:
		if !q {
			c.binReply(req, stOK, res.cas, nil, nil, nil)
		}
	case res.out == exists:
		c.binError(req, stExists)
	case res.out == notFound:
		c.binError(req, stNotFound)
	case r.mode == modeAdd:
		c.binError(req, stExists)
	case appendLike:
		c.binError(req, stNotStored)
	default:
		c.binError(req, stNotFound)
	}
}

func (c *conn) binDelete(req *binReq, q bool) {
	if len(req.key) == 0 || len(req.extras) != 0 {
		c.binError(req, stInvalid)
		return
	}
	out, err := c.s.delete(req.skey, &deleteReq{casCheck: req.cas != 0, cas: req.cas})
	switch {
	case err != nil:
		c.binServerError(req, err)
	case out == deleteNotFound:
		c.st.deleteMisses.Add(1)
		c.binError(req, stNotFound)
	case out == deleteExists:
		c.binError(req, stExists)
	default:
		c.st.deleteHits.Add(1)
		if !q {
			c.binReply(req, stOK, 0, nil, nil, nil)
		}
	}
}

func (c *conn) binArith(req *binReq, q bool) {
	if len(req.key) == 0 || len(req.extras) != 20 {
		c.binError(req, stInvalid)
		return
	}
	incr := req.op == opIncrement || req.op == opIncrementQ
	exp := binary.BigEndian.Uint32(req.extras[16:])
	r := arithReq{incr: incr, delta: binary.BigEndian.Uint64(req.extras),
		casCheck: req.cas != 0, cas: req.cas,
		// A missing counter is created with the initial value, unless
		// the expiration is all ones.
		create: exp != 0xffffffff, initial: binary.BigEndian.Uint64(req.extras[8:])}
	if r.create {
		r.createExpiry = expiryOf(int64(exp), time.Now())
	}
	res, err := c.s.arith(req.skey, &r)
	if err != nil {
		c.binServerError(req, err)
		return
	}
	c.st.countArith(incr, res.out)
	switch res.out {
	case arithNotFound:
		c.binError(req, stNotFound)
	case arithExists:
		c.binError(req, stExists)
	case arithNonNumeric:
		c.binError(req, stNonNumeric)
	default:
		if !q {
			var b [8]byte
			binary.BigEndian.PutUint64(b[:], res.value)
			c.binReply(req, stOK, res.cas, nil, nil, b[:])
		}
	}
}

// binStat answers a stat request: one packet per figure, then an empty
// one.
func (c *conn) binStat(req *binReq) {
	_, items, err := c.s.dbStats()
	if err != nil {
		c.binError(req, stServerError)
		return
	}
	t := c.s.totals()
	figures := []struct {
		k string
		v int64
	}{
		{"pid", int64(pid)}, {"uptime", int64(time.Since(t.started).Seconds())},
		{"curr_items", items}, {"cmd_get", t.cmdGet.Load()}, {"cmd_set", t.cmdSet.Load()},
		{"get_hits", t.getHits.Load()}, {"get_misses", t.getMisses.Load()},
	}
	for _, f := range figures {
		c.binReply(req, stOK, 0, nil, []byte(f.k), strconv.AppendInt(nil, f.v, 10))
	}
	c.binReply(req, stOK, 0, nil, []byte("version"), []byte(c.s.cfg.Version))
	c.binReply(req, stOK, 0, nil, nil, nil)
}
