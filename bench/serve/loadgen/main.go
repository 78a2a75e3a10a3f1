// Command loadgen fills a memcached-protocol server with keys and then
// reads them back at random, for make bench-serve-10m: memcaslap's own
// keys are a small window it sets itself, so it cannot read a database
// of ten million keys filled beforehand, nor report exact percentiles.
//
//	loadgen -addr 127.0.0.1:11211 -mode fill -keys 10000000 -value 100
//	loadgen -addr 127.0.0.1:11211 -mode get -keys 10000000 -conns 32 -time 20s
//	loadgen -addr 127.0.0.1:11211 -mode idle -conns 10000 -time 15s
//
// fill pipelines "set" commands with noreply over -conns connections, each
// connection a contiguous range of keys, and ends each connection with a
// version round trip (everything before it was run). get runs -conns
// connections, each sending one "get" of a uniformly random key and
// waiting for its reply; it prints ops/s, the hit ratio and latency
// percentiles (HDR histogram, every percentile within 0.1%). A miss or an
// error line is counted; the run fails if any reply is malformed. idle
// opens -conns connections, has each served one "version", prints
// "ready", holds them open and silent for -time, then checks that each
// still answers (for the memory of idle connections: read the server's
// RSS while they wait).
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/marlinkv/marlin/bench"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:11211", "server address")
	mode := flag.String("mode", "get", "fill, get or idle")
	keys := flag.Int("keys", 10_000_000, "number of keys (k0 .. k<keys-1>)")
	value := flag.Int("value", 100, "value size in bytes (fill)")
	conns := flag.Int("conns", 32, "connections")
	dur := flag.Duration("time", 20*time.Second, "how long get runs")
	asJSON := flag.Bool("json", false, "print the result as JSON")
	flag.Parse()
	var err error
	switch *mode {
	case "fill":
		err = fill(*addr, *keys, *value, *conns)
	case "get":
		err = get(*addr, *keys, *conns, *dur, *asJSON)
	case "idle":
		err = idle(*addr, *conns, *dur)
	default:
		err = fmt.Errorf("unknown -mode %q", *mode)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(1)
	}
}

func key(dst []byte, i int) []byte {
	return strconv.AppendInt(append(dst, 'k'), int64(i), 10)
}

func fill(addr string, keys, size, conns int) error {
	start := time.Now()
	val := bytes.Repeat([]byte("v"), size)
	var wg sync.WaitGroup
	errs := make(chan error, conns)
	var done atomic.Int64
	per := (keys + conns - 1) / conns
	for c := range conns {
		lo, hi := c*per, min((c+1)*per, keys)
		wg.Add(1)
		go func() {
			defer wg.Done()
			nc, err := net.Dial("tcp", addr)
			if err != nil {
				errs <- err
				return
			}
			defer nc.Close()
			w := bufio.NewWriterSize(nc, 256<<10)
			var line []byte
			for i := lo; i < hi; i++ {
				line = append(key(append(line[:0], "set "...), i), " 0 0 "...)
				line = strconv.AppendInt(line, int64(size), 10)
				line = append(line, " noreply\r\n"...)
				w.Write(line)
				w.Write(val)
				w.WriteString("\r\n")
				if (i-lo)%4096 == 4095 {
					done.Add(4096)
				}
			}
			w.WriteString("version\r\n")
			if err := w.Flush(); err != nil {
				errs <- err
				return
			}
			reply, err := bufio.NewReader(nc).ReadString('\n')
			if err != nil {
				errs <- err
				return
			}
			if len(reply) < 8 || reply[:8] != "VERSION " {
				errs <- fmt.Errorf("fill: the server answered %q (an error to a set?)", reply)
			}
		}()
	}
	stop := make(chan struct{})
	go func() {
		t := time.NewTicker(5 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				fmt.Fprintf(os.Stderr, "fill: %d keys, %.0f/s\n", done.Load(), float64(done.Load())/time.Since(start).Seconds())
			}
		}
	}()
	wg.Wait()
	close(stop)
	close(errs)
	if err := <-errs; err != nil {
		return err
	}
	el := time.Since(start)
	fmt.Printf("fill: %d keys of %d bytes in %.1f s (%.0f sets/s)\n", keys, size, el.Seconds(), float64(keys)/el.Seconds())
	return nil
}

type getResult struct {
	Ops    int64         `json:"ops"`
	OpsSec float64       `json:"ops_per_sec"`
	Hits   int64         `json:"hits"`
	Misses int64         `json:"misses"`
	Errors int64         `json:"errors"`
	Lat    bench.Latency `json:"latency"`
}

