package agent

import (
	"net"
	"strings"
	"testing"
	"time"
)

// TestAcceptWatch: the accept loop counts as alive while it waits in
// Accept, however long, and while it handles a connection for less than
// the limit; a loop that stopped coming back is reported.
func TestAcceptWatch(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	w := watchAccept(ln)
	defer w.Close()
	const limit = 200 * time.Millisecond

	handle := make(chan struct{}) // the loop "handles" a connection until this closes
	go func() {
		for {
			c, err := w.Accept()
			if err != nil {
				return
			}
			c.Close()
			<-handle
		}
	}()
	time.Sleep(2 * limit) // idle, waiting in Accept: no traffic needed
	if err := w.alive(limit); err != nil {
		t.Fatalf("idle accept loop: %v", err)
	}

	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	time.Sleep(2 * limit)
	err = w.alive(limit)
	if err == nil || !strings.Contains(err.Error(), "accept loop has not come back for") {
		t.Fatalf("loop stuck after a connection: alive = %v, want an error", err)
	}
	close(handle)
	deadline := time.Now().Add(5 * time.Second)
	for w.alive(limit) != nil {
		if time.Now().After(deadline) {
			t.Fatal("the loop came back but is not seen as alive")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
