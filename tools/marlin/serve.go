package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/dustin/go-humanize"
	"github.com/marlinkv/marlin/admin"
	"github.com/marlinkv/marlin/engine"
	"github.com/marlinkv/marlin/fill"
	"github.com/marlinkv/marlin/keynorm"
	"github.com/marlinkv/marlin/server"
)

// runServe is marlin serve: the database of --dir over memcached's text and
// binary protocols on --listen, until SIGTERM or SIGINT; with --metrics,
// Prometheus metrics at http://ADDR/metrics. Shutdown stops accepting,
// lets the commands in flight finish, stops the metrics server, syncs and
// closes the database, and exits 0.
func runServe(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("serve", "--dir DIR [flags]",
		"marlin serve --dir /var/lib/marlin --listen 127.0.0.1:11211", stderr)
	var (
		dir      = fs.String("dir", "", "data directory (created if absent)")
		listen   = fs.String("listen", "127.0.0.1:11211", "address to listen on (host:port)")
		maxItem  = fs.Int("max-item-size", 1<<20, "largest value stored, in bytes (memcached -I)")
		maxConns = fs.Int("max-conns", 1024, "most connections served at once (memcached -c)")
		syncMode = fs.String("sync", "periodic", "durability: periodic (fsync every --sync-interval), group (fsync before each reply), always, none")
		syncIvl  = fs.Duration("sync-interval", time.Second, "period of --sync periodic")
		idle     = fs.Duration("idle-timeout", 0, "close a connection idle this long (0: never, as memcached)")
		wtimeout = fs.Duration("write-timeout", 30*time.Second, "close a connection that does not read its replies for this long")
		rtimeout = fs.Duration("read-timeout", 0, "close a connection that begins a command and does not send the rest of it for this long (0: never, as memcached)")
		metrics  = fs.String("metrics", "", "serve Prometheus metrics at http://ADDR/metrics (host:port; empty: off)")
		normSep  = fs.String("normalize-keys", "", "rewrite composite keys of parts joined by SEP to one canonical form (parts sorted; empty: off)")
		normEsc  = fs.String("normalize-escape", "", "with --normalize-keys: a byte that makes the next one literal, so parts may hold SEP")
		normDup  = fs.Bool("normalize-dedup", false, "with --normalize-keys: keep one copy of repeated parts")
		normKeep = fs.Bool("normalize-keep-empty", false, "with --normalize-keys: keep empty parts (dropped by default)")
		normLead = fs.String("normalize-first", "", "with --normalize-keys: comma-separated part names that come first, in this order")
		maxDisk  = fs.String("max-disk", "", "cache mode: evict the oldest items in whole segments to keep the data files under this size (e.g. 50GiB; empty: never evict)")
		second   = fs.Bool("evict-second-chance", false, "with --max-disk: keep items read recently by copying them forward instead of evicting them")
		sharedV  = fs.Bool("shared-values", false, "store identical item data once: items with equal data refer to one stored copy, reclaimed with its last item (give it the first time on an empty --dir, then always)")
		baseFile = fs.String("base", "", "serve the merged view of this base bundle and --dir on top of it (recorded in --dir: later starts need not repeat it; see docs/bundle.md)")
		adminAt  = fs.String("admin", "", "serve the administration endpoints (stats, checkpoint, compact, fold into a new base...) at http://ADDR/ (host:port; empty: off; trusted addresses only)")
		ioMode   = fs.String("io", "auto", "how connections are served: loop (a few event loops, one per core), goroutine (one per connection: a command waiting for the disk holds up only its own client), auto (loop, unless --sync group or always)")
		loops    = fs.Int("loops", 0, "with --io loop: how many event loops (0: one per core)")
		ff       = fillFlags(fs)
	)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if *dir == "" {
		return errors.New("--dir is required")
	}
	sm, err := engine.ParseSyncMode(*syncMode)
	if err != nil {
		return err
	}
	serveIO := server.IOMode(*ioMode)
	switch serveIO {
	case "auto":
		serveIO = server.IOAuto
	case server.IOLoop, server.IOGoroutine:
	default:
		return fmt.Errorf("--io %q: want loop, goroutine or auto", *ioMode)
	}
	if *loops < 0 {
		return fmt.Errorf("--loops %d: want 0 or more", *loops)
	}
	var norm *keynorm.Normalizer
	if *normSep != "" {
		o := keynorm.Options{Sep: []byte(*normSep), Dedup: *normDup, KeepEmpty: *normKeep}
		switch len(*normEsc) {
		case 0:
		case 1:
			o.Escape = (*normEsc)[0]
		default:
			return fmt.Errorf("--normalize-escape %q: one byte", *normEsc)
		}
		if *normLead != "" {
			o.First = strings.Split(*normLead, ",")
		}
		if norm, err = keynorm.New(o); err != nil {
			return err
		}
	} else if *normEsc != "" || *normDup || *normKeep || *normLead != "" {
		return errors.New("--normalize-escape, --normalize-dedup, --normalize-keep-empty and --normalize-first need --normalize-keys")
	}
	loader, fillOpts, err := ff.loader(*maxItem)
	if err != nil {
		return err
	}
	var maxDiskBytes, segSize int64
	if *maxDisk != "" {
		n, err := humanize.ParseBytes(*maxDisk)
		if err != nil || n == 0 || n > math.MaxInt64 {
			return fmt.Errorf("--max-disk %q: want a size such as 50GiB", *maxDisk)
		}
		maxDiskBytes = int64(n)
		// Eviction drops whole segments: a sixteenth of the limit each
		// (the default 128 MiB from 2 GiB up), room for two items at least.
		segSize = min(128<<20, max(maxDiskBytes/16, 2*(int64(*maxItem)+4096)))
	} else if *second {
		return errors.New("--evict-second-chance needs --max-disk")
	}
	if *sharedV && *baseFile != "" {
		return errors.New("--shared-values cannot be combined with --base")
	}
	if *sharedV && maxDiskBytes > 0 {
		return errors.New("--shared-values cannot be combined with --max-disk: eviction would drop data that items still refer to")
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))
	db, err := engine.Open(*dir, &engine.Options{Sync: sm, SyncInterval: *syncIvl,
		MaxValueSize: *maxItem + 64, MaxDiskBytes: maxDiskBytes, SegmentSize: segSize, EvictSecondChance: *second, Logger: log,
		Base: *baseFile})
	if err != nil {
		return err
	}
	s, err := server.New(db, server.Config{MaxItemSize: *maxItem, MaxConns: *maxConns,
		IdleTimeout: *idle, WriteTimeout: *wtimeout, ReadTimeout: *rtimeout, Normalizer: norm,
		Loader: loader, Fill: fillOpts, SharedValues: *sharedV, IO: serveIO, Loops: *loops, Logger: log})
	if err != nil {
		db.Close()
		return err
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		db.Close()
		return err
	}
	// --metrics: /metrics on an HTTP server of its own, stopped with the
	// rest.
	var hs *http.Server
	metricsErr := make(chan error, 1)
	if *metrics != "" {
		mln, err := net.Listen("tcp", *metrics)
		if err != nil {
			ln.Close()
			db.Close()
			return fmt.Errorf("--metrics: %w", err)
		}
		mux := http.NewServeMux()
		mux.Handle("/metrics", s.MetricsHandler())
		hs = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}
		go func() { metricsErr <- hs.Serve(mln) }()
		log.Info("marlin serve: metrics", "addr", "http://"+mln.Addr().String()+"/metrics")
	}
	// --admin: the administration endpoints on an HTTP server of their
	// own (they write: never on the metrics address, which may be open
	// to a scraper network).
	var as *http.Server
	adminErr := make(chan error, 1)
	if *adminAt != "" {
		aln, err := net.Listen("tcp", *adminAt)
		if err != nil {
			ln.Close()
			if hs != nil {
				hs.Close()
			}
			db.Close()
			return fmt.Errorf("--admin: %w", err)
		}
		as = &http.Server{Handler: admin.HandlerWith(db, admin.Config{PrepareFold: s.PrepareFold}),
			ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}
		go func() { adminErr <- as.Serve(aln) }()
		log.Info("marlin serve: administration", "addr", "http://"+aln.Addr().String()+"/")
	}
	if b := db.Base(); b.Path != "" {
		log.Info("marlin serve: base bundle", "file", b.Path, "pairs", b.Pairs)
	}
	log.Info("marlin serve: listening", "addr", ln.Addr().String(), "dir", *dir, "sync", sm.String())
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sigs)
	served := make(chan error, 1)
	go func() { served <- s.Serve(ln) }()
	var serveErr error
	select {
	case sig := <-sigs:
		log.Info("marlin serve: shutting down", "signal", sig.String())
	case serveErr = <-served:
		log.Error("marlin serve: accept failed", "err", serveErr)
	case serveErr = <-metricsErr:
		serveErr = fmt.Errorf("--metrics: %w", serveErr)
		log.Error("marlin serve: metrics server failed", "err", serveErr)
	case serveErr = <-adminErr:
		serveErr = fmt.Errorf("--admin: %w", serveErr)
		log.Error("marlin serve: administration server failed", "err", serveErr)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		log.Warn("marlin serve: connections still busy at the deadline were closed", "err", err)
	}
	if as != nil {
		// A fold in progress finishes first (db.Close would wait for it).
		if err := as.Shutdown(ctx); err != nil {
			as.Close()
		}
	}
	if hs != nil {
		// After the server: a scrape during the drain still answers.
		if err := hs.Shutdown(ctx); err != nil {
			log.Warn("marlin serve: metrics requests still running at the deadline were closed", "err", err)
			hs.Close()
		}
	}
	if err := db.Close(); err != nil {
		return fmt.Errorf("close %s: %w", *dir, err)
	}
	if serveErr != nil && !errors.Is(serveErr, server.ErrServerClosed) {
		return serveErr
	}
	log.Info("marlin serve: stopped")
	return nil
}

