package hydra

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"slices"
	"sync"
	"time"
)

// proxy forwards everything to Hydra's public API unchanged. It counts
// POSTs to /oauth2/token and, while down, listens nowhere so that its
// address refuses connections. Its address stays the same across down/up:
// it is the issuer Hydra was started with.
type proxy struct {
	addr string

	mu     sync.Mutex
	target *httputil.ReverseProxy
	srv    *http.Server
	tokens int
	issued []string // access and refresh tokens in the token endpoint's answers
}

// startProxy listens on a free port; requests get 502 until setTarget.
func startProxy() (*proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("proxy: %w", err)
	}
	p := &proxy{addr: ln.Addr().String()}
	p.serve(ln)
	return p, nil
}

func (p *proxy) setTarget(publicURL string) {
	u, _ := url.Parse(publicURL)
	rp := httputil.NewSingleHostReverseProxy(u)
	rp.Transport = &http.Transport{DisableKeepAlives: true}
	rp.ModifyResponse = p.record
	p.mu.Lock()
	p.target = rp
	p.mu.Unlock()
}

func (p *proxy) serve(ln net.Listener) {
	srv := &http.Server{Handler: http.HandlerFunc(p.handle), ReadHeaderTimeout: 10 * time.Second}
	p.srv = srv
	go srv.Serve(ln) //nolint:errcheck // ends with ErrServerClosed
}

func (p *proxy) handle(w http.ResponseWriter, r *http.Request) {
	p.mu.Lock()
	target := p.target
	if r.Method == http.MethodPost && r.URL.Path == "/oauth2/token" {
		p.tokens++
	}
	p.mu.Unlock()
	if target == nil {
		http.Error(w, "hydra is not ready", http.StatusBadGateway)
		return
	}
	target.ServeHTTP(w, r)
}

// record keeps the tokens of a token endpoint answer.
func (p *proxy) record(resp *http.Response) error {
	if resp.Request.Method != http.MethodPost || resp.Request.URL.Path != "/oauth2/token" || resp.StatusCode != http.StatusOK {
		return nil
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
	if err != nil {
		return err
	}
	resp.Body = io.NopCloser(bytes.NewReader(b))
	if resp.Header.Get("Content-Encoding") == "gzip" {
		zr, err := gzip.NewReader(bytes.NewReader(b))
		if err != nil {
			return err
		}
		if b, err = io.ReadAll(io.LimitReader(zr, 1<<20)); err != nil {
			return err
		}
	}
	var tok struct {
		Access  string `json:"access_token"`
		Refresh string `json:"refresh_token"`
	}
	if json.Unmarshal(b, &tok) == nil {
		p.mu.Lock()
		for _, s := range []string{tok.Access, tok.Refresh} {
			if s != "" {
				p.issued = append(p.issued, s)
			}
		}
		p.mu.Unlock()
	}
	return nil
}

func (p *proxy) issuedTokens() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.issued)
}

func (p *proxy) count() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.tokens
}

// down closes the listener and every open connection.
func (p *proxy) down() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.srv != nil {
		p.srv.Close() //nolint:errcheck // closing is all that is wanted
		p.srv = nil
	}
}

// up listens again on the same address. Right after down the port may
// briefly be unavailable, so it tries for a few seconds.
func (p *proxy) up() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.srv != nil {
		return nil
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		ln, err := net.Listen("tcp", p.addr)
		if err == nil {
			p.serve(ln)
			return nil
		}
		if time.Now().After(deadline) {
			return errors.Join(errors.New("port not free again"), err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (p *proxy) close() { p.down() }
