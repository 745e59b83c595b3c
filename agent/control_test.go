package agent

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/sealrelay/sealrelay/agent/config"
	"github.com/sealrelay/sealrelay/agent/spool"
)

// processUmask reads the process's umask without changing it.
func processUmask(t *testing.T) string {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Skipf("cannot read the umask here: %v", err)
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "Umask:"); ok {
			return strings.TrimSpace(v)
		}
	}
	t.Skip("no Umask line in /proc/self/status (Linux before 4.7)")
	return ""
}

// TestControlSocketLeavesUmaskAlone: the control socket ends mode 0600,
// and making it never changes the process's umask, which every other
// goroutine's new files and directories depend on: the spool opening
// (and creating its directories) and directories made meanwhile by
// another goroutine all get the modes the umask set at start gives, and
// the umask, watched all along, never moves.
func TestControlSocketLeavesUmaskAlone(t *testing.T) {
	old := syscall.Umask(0o022) // set once, before anything starts
	defer syscall.Umask(old)
	const want = "0022"
	if got := processUmask(t); got != want {
		t.Fatalf("umask %s after setting 0022", got)
	}

	var stop atomic.Bool
	var wg sync.WaitGroup
	var seen sync.Map // umask values and directory modes seen that are not the expected ones
	wg.Go(func() {
		for !stop.Load() {
			if u := processUmask(t); u != want {
				seen.Store("umask "+u, true)
			}
		}
	})
	mkdirs := t.TempDir()
	wg.Go(func() {
		for i := 0; !stop.Load(); i++ {
			p := filepath.Join(mkdirs, fmt.Sprint(i))
			if err := os.Mkdir(p, 0o777); err != nil {
				seen.Store("mkdir: "+err.Error(), true)
				return
			}
			if fi, err := os.Stat(p); err != nil {
				seen.Store("stat: "+err.Error(), true)
			} else if m := fi.Mode().Perm(); m != 0o755 {
				seen.Store(fmt.Sprintf("a directory made meanwhile has mode %04o, want 0755", m), true)
			}
			os.Remove(p)
		}
	})

	for i := range 100 {
		data := filepath.Join(t.TempDir(), "data")
		q, err := spool.Open(spool.Options{Dir: filepath.Join(data, "spool")})
		if err != nil {
			t.Fatal(err)
		}
		a := &Agent{cfg: &config.Config{DataDir: data}}
		ln, err := a.listenControl()
		if err != nil {
			t.Fatal(err)
		}
		fi, err := os.Lstat(ControlSocket(data))
		if err != nil {
			t.Fatal(err)
		}
		if m := fi.Mode(); m.Type() != fs.ModeSocket || m.Perm() != 0o600 {
			t.Fatalf("round %d: control socket %v, want a socket of mode 0600", i, m)
		}
		ln.Close()
		q.WaitLoaded()
		q.Close()
		if ents, _ := os.ReadDir(data); len(ents) != 1 || ents[0].Name() != "spool" {
			t.Fatalf("round %d: data directory holds %v after the socket closed, want the spool only", i, ents)
		}
	}
	stop.Store(true)
	wg.Wait()
	seen.Range(func(k, _ any) bool {
		t.Errorf("while the spool opened and the control socket was made: %s", k)
		return true
	})
}
