package server

import (
	"os"
	"runtime"
	"strconv"
	"time"

	"golang.org/x/sys/unix"

	"github.com/marlinkv/marlin/engine"
)

var pid = os.Getpid()

// stats answers "stats" with the general figures memcached users and
// dashboards read; counts of items and bytes are the engine's. The groups
// are in statsGroup.
func (c *conn) stats(cmd *textCmd) {
	if len(cmd.args) > 0 {
		c.statsGroup(cmd)
		return
	}
	s := c.s
	st, items, err := s.dbStats()
	if err != nil {
		c.replyErr(cmd, err)
		return
	}
	now := time.Now()
	var ru runtime.MemStats
	runtime.ReadMemStats(&ru)
	s.mu.Lock()
	curr := len(s.conns)
	s.mu.Unlock()
	stat := func(name string, v int64) { c.reply("STAT " + name + " " + strconv.FormatInt(v, 10)) }
	stat("pid", int64(pid))
	t := s.totals()
	stat("uptime", int64(now.Sub(t.started).Seconds()))
	stat("time", now.Unix())
	c.reply("STAT version " + s.cfg.Version)
	stat("pointer_size", 64)
	stat("max_connections", int64(s.cfg.MaxConns))
	stat("curr_connections", int64(curr))
	stat("total_connections", t.totalConns.Load())
	stat("rejected_connections", t.rejectedConns.Load())
	stat("cmd_get", t.cmdGet.Load())
	stat("cmd_set", t.cmdSet.Load())
	stat("cmd_flush", t.cmdFlush.Load())
	stat("cmd_touch", t.cmdTouch.Load())
	stat("get_hits", t.getHits.Load())
	stat("get_misses", t.getMisses.Load())
	stat("delete_misses", t.deleteMisses.Load())
	stat("delete_hits", t.deleteHits.Load())
	stat("incr_misses", t.incrMisses.Load())
	stat("incr_hits", t.incrHits.Load())
	stat("decr_misses", t.decrMisses.Load())
	stat("decr_hits", t.decrHits.Load())
	stat("cas_misses", t.casMisses.Load())
	stat("cas_hits", t.casHits.Load())
	stat("cas_badval", t.casBadval.Load())
	stat("touch_hits", t.touchHits.Load())
	stat("touch_misses", t.touchMisses.Load())
	stat("bytes_read", t.bytesRead.Load())
	stat("bytes_written", t.bytesWritten.Load())
	stat("limit_maxbytes", s.limitBytes(st))
	stat("threads", int64(runtime.GOMAXPROCS(0)))
	stat("bytes", st.LiveBytes)
	stat("curr_items", items)
	stat("total_items", t.cmdSet.Load())
	stat("evictions", st.Evictions)
	stat("marlin_index_bytes", st.Index.ResidentBytes)
	stat("marlin_go_heap_bytes", int64(ru.HeapAlloc))
	stat("marlin_idle_connections", s.idleConnections())
	s.fillStatLines(stat)
	s.sharedStatLines(stat)
	c.reply("END")
}

// statsGroup answers "stats settings" (the settings that apply, with this
// server's values), "stats items" and "stats slabs" (memcached's per slab
// class figures: Marlin has no slab classes, so one class holds every
// item), and "stats reset" (zeroes the counters). Any other group gets
// memcached's answer to an unknown one, ERROR.
func (c *conn) statsGroup(cmd *textCmd) {
	s := c.s
	stat := func(name, v string) { c.reply("STAT " + name + " " + v) }
	itoa := func(v int64) string { return strconv.FormatInt(v, 10) }
	switch {
	case len(cmd.args) == 1 && string(cmd.args[0]) == "settings":
		stat("maxconns", itoa(int64(s.cfg.MaxConns)))
		if s.db.Limits().MaxDiskBytes > 0 {
			stat("evictions", "on") // cache mode (--max-disk)
		} else {
			stat("evictions", "off")
		}
		stat("cas_enabled", "yes")
		stat("item_size_max", itoa(int64(s.cfg.MaxItemSize)))
		stat("flush_enabled", "yes")
		stat("idle_timeout", itoa(int64(s.cfg.IdleTimeout.Seconds())))
		stat("num_threads", itoa(int64(runtime.GOMAXPROCS(0))))
		stat("binding_protocol", "ascii")
	case len(cmd.args) == 1 && (string(cmd.args[0]) == "items" || string(cmd.args[0]) == "slabs"):
		st, items, err := s.dbStats()
		if err != nil {
			c.replyErr(cmd, err)
			return
		}
		if string(cmd.args[0]) == "items" {
			stat("items:1:number", itoa(items))
			stat("items:1:evicted", itoa(st.Evictions))
			stat("items:1:outofmemory", "0")
		} else {
			stat("1:chunk_size", itoa(int64(s.cfg.MaxItemSize)))
			stat("1:used_chunks", itoa(items))
			stat("active_slabs", "1")
			stat("total_malloced", itoa(st.Index.ResidentBytes))
		}
	case len(cmd.args) == 1 && string(cmd.args[0]) == "reset":
		s.resetStats()
		c.reply("RESET")
		return
	default:
		c.reply(errUnknown.line)
		return
	}
	c.reply("END")
}

// limitBytes is limit_maxbytes: memcached's is its memory limit; this
// server's items are bounded by the disk, so it is cache mode's limit
// (--max-disk) or else the bytes the log holds now plus what the file
// system can still give it.
func (s *Server) limitBytes(st engine.Stats) int64 {
	if m := s.db.Limits().MaxDiskBytes; m > 0 {
		return m
	}
	var fs unix.Statfs_t
	if err := unix.Statfs(s.db.Dir(), &fs); err != nil {
		return st.DiskBytes
	}
	return st.DiskBytes + int64(fs.Bavail)*fs.Bsize
}