// serveFill holds marlin serve's --fill-* flags.
type serveFill struct {
	url             *string
	workers, queue  *int
	retries         *int
	negTTL, timeout *time.Duration
}

func fillFlags(fs *flag.FlagSet) serveFill {
	return serveFill{
		url: fs.String("fill-url", "", "load missing keys from this http(s) URL, {key} standing for the key: a get that misses answers at once and queues the key "+
			"(200: the body is the value, Cache-Control max-age its TTL; 404: no such data; else a failure, retried)"),
		workers: fs.Int("fill-workers", fill.DefaultWorkers, "with --fill-url: loads run at once"),
		queue:   fs.Int("fill-queue", fill.DefaultQueueSize, "with --fill-url: keys waiting for a worker at most (misses beyond are dropped, counted)"),
		retries: fs.Int("fill-retries", fill.DefaultRetries, "with --fill-url: retries of a failed load (backoff doubling from 100ms)"),
		negTTL:  fs.Duration("fill-negative-ttl", fill.DefaultNegativeTTL, "with --fill-url: how long a key the source has no data for is not asked for again (0: not remembered)"),
		timeout: fs.Duration("fill-timeout", fill.DefaultTimeout, "with --fill-url: time limit of one load"),
	}
}

// loader returns the fill queue's loader and options (nil without
// --fill-url).
func (f serveFill) loader(maxItem int) (fill.Loader, fill.Options, error) {
	var o fill.Options
	if *f.url == "" {
		return nil, o, nil
	}
	if *f.workers <= 0 || *f.queue <= 0 || *f.retries < 0 || *f.negTTL < 0 || *f.timeout <= 0 {
		return nil, o, errors.New("--fill-workers, --fill-queue and --fill-timeout must be positive; --fill-retries and --fill-negative-ttl not negative")
	}
	o = fill.Options{Workers: *f.workers, QueueSize: *f.queue, Retries: *f.retries, NegativeTTL: *f.negTTL, Timeout: *f.timeout}
	if o.Retries == 0 {
		o.Retries = -1
	}
	if o.NegativeTTL == 0 {
		o.NegativeTTL = -1
	}
	l, err := fill.HTTPLoader(*f.url, maxItem, nil)
	if err != nil {
		return nil, o, fmt.Errorf("--fill-url: %w", err)
	}
	return l, o, nil
}
