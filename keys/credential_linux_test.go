package keys

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	sc "github.com/sealrelay/sealrelay/internal/testing/systemdcreds"
)

// TestLoadCredentialACL: a credential laid out as systemd does on tmpfs
// for a service with a User= of its own (root's file, mode 0400 plus an ACL
// entry for the user, which shows as 0440) is accepted; the same mode with
// an ACL that lets a group or another user read is refused.
func TestLoadCredentialACL(t *testing.T) {
	data, pub, err := Generate(false, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	me := uint32(os.Geteuid())
	t.Run("systemd's", func(t *testing.T) {
		dir := credentialsDir(t, data)
		path := filepath.Join(dir, "identity")
		sc.SetACL(t, path, sc.ServiceACL(me, sc.Read)...)
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o440 {
			t.Fatalf("with the ACL the mode shows %04o, want 0440 (the mask in the group bits)", fi.Mode().Perm())
		}
		id, err := LoadCredential(dir, "identity")
		if err != nil {
			t.Fatal(err)
		}
		if id.PublicKey() != pub {
			t.Errorf("public key %s, want %s", id.PublicKey(), pub)
		}
	})
	for _, tc := range []struct {
		name string
		acl  []sc.ACLEntry
		want string
	}{
		{"owning group reads", []sc.ACLEntry{
			{Tag: sc.UserObj, Perm: sc.Read}, {Tag: sc.User, Perm: sc.Read, ID: me},
			{Tag: sc.GroupObj, Perm: sc.Read}, {Tag: sc.Mask, Perm: sc.Read}, {Tag: sc.Other},
		}, "its ACL lets its group (gid "},
		{"named group reads", append(sc.ServiceACL(me, sc.Read), sc.ACLEntry{Tag: sc.Group, Perm: sc.Read, ID: 27}),
			"its ACL lets group gid 27 read it (mode 0440)"},
		{"another user reads", sc.ServiceACL(otherUID, sc.Read), "its ACL lets uid 4242 read it (mode 0440)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := credentialsDir(t, data)
			sc.SetACL(t, filepath.Join(dir, "identity"), tc.acl...)
			_, err := LoadCredential(dir, "identity")
			checkUnsafe(t, err, unsafeFile{errHas: tc.want, hintHas: "systemd makes a credential readable"})
			if err != nil && !strings.HasPrefix(err.Error(), `systemd credential "identity" in `+dir+": ") {
				t.Errorf("error %q does not name the credential and the directory", err)
			}
		})
	}
	// The mask limits what the named entries grant: a group entry with r
	// under a mask without r reads nothing. (Such a file shows mode 0400
	// and is accepted without a look at its ACL; aclReaders agrees.)
	masked := append(sc.ServiceACL(me, sc.Read), sc.ACLEntry{Tag: sc.Group, Perm: sc.Read, ID: 27})
	masked[3].Perm = 0
	if why := aclReaders(sc.Encode(masked), 0); why != "" {
		t.Errorf("a group entry masked off: %q, want no reader", why)
	}
	for _, bad := range [][]byte{nil, {1, 0, 0, 0}, append(sc.Encode(sc.ServiceACL(me, sc.Read)), 1)} {
		if why := aclReaders(bad, 0); why != "its ACL is not in a form sealrelay knows" {
			t.Errorf("aclReaders(%v) = %q", bad, why)
		}
	}
}
