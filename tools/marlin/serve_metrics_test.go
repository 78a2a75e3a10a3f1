package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/require"
)

// freeAddr returns a 127.0.0.1 address with a port free a moment ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	return ln.Addr().String()
}

// TestServeMetrics: marlin serve --metrics ADDR logs the address, serves
// /metrics in Prometheus's text format with the commands run, and stops
// the metrics server on SIGTERM with the rest (exit status 0).
func TestServeMetrics(t *testing.T) {
	addr, maddr := freeAddr(t), freeAddr(t)
	cmd := exec.Command(os.Args[0], "-test.run=^TestServeChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=--dir %s --listen %s --sync none --metrics %s", serveChildEnv, t.TempDir(), addr, maddr))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	require.NoError(t, cmd.Start())
	defer func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}()
	var c net.Conn
	for i := 0; ; i++ {
		var err error
		if c, err = net.Dial("tcp", addr); err == nil {
			break
		}
		require.Less(t, i, 250, "marlin serve did not start: %v", err)
		time.Sleep(20 * time.Millisecond)
	}
	defer c.Close()
	r := bufio.NewReader(c)
	_, err := io.WriteString(c, "set k 0 0 1\r\nx\r\nget k\r\nget nope\r\n")
	require.NoError(t, err)
	var got string
	for _, want := range []string{"STORED\r\n", "VALUE k 0 1\r\n", "x\r\n", "END\r\n", "END\r\n"} {
		l, err := r.ReadString('\n')
		require.NoError(t, err)
		got += l
		require.Equal(t, want, l, got)
	}

	resp, err := http.Get("http://" + maddr + "/metrics")
	require.NoError(t, err)
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	resp.Body.Close()
	require.NoError(t, err)
	value := func(name string, labels map[string]string) *dto.Metric {
		t.Helper()
		require.Contains(t, fams, name)
	next:
		for _, m := range fams[name].Metric {
			for _, l := range m.Label {
				if labels[l.GetName()] != l.GetValue() {
					continue next
				}
			}
			return m
		}
		t.Fatalf("no %s%v", name, labels)
		return nil
	}
	require.Equal(t, 1.0, value("marlin_commands_total", map[string]string{"command": "get", "status": "hit"}).GetCounter().GetValue())
	require.Equal(t, 1.0, value("marlin_commands_total", map[string]string{"command": "get", "status": "miss"}).GetCounter().GetValue())
	require.Equal(t, 1.0, value("marlin_cmd_set_total", nil).GetCounter().GetValue())
	require.Equal(t, uint64(2), value("marlin_command_duration_seconds", map[string]string{"command": "get"}).GetHistogram().GetSampleCount())
	require.Equal(t, 1.0, value("marlin_up", nil).GetGauge().GetValue())

	require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
	require.NoError(t, cmd.Wait(), "exit status after SIGTERM: %s", stderr.String())
	require.Contains(t, stderr.String(), "marlin serve: metrics")
	require.Contains(t, stderr.String(), "http://"+maddr+"/metrics")
	_, err = http.Get("http://" + maddr + "/metrics")
	require.Error(t, err, "the metrics server is stopped")
}

// TestServeMetricsAddrTaken: a --metrics address in use fails at start.
func TestServeMetricsAddrTaken(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	var stderr bytes.Buffer
	err = runServe([]string{"--dir", t.TempDir(), "--listen", freeAddr(t), "--metrics", ln.Addr().String()}, io.Discard, &stderr)
	require.ErrorContains(t, err, "--metrics")
}
