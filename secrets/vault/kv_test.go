package vault

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sealrelay/sealrelay/internal/testing/peers/vaulttest"
	"github.com/sealrelay/sealrelay/keys"
	"github.com/sealrelay/sealrelay/secrets"
)

// tokenSource returns a started token-auth Source for a path of this test.
func tokenSource(t *testing.T, cfg Config) (*Source, *logs, string) {
	t.Helper()
	path := testPath(t)
	file, token := readToken(t, path, vaulttest.Token{})
	cfg.Path, cfg.Auth, cfg.TokenFile = path, "token", file
	s, logs := newSource(t, cfg)
	logs.forbid(token)
	if err := start(t, s); err != nil {
		t.Fatal(err)
	}
	return s, logs, path
}

// After a write, the version Versions reports changes, Fetch returns the
// new value with that version, and a Store polling the Source picks it up.
func TestVersions(t *testing.T) {
	t.Parallel()
	s, _, path := tokenSource(t, Config{})
	v1 := shared.PutCredential(t, path+"/primary", "u", "pw-one")
	vs, err := s.Versions(ctx(t), []string{"primary"})
	if err != nil {
		t.Fatal(err)
	}
	if vs["primary"] != strconv.Itoa(v1) {
		t.Errorf("Versions = %v, want primary: %d", vs, v1)
	}
	if _, _, ver := fetchOne(t, s, "primary"); ver != strconv.Itoa(v1) {
		t.Errorf("Fetch version %q, want %d", ver, v1)
	}

	store := secrets.NewStore(s, []string{"primary"}, secrets.StoreOptions{PollInterval: 100 * time.Millisecond, Logger: s.log})
	if err := store.Load(ctx(t)); err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { store.Run(runCtx); close(done) }()
	t.Cleanup(func() { stop(); <-done })

	v2 := shared.PutCredential(t, path+"/primary", "u", "pw-two")
	if v2 == v1 {
		t.Fatalf("the write did not make a new version (%d)", v2)
	}
	vs, err = s.Versions(ctx(t), []string{"primary"})
	if err != nil {
		t.Fatal(err)
	}
	if vs["primary"] != strconv.Itoa(v2) {
		t.Errorf("Versions after the write = %v, want primary: %d", vs, v2)
	}
	if _, pw, ver := fetchOne(t, s, "primary"); ver != strconv.Itoa(v2) || pw != "pw-two" {
		t.Errorf("Fetch after the write: version %q, new password %v; want version %d", ver, pw == "pw-two", v2)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := store.Get("primary")
		if err == nil && c.Version == strconv.Itoa(v2) && c.Password() == "pw-two" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the Store did not pick up version %d in 10s: %v %v", v2, c, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestEntryErrors(t *testing.T) {
	t.Parallel()
	s, _, path := tokenSource(t, Config{})
	shared.Put(t, path+"/nopassword", map[string]any{"username": "u"})
	shared.Put(t, path+"/emptyuser", map[string]any{"username": "", "password": "pw-x"})
	shared.Put(t, path+"/numeric", map[string]any{"username": "u", "password": 42})
	shared.Put(t, path+"/unknownkey", map[string]any{"username": "u", "password": "pw-x", "region": "eu-west-1"})
	shared.PutCredential(t, path+"/deleted", "u", "pw-deleted")
	if err := shared.Client.KVv2(vaulttest.KVMount).Delete(context.Background(), path+"/deleted"); err != nil {
		t.Fatal(err)
	}
	shared.PutCredential(t, path+"/good", "u", "pw-good")
	data := "secret/data/" + path + "/"
	for _, tc := range []struct {
		name string
		want string
		kind error
	}{
		{"missing", data + "missing: entry missing", secrets.ErrNotFound},
		{"deleted", data + "deleted: entry missing: its current version is deleted", secrets.ErrNotFound},
		{"nopassword", data + `nopassword: missing key: entry "nopassword" has no password`, ErrMissingKey},
		{"emptyuser", data + `emptyuser: missing key: entry "emptyuser" has no username`, ErrMissingKey},
		{"numeric", data + `numeric: invalid entry: entry "numeric": password must be a string`, secrets.ErrInvalidEntry},
		{"unknownkey", data + `unknownkey: unknown key: entry "unknownkey" has key "region", which is not for kind password (a password entry takes username, password, and kind and generation)`, secrets.ErrUnknownKey},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// good comes first: the fetch fails as a whole, with no partial result.
			got, err := s.Fetch(ctx(t), []string{"good", tc.name})
			wantErr(t, err, tc.want)
			if !errors.Is(err, tc.kind) {
				t.Errorf("error is not %v: %v", tc.kind, err)
			}
			if got != nil {
				t.Errorf("partial result %v", got)
			}
			if h := hintOf(err); tc.kind != secrets.ErrNotFound && !strings.Contains(h, "sealrelay creds set "+tc.name+" --vault") {
				t.Errorf("hint %q", h)
			}
		})
	}
	_, err := s.Versions(ctx(t), []string{"missing"})
	wantErr(t, err, "secret/metadata/"+path+"/missing: entry missing")

	_, err = s.Fetch(ctx(t), []string{"../other"})
	wantErr(t, err, `vault: "../other" is not a valid entry name`)
}

