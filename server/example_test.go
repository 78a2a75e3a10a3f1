package server_test

import (
	"bufio"
	"context"
	"fmt"
	"log"
	"net"
	"os"
	"strings"
	"time"

	"github.com/marlinkv/marlin/engine"
	"github.com/marlinkv/marlin/server"
)

// Example serves a database to memcached clients from a Go program (what
// marlin serve does), then talks to it as a client would.
func Example() {
	dir, err := os.MkdirTemp("", "marlin-example-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	db, err := engine.Open(dir, &engine.Options{Sync: engine.SyncPeriodic, MaxValueSize: 2 << 20})
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close() // after Shutdown
	s, err := server.New(db, server.Config{})
	if err != nil {
		log.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	go s.Serve(ln)
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = s.Shutdown(ctx) // finishes the commands in flight
	}()

	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "set greeting 0 0 5\r\nhello\r\nget greeting\r\n")
	r := bufio.NewReader(c)
	for range 4 {
		line, _ := r.ReadString('\n')
		fmt.Println(strings.TrimRight(line, "\r\n"))
	}
	// Output:
	// STORED
	// VALUE greeting 0 5
	// hello
	// END
}
