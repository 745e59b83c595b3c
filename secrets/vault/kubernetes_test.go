package vault

import (
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
)

// fakeVault stands in for Vault where a real one cannot be used: Kubernetes
// auth needs a Kubernetes API to check the JWT, which this machine lacks.
// It records the login requests and serves one KV v2 entry to the token it
// issued.
type fakeVault struct {
	mu     sync.Mutex
	logins []map[string]any
	paths  []string
	reads  int
}

const fakeToken = "hvs.fake-kubernetes-token"

func (f *fakeVault) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	switch {
	case r.Method == http.MethodPut || r.Method == http.MethodPost:
		var body map[string]any
		json.NewDecoder(r.Body).Decode(&body) //nolint:errcheck // an empty body is recorded as nil
		f.logins = append(f.logins, body)
		f.paths = append(f.paths, r.URL.Path)
		if body["role"] != "relay" {
			w.WriteHeader(http.StatusBadRequest)
			w.Write([]byte(`{"errors":["invalid role name \"` + body["role"].(string) + `\""]}`))
			return
		}
		w.Write([]byte(`{"auth":{"client_token":"` + fakeToken + `","policies":["default","sealrelay"],"lease_duration":3600,"renewable":false}}`))
	case r.Method == http.MethodGet && r.URL.Path == "/v1/secret/data/sealrelay/primary":
		if r.Header.Get("X-Vault-Token") != fakeToken {
			w.WriteHeader(http.StatusForbidden)
			w.Write([]byte(`{"errors":["permission denied"]}`))
			return
		}
		f.reads++
		w.Write([]byte(`{"data":{"data":{"username":"k8s@example.com","password":"pw-k8s"},"metadata":{"version":4}}}`))
	default:
		w.WriteHeader(http.StatusNotFound)
		w.Write([]byte(`{"errors":[]}`))
	}
}

// startFake runs a fakeVault over TLS and writes its certificate to a PEM
// file.
func startFake(t *testing.T) (*fakeVault, *httptest.Server, string) {
	f := &fakeVault{}
	srv := httptest.NewUnstartedServer(f)
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // TestCAFile's failed handshake is expected
	srv.StartTLS()
	t.Cleanup(srv.Close)
	ca := writeFile(t, t.TempDir(), "ca.pem",
		string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})), 0o644)
	return f, srv, ca
}

func TestKubernetesLoginRequest(t *testing.T) {
	t.Parallel()
	f, srv, ca := startFake(t)
	const jwt = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6bWFpbDpyZWxheSJ9.c2lnbmF0dXJl"
	jwtFile := writeFile(t, t.TempDir(), "token", jwt+"\n", 0o600)
	s, logs := newSource(t, Config{Address: srv.URL, CAFile: ca, Auth: "kubernetes",
		KubernetesRole: "relay", KubernetesMount: "kube-test", JWTFile: jwtFile})
	logs.forbid(jwt, fakeToken, "pw-k8s")
	if err := start(t, s); err != nil {
		t.Fatalf("Start: %v", err)
	}
	user, pw, ver := fetchOne(t, s, "primary")
	if user != "k8s@example.com" || pw != "pw-k8s" || ver != "4" {
		t.Errorf("got %q %q version %q", user, pw, ver)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.logins) != 1 {
		t.Fatalf("%d login requests, want 1", len(f.logins))
	}
	if f.paths[0] != "/v1/auth/kube-test/login" {
		t.Errorf("login went to %s, want /v1/auth/kube-test/login", f.paths[0])
	}
	if f.logins[0]["role"] != "relay" || f.logins[0]["jwt"] != jwt {
		t.Errorf("login body %v, want role relay and the JWT from the file (trimmed)", f.logins[0])
	}
	if f.reads != 1 {
		t.Errorf("%d reads with the issued token, want 1", f.reads)
	}
}

func TestKubernetesLoginRefused(t *testing.T) {
	t.Parallel()
	_, srv, ca := startFake(t)
	jwtFile := writeFile(t, t.TempDir(), "token", "x.y.z", 0o600)
	s, _ := newSource(t, Config{Address: srv.URL, CAFile: ca, Auth: "kubernetes",
		KubernetesRole: "wrong", JWTFile: jwtFile})
	_, err := s.Fetch(ctx(t), []string{"primary"})
	wantErr(t, err, "secret/data/sealrelay/primary: auth/kubernetes/login: vault login failed: invalid role name \"wrong\"")
	if !errors.Is(err, ErrLoginFailed) {
		t.Errorf("not ErrLoginFailed: %v", err)
	}
	if h := hintOf(err); h != "check that vault's kubernetes role wrong is bound to this pod's service account" {
		t.Errorf("hint %q", h)
	}
}

// Vault's certificate is checked against the system roots plus ca_file.
func TestCAFile(t *testing.T) {
	t.Parallel()
	_, srv, ca := startFake(t)
	jwtFile := writeFile(t, t.TempDir(), "token", "x.y.z", 0o600)
	s, _ := newSource(t, Config{Address: srv.URL, Auth: "kubernetes", KubernetesRole: "relay", JWTFile: jwtFile})
	_, err := s.Fetch(ctx(t), []string{"primary"})
	wantErr(t, err, "auth/kubernetes/login: vault unreachable: ", "certificate")
	if !errors.Is(err, ErrUnreachable) {
		t.Errorf("not ErrUnreachable: %v", err)
	}

	s, _ = newSource(t, Config{Address: srv.URL, CAFile: ca, Auth: "kubernetes", KubernetesRole: "relay", JWTFile: jwtFile})
	fetchOne(t, s, "primary")
}