func get(addr string, keys, conns int, dur time.Duration, asJSON bool) error {
	hs := make([]*bench.Histogram, conns)
	var hits, misses, errLines atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, conns)
	deadline := time.Now().Add(dur)
	start := time.Now()
	for c := range conns {
		hs[c] = bench.NewHistogram()
		wg.Add(1)
		go func(h *bench.Histogram, seed uint64) {
			defer wg.Done()
			nc, err := net.Dial("tcp", addr)
			if err != nil {
				errs <- err
				return
			}
			defer nc.Close()
			r := bufio.NewReaderSize(nc, 64<<10)
			rng := rand.New(rand.NewPCG(seed, 42))
			var line []byte
			for time.Now().Before(deadline) {
				line = append(key(append(line[:0], "get "...), rng.IntN(keys)), "\r\n"...)
				t0 := time.Now()
				if _, err := nc.Write(line); err != nil {
					errs <- err
					return
				}
				hit, err := readGet(r)
				h.Record(time.Since(t0))
				switch {
				case errors.Is(err, errLine):
					errLines.Add(1)
				case err != nil:
					errs <- err
					return
				case hit:
					hits.Add(1)
				default:
					misses.Add(1)
				}
			}
		}(hs[c], uint64(c)+1)
	}
	wg.Wait()
	el := time.Since(start)
	close(errs)
	if err := <-errs; err != nil {
		return err
	}
	lat, _ := bench.MergeSummaries(hs)
	res := getResult{Ops: lat.Count, OpsSec: float64(lat.Count) / el.Seconds(), Hits: hits.Load(), Misses: misses.Load(), Errors: errLines.Load(), Lat: lat}
	if asJSON {
		return json.NewEncoder(os.Stdout).Encode(res)
	}
	us := func(ns int64) float64 { return float64(ns) / 1e3 }
	fmt.Printf("get: %d ops in %.1f s: %.0f ops/s, hits %d, misses %d, errors %d; latency µs p50 %.0f p90 %.0f p99 %.0f p99.9 %.0f max %.0f\n",
		res.Ops, el.Seconds(), res.OpsSec, res.Hits, res.Misses, res.Errors, us(lat.P50), us(lat.P90), us(lat.P99), us(lat.P999), us(lat.Max))
	return nil
}

var errLine = errors.New("error reply")

// readGet reads one get reply: VALUE line, data, END; or END; or an
// error line.
func readGet(r *bufio.Reader) (bool, error) {
	l, err := r.ReadSlice('\n')
	if err != nil {
		return false, err
	}
	switch {
	case bytes.Equal(l, []byte("END\r\n")):
		return false, nil
	case bytes.HasPrefix(l, []byte("VALUE ")):
	default:
		return false, errLine
	}
	f := bytes.Fields(l)
	if len(f) < 4 {
		return false, fmt.Errorf("malformed VALUE line %q", l)
	}
	n, err := strconv.Atoi(string(f[3]))
	if err != nil {
		return false, fmt.Errorf("malformed VALUE line %q", l)
	}
	if _, err := r.Discard(n + 2); err != nil {
		return false, err
	}
	l, err = r.ReadSlice('\n')
	if err != nil {
		return false, err
	}
	if !bytes.Equal(l, []byte("END\r\n")) {
		return false, fmt.Errorf("expected END, got %q", l)
	}
	return true, nil
}

// idle holds n connections open and silent for d.
func idle(addr string, n int, d time.Duration) error {
	version := func(nc net.Conn, r *bufio.Reader) error {
		if _, err := nc.Write([]byte("version\r\n")); err != nil {
			return err
		}
		line, err := r.ReadString('\n')
		if err != nil {
			return err
		}
		if !bytes.HasPrefix([]byte(line), []byte("VERSION ")) {
			return fmt.Errorf("version: got %q", line)
		}
		return nil
	}
	conns := make([]net.Conn, 0, n)
	rds := make([]*bufio.Reader, 0, n)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range n {
		nc, err := net.Dial("tcp", addr)
		if err != nil {
			return fmt.Errorf("connection %d: %w", len(conns), err)
		}
		conns = append(conns, nc)
		rds = append(rds, bufio.NewReaderSize(nc, 64))
		if err := version(nc, rds[len(rds)-1]); err != nil {
			return fmt.Errorf("connection %d: %w", len(conns)-1, err)
		}
	}
	fmt.Println("ready")
	time.Sleep(d)
	for i, nc := range conns {
		if err := version(nc, rds[i]); err != nil {
			return fmt.Errorf("connection %d after the wait: %w", i, err)
		}
	}
	fmt.Printf("%d connections held %v and served again\n", n, d)
	return nil
}