// A token without a policy for the path gets "permission denied" naming
// its policies (and is not mistaken for a dead token).
func TestPermissionDenied(t *testing.T) {
	t.Parallel()
	path := testPath(t)
	shared.PutCredential(t, path+"/primary", "u", "pw-denied")
	token := shared.CreateToken(t, vaulttest.Token{Policies: []string{"default"}})
	file := writeFile(t, t.TempDir(), "token", token, 0o600)
	s, logs := newSource(t, Config{Path: path, Auth: "token", TokenFile: file})
	logs.forbid(token)
	_, err := s.Fetch(ctx(t), []string{"primary"})
	wantErr(t, err, "secret/data/"+path+"/primary: permission denied: the token's policies (default) do not allow this")
	if !errors.Is(err, ErrPermissionDenied) {
		t.Errorf("not ErrPermissionDenied: %v", err)
	}
	if h := hintOf(err); !strings.Contains(h, "read on secret/data/"+path+"/*") {
		t.Errorf("hint %q", h)
	}
}

// identity returns a new age identity and a recipient list holding only it.
func identity(t *testing.T, name string) (*keys.Identity, *keys.RecipientList) {
	t.Helper()
	file, pub, err := keys.Generate(false, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	id, err := keys.Parse(bytes.NewReader(file), name)
	if err != nil {
		t.Fatal(err)
	}
	rl, err := keys.ParseRecipients(strings.NewReader("# "+name+"\n"+pub+"\n"), name+"-recipients.txt")
	if err != nil {
		t.Fatal(err)
	}
	return id, rl
}

func TestSealedValues(t *testing.T) {
	t.Parallel()
	ours, oursList := identity(t, "ours")
	_, othersList := identity(t, "other")
	s, logs, path := tokenSource(t, Config{Sealed: true, Identity: ours})
	logs.forbid("pw-sealed")

	v, err := s.Put(ctx(t), "primary", "sealed@example.com", "pw-sealed", oursList)
	if err != nil {
		t.Fatalf("Put: %v", err)
	}
	raw, err := shared.Client.KVv2(vaulttest.KVMount).Get(context.Background(), path+"/primary")
	if err != nil {
		t.Fatal(err)
	}
	stored := raw.Data["password"].(string)
	if !strings.HasPrefix(stored, "-----BEGIN AGE ENCRYPTED FILE-----") || strings.Contains(stored, "pw-sealed") {
		t.Errorf("the stored password is not an age-armored ciphertext:\n%s", stored)
	}
	if raw.Data["username"] != "sealed@example.com" {
		t.Errorf("the stored username is %v, want it in clear", raw.Data["username"])
	}
	user, pw, ver := fetchOne(t, s, "primary")
	if user != "sealed@example.com" || pw != "pw-sealed" || ver != strconv.Itoa(v) {
		t.Errorf("got %q, right password %v, version %q; want version %d", user, pw == "pw-sealed", ver, v)
	}

	// Sealed to another server only.
	if _, err := s.Put(ctx(t), "foreign", "u", "pw-foreign", othersList); err != nil {
		t.Fatal(err)
	}
	_, err = s.Fetch(ctx(t), []string{"foreign"})
	wantErr(t, err, "this server's key "+ours.PublicKey()+" is not among the recipients of vault entry secret/"+path+"/foreign")
	var nr *keys.NotRecipientError
	if !errors.As(err, &nr) {
		t.Errorf("error %T is not a *keys.NotRecipientError", err)
	}

	// A clear value where sealed ones are expected, and the reverse.
	shared.PutCredential(t, path+"/clear", "u", "pw-clear")
	_, err = s.Fetch(ctx(t), []string{"clear"})
	wantErr(t, err, "secret/data/"+path+"/clear: sealed setting does not match the stored value: sealed = true, but the password is not an age-armored ciphertext")
	unsealed, _ := newSource(t, Config{Path: path, Auth: "token", TokenFile: s.cfg.TokenFile})
	_, err = unsealed.Fetch(ctx(t), []string{"primary"})
	wantErr(t, err, "the password is an age-armored ciphertext, but sealed = false")
	if !errors.Is(err, ErrSealMismatch) {
		t.Errorf("not ErrSealMismatch: %v", err)
	}

	// Put refuses to store in clear what was meant to be sealed, and the
	// reverse.
	_, err = s.Put(ctx(t), "x", "u", "pw-x", nil)
	wantErr(t, err, "secret/data/"+path+"/x: sealed = true, so a recipient list is needed to seal the secrets")
	_, err = unsealed.Put(ctx(t), "x", "u", "pw-x", oursList)
	wantErr(t, err, "a recipient list was given, but sealed = false: the secrets would be stored in clear")

	// List shows names, usernames, versions and sealing; never a password.
	entries, err := s.List(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	want := []Entry{
		{Name: "clear", Username: "u", Version: 1},
		{Name: "foreign", Username: "u", Version: 1, Sealed: true},
		{Name: "primary", Username: "sealed@example.com", Version: v, Sealed: true},
	}
	for i := range want {
		want[i].Public = secrets.NewCredential(want[i].Name, want[i].Username, "[redacted]", "")
		want[i].Public.Generation = entries[i].Public.Generation
	}
	if fmt.Sprint(entries) != fmt.Sprint(want) || !secrets.ValidGeneration(entries[1].Public.Generation) {
		t.Errorf("List = %+v\nwant %+v", entries, want)
	}
	for _, e := range entries {
		if e.Public.Password() != "" || e.Public.Kind() != secrets.KindPassword || !slices.Equal(e.Public.SecretKeys(), []string{"password"}) {
			t.Errorf("List: %s: Public %v", e.Name, e.Public)
		}
	}
}

func TestListAndPut(t *testing.T) {
	t.Parallel()
	s, logs, path := tokenSource(t, Config{})
	logs.forbid("pw-a2", "pw-b")
	if entries, err := s.List(ctx(t)); err != nil || len(entries) != 0 {
		t.Fatalf("List of an empty path = %v, %v; want nothing", entries, err)
	}
	if v, err := s.Put(ctx(t), "a", "ua", "pw-a1", nil); err != nil || v != 1 {
		t.Fatalf("Put = %d, %v; want version 1", v, err)
	}
	if v, err := s.Put(ctx(t), "a", "ua", "pw-a2", nil); err != nil || v != 2 {
		t.Fatalf("Put = %d, %v; want version 2", v, err)
	}
	if _, err := s.Put(ctx(t), "b", "ub", "pw-b", nil); err != nil {
		t.Fatal(err)
	}
	shared.PutCredential(t, path+"/sub/c", "uc", "pw-c") // a folder: not an entry
	shared.PutCredential(t, path+"/gone", "ug", "pw-g")
	if err := shared.Client.KVv2(vaulttest.KVMount).Delete(context.Background(), path+"/gone"); err != nil {
		t.Fatal(err)
	}
	entries, err := s.List(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	want := []Entry{
		{Name: "a", Username: "ua", Version: 2},
		{Name: "b", Username: "ub", Version: 1},
		{Name: "gone", Version: 1, Deleted: true},
	}
	for i := range 2 {
		want[i].Public = secrets.NewCredential(want[i].Name, want[i].Username, "[redacted]", "")
		want[i].Public.Generation = entries[i].Public.Generation
	}
	if fmt.Sprintf("%+v", entries) != fmt.Sprintf("%+v", want) {
		t.Errorf("List = %+v\nwant %+v", entries, want)
	}
	if out := fmt.Sprintf("%#v", entries); strings.Contains(out, "pw-") {
		t.Errorf("List shows a password: %s", out)
	}
	if _, pw, _ := fetchOne(t, s, "a"); pw != "pw-a2" {
		t.Errorf("Fetch after Put: wrong password")
	}
	_, err = s.Put(ctx(t), "c", "", "pw", nil)
	wantErr(t, err, `secret/data/`+path+`/c: entry "c" has no username`)
}
