package testkit_test

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/holdfast-proxy/holdfast/internal/testkit"
)

// Frames of every length form, masked or not, survive AppendFrame then
// ParseFrame and ReadFrame, and gorilla reads what AppendFrame writes.
func TestFrameRoundTrip(t *testing.T) {
	t.Parallel()
	key := [4]byte{1, 2, 3, 4}
	for _, n := range []int{0, 1, 125, 126, 0xffff, 0x10000} {
		for _, k := range []*[4]byte{nil, &key} {
			payload := bytes.Repeat([]byte{'x', 'y', 'z'}, n/3+1)[:n]
			b := testkit.AppendFrame(nil, 0x82, payload, k)
			f, used, err := testkit.ParseFrame(append(b, 0x81))
			if err != nil || used != len(b) {
				t.Fatalf("n=%d masked=%v: parse: %v, used %d of %d", n, k != nil, err, used, len(b))
			}
			if !f.Fin || f.Opcode != 2 || f.Masked != (k != nil) || !bytes.Equal(f.Payload, payload) {
				t.Fatalf("n=%d masked=%v: parsed %+v", n, k != nil, f)
			}
			if _, _, err := testkit.ParseFrame(b[:len(b)-1]); n > 0 && !errors.Is(err, testkit.ErrShort) {
				t.Fatalf("n=%d: a frame cut short parsed: %v", n, err)
			}
			r, err := testkit.ReadFrame(bytes.NewReader(b), 0)
			if err != nil || !bytes.Equal(r.Payload, payload) {
				t.Fatalf("n=%d masked=%v: read: %v", n, k != nil, err)
			}
		}
	}
	if _, err := testkit.ReadFrame(bytes.NewReader(testkit.AppendFrame(nil, 0x82, make([]byte, 200), nil)), 100); err == nil {
		t.Fatal("a frame over the limit was read")
	}
}

// The scripted gateway sends the challenge, hands the connect to its
// session, counts it and its socket, and answers probes as started.
func TestGateway(t *testing.T) {
	t.Parallel()
	got := make(chan []byte, 1)
	g := testkit.StartGateway(t, testkit.GatewayConfig{Session: func(ws *websocket.Conn, connect []byte, _ *http.Request) {
		got <- connect
		_ = ws.WriteMessage(websocket.TextMessage, []byte(testkit.HelloOK(testkit.RequestID(connect), 1<<20)))
		_, _, _ = ws.ReadMessage()
	}})
	resp, err := http.Get("http://" + g.Addr() + "/startupz")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), `"started"`) {
		t.Fatalf("/startupz: %s", body)
	}
	ws := testkit.DialRaw(t, "ws://"+g.Addr()+"/", nil)
	if _, ch := testkit.Read(t, ws, 5*time.Second); string(ch) != testkit.ChallengeFrame {
		t.Fatalf("first frame %s", ch)
	}
	testkit.Write(t, ws, websocket.TextMessage, []byte(`{"type":"req","id":"c7","method":"connect"}`))
	if _, res := testkit.Read(t, ws, 5*time.Second); !strings.Contains(string(res), `"id":"c7"`) || !strings.Contains(string(res), `"maxPayload":1048576`) {
		t.Fatalf("answer %s", res)
	}
	if c := <-got; testkit.RequestID(c) != "c7" {
		t.Fatalf("session got %s", c)
	}
	if g.Connects() != 1 || g.Live() != 1 || len(g.ConnectTimes()) != 1 {
		t.Fatalf("connects %d, live %d", g.Connects(), g.Live())
	}
	ws.Close()
	testkit.WaitFor(t, 5*time.Second, "the gateway's socket to close", func() bool { return g.Live() == 0 })
}

// A raw TCP peer counts its connections until they close.
func TestServeTCP(t *testing.T) {
	t.Parallel()
	s := testkit.ServeTCP(t, func(c net.Conn, br *bufio.Reader) {
		line, _ := br.ReadString('\n')
		_, _ = c.Write([]byte(strings.ToUpper(line)))
		_, _ = io.Copy(io.Discard, br)
	})
	c, err := net.Dial("tcp", s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	_, _ = c.Write([]byte("hi\n"))
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if line, err := bufio.NewReader(c).ReadString('\n'); err != nil || line != "HI\n" {
		t.Fatalf("read %q, %v", line, err)
	}
	if s.Live() != 1 {
		t.Fatalf("live %d; want 1", s.Live())
	}
	c.Close()
	testkit.WaitFor(t, 5*time.Second, "the server's side to close", func() bool { return s.Live() == 0 })
}

func TestLogBuffer(t *testing.T) {
	t.Parallel()
	var b testkit.LogBuffer
	done := make(chan struct{})
	for range 4 {
		go func() { _, _ = b.Write([]byte("line\n")); done <- struct{}{} }()
	}
	for range 4 {
		<-done
	}
	if got := b.String(); got != strings.Repeat("line\n", 4) {
		t.Fatalf("%q", got)
	}
}

func TestNewDevice(t *testing.T) {
	t.Parallel()
	if a, b := testkit.NewDevice(t), testkit.NewDevice(t); a.ID() == b.ID() {
		t.Fatal("two devices with one id")
	}
}

// Heavy and prompt tests never run at the same time; tests of one kind
// do.
func TestKindsNeverOverlap(t *testing.T) {
	var mu sync.Mutex
	var running [2]int
	var overlap, together bool
	t.Run("group", func(t *testing.T) {
		for i := range 8 {
			t.Run(fmt.Sprint(i), func(t *testing.T) {
				t.Parallel()
				k := i % 2
				if k == 0 {
					testkit.Heavy(t)
				} else {
					testkit.Prompt(t)
				}
				mu.Lock()
				running[k]++
				if running[1-k] > 0 {
					overlap = true
				}
				if running[k] > 1 {
					together = true
				}
				mu.Unlock()
				time.Sleep(20 * time.Millisecond)
				mu.Lock()
				running[k]--
				mu.Unlock()
			})
		}
	})
	if overlap {
		t.Error("a heavy and a prompt test ran at the same time")
	}
	if !together {
		t.Log("no two tests of one kind ran together (-parallel 1?)")
	}
}
