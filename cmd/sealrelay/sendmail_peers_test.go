package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sealrelay/sealrelay/internal/testing/sandbox"
	"github.com/sealrelay/sealrelay/internal/testing/upstream"
)

// The sendmail tests with real peers and real users: the agent's files in
// a directory every user may traverse, the built binary there (with
// links named sendmail and mailq), an upstream that demands AUTH, and the
// agent in this process, as root. The two unprivileged users are the
// system's nobody (65534) and daemon (1), which every Debian has.

// A local user the tests run commands as.
type localUser struct {
	name     string
	uid, gid int
}

var (
	userNobody = localUser{"nobody", 65534, 65534}
	userDaemon = localUser{"daemon", 1, 1}
)

type peerRig struct {
	t                           *testing.T
	base, cfg, bin, links, drop string
	up                          *upstream.Server
}

// allowDaemon lets daemon give senders at apps.example, as a PHP site's
// user would be allowed.
const allowDaemon = `
[[sendmail.allow]]
users = ["daemon"]
senders = ["@apps.example"]
`

func newPeerRig(t *testing.T, extra string) *peerRig {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to run commands as other users")
	}
	base, err := os.MkdirTemp("", "sealrelay-sendmail-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	r := &peerRig{t: t, base: base, bin: filepath.Join(base, "sealrelay"), links: filepath.Join(base, "bin"), drop: filepath.Join(base, "data", "maildrop")}
	for _, d := range []struct {
		path string
		mode os.FileMode
	}{{base, 0o755}, {filepath.Join(base, "data"), 0o711}, {r.links, 0o755}} {
		if err := os.MkdirAll(d.path, d.mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(d.path, d.mode); err != nil {
			t.Fatal(err)
		}
	}
	r.up = startUpstream(t, base, upstream.Config{Behavior: upstream.Behavior{RequireAuth: true}})
	rigFiles(t, base, rigUser, rigPass)
	r.cfg = rigConfig(t, base, r.up.Addr(), relayOpts{}, extra)
	if err := sandbox.CopyExecutable(builtBinary(t), r.bin); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"sendmail", "mailq"} {
		if err := os.Symlink(r.bin, filepath.Join(r.links, name)); err != nil {
			t.Fatal(err)
		}
	}
	return r
}

// as returns a command that runs as u, in the rig's directory, with a
// PATH that finds the sendmail link and SEALRELAY_CONFIG set.
func (r *peerRig) as(u localUser, name string, args ...string) *exec.Cmd {
	cmd := exec.Command("setpriv", append([]string{"--reuid=" + strconv.Itoa(u.uid), "--regid=" + strconv.Itoa(u.gid), "--clear-groups", "--", name}, args...)...)
	cmd.Dir = r.base
	cmd.Env = []string{"PATH=" + r.links + ":/usr/bin:/bin", "HOME=/nonexistent", "SEALRELAY_CONFIG=" + r.cfg, "LANG=C"}
	return cmd
}

// runAs runs a command as u with stdin, and returns its exit status and
// its output.
func (r *peerRig) runAs(u localUser, stdin string, name string, args ...string) (int, string) {
	r.t.Helper()
	cmd := r.as(u, name, args...)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode(), string(out)
	}
	if err != nil {
		r.t.Fatalf("%s %v: %v", name, args, err)
	}
	return 0, string(out)
}

// dropFiles lists the message files in the maildrop.
func (r *peerRig) dropFiles() []string {
	r.t.Helper()
	ents, err := os.ReadDir(r.drop)
	if err != nil {
		r.t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

// message finds the upstream's message with this Message-ID.
func (r *peerRig) message(id string) upstream.Message {
	r.t.Helper()
	for _, m := range r.up.Messages() {
		if m.MessageID == id {
			return m
		}
	}
	r.t.Fatalf("no message %s at the upstream", id)
	return upstream.Message{}
}

// checkArrived checks what the upstream got as id: on a session
// authenticated with the rig's credential, from sender to rcpts, with its
// Message-ID header and body unchanged.
func (r *peerRig) checkArrived(id, sender string, rcpts []string, body string) upstream.Message {
	r.t.Helper()
	m := r.message(id)
	if m.Username != rigUser || !m.TLS {
		r.t.Errorf("%s: came on a session as %q (TLS %v), want authenticated as %s", id, m.Username, m.TLS, rigUser)
	}
	if m.From != sender || !slices.Equal(m.To, rcpts) {
		r.t.Errorf("%s: envelope %q -> %q, want %q -> %q", id, m.From, m.To, sender, rcpts)
	}
	if !bytes.Contains(m.Data, []byte("\r\nMessage-ID: "+id+"\r\n")) || !bytes.HasSuffix(m.Data, []byte("\r\n\r\n"+body)) {
		r.t.Errorf("%s: Message-ID or body changed:\n%s", id, m.Data)
	}
	return m
}

// TestSendmailAgentDown: with the agent stopped, two unprivileged users
// submit 100 messages; neither can read, change or remove the other's;
// then the agent starts and delivers all 100, each once, from the
// sender the policy gives its user, on an authenticated session.
func TestSendmailAgentDown(t *testing.T) {
	r := newPeerRig(t, allowDaemon)
	startAgent(t, r.cfg).stop() // it makes the maildrop; now it is down

	const n = 100
	type sub struct {
		u      localUser
		id     string
		sender string
		body   string
	}
	subs := make([]sub, n)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 4)
	for i := range n {
		s := sub{u: userNobody, id: fmt.Sprintf("<down-%d@test>", i), sender: "nobody@agent.test", body: fmt.Sprintf("message %d\r\nsecond line\r\n", i)}
		args := []string{"sendmail", "-t", "-i"}
		if i%2 == 1 {
			s.u, s.sender = userDaemon, fmt.Sprintf("app-%d@apps.example", i)
			args = append(args, "-f", s.sender)
		}
		subs[i] = s
		msg := fmt.Sprintf("To: rcpt-%d@example.net\nSubject: while down\nMessage-ID: %s\n\n%s", i, s.id, strings.ReplaceAll(s.body, "\r\n", "\n"))
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			if code, out := r.runAs(s.u, msg, r.bin, args...); code != 0 {
				t.Errorf("submission %d as %s: exit %d: %s", i, s.u.name, code, out)
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}

	files := r.dropFiles()
	owners := map[int][]string{}
	for _, f := range files {
		fi, err := os.Lstat(filepath.Join(r.drop, f))
		if err != nil {
			t.Fatal(err)
		}
		st := fi.Sys().(*syscall.Stat_t)
		owners[int(st.Uid)] = append(owners[int(st.Uid)], f)
		if fi.Mode().Perm() != 0o640 || st.Gid != 0 || !strings.HasPrefix(f, "m.") {
			t.Errorf("%s: mode %o, group %d", f, fi.Mode().Perm(), st.Gid)
		}
	}
	if len(files) != n || len(owners[userNobody.uid]) != n/2 || len(owners[userDaemon.uid]) != n/2 {
		t.Fatalf("the maildrop holds %d files (%d of nobody, %d of daemon), want %d, half each", len(files), len(owners[userNobody.uid]), len(owners[userDaemon.uid]), n)
	}

	// Each user against the other's file.
	for _, c := range []struct {
		u     localUser
		other string
	}{{userDaemon, owners[userNobody.uid][0]}, {userNobody, owners[userDaemon.uid][0]}} {
		other := filepath.Join(r.drop, c.other)
		before := readTestFile(t, other)
		for _, try := range []struct {
			what string
			args []string
			want string
		}{
			{"read", []string{"cat", other}, "Permission denied"},
			{"append", []string{"sh", "-c", "echo x >> " + other}, "Permission denied"},
			{"truncate", []string{"truncate", "-s", "0", other}, "Permission denied"},
			{"remove", []string{"rm", "-f", other}, "Operation not permitted"},
			{"rename", []string{"mv", other, other + ".mine"}, "Operation not permitted"},
			{"list", []string{"ls", r.drop}, "Permission denied"},
		} {
			code, out := r.runAs(c.u, "", try.args[0], try.args[1:]...)
			if code == 0 || !strings.Contains(out, try.want) {
				t.Errorf("%s could %s the other user's file: exit %d: %s (want %q)", c.u.name, try.what, code, out, try.want)
			}
		}
		if readTestFile(t, other) != before {
			t.Errorf("%s changed the other user's file", c.u.name)
		}
	}
	// The same commands work on one's own file: the refusals above are
	// about ownership, not a maildrop closed to everyone.
	own := filepath.Join(r.drop, owners[userDaemon.uid][1])
	if code, out := r.runAs(userDaemon, "", "cat", own); code != 0 || !strings.Contains(out, "sealrelay-maildrop 1") {
		t.Errorf("daemon cannot read its own file: %d %s", code, out)
	}

	a := startAgent(t, r.cfg)
	if err := r.up.WaitMessages(n, 60*time.Second); err != nil {
		t.Fatalf("%v; maildrop: %v", err, r.dropFiles())
	}
	waitFor(t, 10*time.Second, "the maildrop to empty", func() bool { return len(r.dropFiles()) == 0 })
	for i, s := range subs {
		r.checkArrived(s.id, s.sender, []string{fmt.Sprintf("rcpt-%d@example.net", i)}, s.body)
	}
	if got := len(r.up.Messages()); got != n {
		t.Errorf("the upstream got %d messages, want %d (none lost, none twice)", got, n)
	}
	if st := a.Queue().Stats(); st.Failed != 0 || st.Bounced != 0 {
		t.Errorf("spool stats %+v", st)
	}
}

// TestSendmailPeers: the programs that call sendmail on a server deliver
// through sealrelay to an authenticated upstream, Message-ID and body
// unchanged: PHP's mail() with sendmail_path (as daemon, a web server's
// user), s-nail with mta= set to the sendmail link (as nobody), and
// `sendmail -t` from a shell script, as cron runs one (as nobody).
// sendmail opens no credential file (strace).
func TestSendmailPeers(t *testing.T) {
	r := newPeerRig(t, allowDaemon)
	startAgent(t, r.cfg)

	t.Run("php mail()", func(t *testing.T) {
		php, err := exec.LookPath("php")
		if err != nil {
			t.Fatal("php is not installed; run make deps (tools/deps.sh installs php-cli)")
		}
		// tee keeps what PHP hands to sendmail, to compare with what arrives.
		handed := filepath.Join(r.base, "php-handed")
		writeTestFile(t, handed, "")
		os.Chown(handed, userDaemon.uid, userDaemon.gid) //nolint:errcheck // checked by tee
		script := `exit(mail("php@example.net", "PHP subject", "line one\nline two\n", "From: Shop <app@apps.example>\r\nMessage-ID: <php-1@test>", "-fapp@apps.example") ? 0 : 1);`
		code, out := r.runAs(userDaemon, "", php, "-n", "-d", `sendmail_path="tee `+handed+" | "+r.bin+" sendmail -t -i -C "+r.cfg+`"`, "-r", script)
		if code != 0 {
			t.Fatalf("php: exit %d: %s", code, out)
		}
		waitFor(t, 20*time.Second, "PHP's message", func() bool { return hasMessage(r.up, "<php-1@test>") })
		// PHP ends header lines with CRLF and the body's with LF, and adds
		// a CRLF: the body it handed over, in CRLF lines, must arrive.
		crlf, err := canonical([]byte(readTestFile(t, handed)), false)
		if err != nil {
			t.Fatal(err)
		}
		_, body, ok := strings.Cut(string(crlf), "\r\n\r\n")
		if !ok || !strings.HasPrefix(body, "line one\r\nline two\r\n") {
			t.Fatalf("PHP handed over %q", readTestFile(t, handed))
		}
		m := r.checkArrived("<php-1@test>", "app@apps.example", []string{"php@example.net"}, body)
		if !bytes.Contains(m.Data, []byte("\r\nSubject: PHP subject\r\n")) {
			t.Errorf("PHP's Subject is missing:\n%s", m.Data)
		}
	})

	t.Run("s-nail", func(t *testing.T) {
		snail, err := exec.LookPath("s-nail")
		if err != nil {
			t.Fatal("s-nail is not installed; run make deps (tools/deps.sh installs it)")
		}
		tmpl := "To: snail@example.net\nSubject: from s-nail\nMessage-ID: <snail-1@test>\n\nbody from s-nail\nand more\n"
		code, out := r.runAs(userNobody, tmpl, snail, "-:", "/", "-S", "mta="+filepath.Join(r.links, "sendmail"), "-S", "sendwait", "-t")
		if code != 0 {
			t.Fatalf("s-nail: exit %d: %s", code, out)
		}
		waitFor(t, 20*time.Second, "s-nail's message", func() bool { return hasMessage(r.up, "<snail-1@test>") })
		r.checkArrived("<snail-1@test>", "nobody@agent.test", []string{"snail@example.net"}, "body from s-nail\r\nand more\r\n")
	})

	t.Run("sendmail -t from a script", func(t *testing.T) {
		script := `printf 'From: cron job <nobody@agent.test>\nTo: ops@example.net\nCc: Team <team@example.org>\nBcc: audit@example.com\nSubject: nightly\nMessage-ID: <cron-1@test>\n\nall done\n.\nnot the end with -i\n' | sendmail -t -i`
		code, out := r.runAs(userNobody, "", "sh", "-c", script)
		if code != 0 {
			t.Fatalf("exit %d: %s", code, out)
		}
		waitFor(t, 20*time.Second, "the script's message", func() bool { return hasMessage(r.up, "<cron-1@test>") })
		m := r.checkArrived("<cron-1@test>", "nobody@agent.test", []string{"ops@example.net", "team@example.org", "audit@example.com"}, "all done\r\n.\r\nnot the end with -i\r\n")
		if bytes.Contains(m.Data, []byte("Bcc:")) || bytes.Contains(m.Data, []byte("audit@")) {
			t.Errorf("the Bcc header went out:\n%s", m.Data)
		}
	})

	t.Run("no credential touched", func(t *testing.T) {
		strace, err := exec.LookPath("strace")
		if err != nil {
			t.Fatal("strace is not installed; run make deps (tools/deps.sh installs it)")
		}
		// strace runs as root and follows setpriv into sendmail as nobody.
		trace := filepath.Join(r.base, "trace")
		cmd := r.as(userNobody, r.bin, "sendmail", "traced@example.net")
		cmd.Args = append([]string{strace, "-f", "-qq", "-e", "trace=%file", "-o", trace}, cmd.Args...)
		cmd.Path = strace
		cmd.Stdin = strings.NewReader("Subject: traced\nMessage-ID: <strace-1@test>\n\nx\n")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		out := readTestFile(t, trace)
		if !strings.Contains(out, "sealrelay.toml") || !strings.Contains(out, "maildrop") {
			t.Fatalf("the trace does not show the config and the maildrop being opened:\n%s", out)
		}
		for _, f := range []string{"identity.txt", "credentials.age", "recipients.txt"} {
			if strings.Contains(out, f) {
				t.Errorf("sendmail touched %s:\n%s", f, out)
			}
		}
	})

	t.Run("mailq", func(t *testing.T) {
		cmd := exec.Command(filepath.Join(r.links, "mailq"), "-C", r.cfg)
		out, err := cmd.CombinedOutput()
		if err != nil || !(strings.Contains(string(out), "Mail queue is empty") || strings.Contains(string(out), "-Queue ID-")) {
			t.Errorf("mailq: %v\n%s", err, out)
		}
	})
}

func hasMessage(up *upstream.Server, id string) bool {
	for _, m := range up.Messages() {
		if m.MessageID == id {
			return true
		}
	}
	return false
}

// TestSendmailUserExitStatuses: the exit statuses a user meets that need
// another user, a full disk or a read-only one, with their messages.
func TestSendmailUserExitStatuses(t *testing.T) {
	r := newPeerRig(t, allowDaemon)
	startAgent(t, r.cfg).stop()
	msg := "To: x@example.net\nSubject: s\n\nbody\n"

	t.Run("77 sender not allowed", func(t *testing.T) {
		code, out := r.runAs(userNobody, msg, r.bin, "sendmail", "-t", "-f", "ceo@example.com")
		want := "sealrelay: user nobody may not send as \"ceo@example.com\"\n" +
			"sealrelay: hint: without -f the sender is nobody@agent.test; a [[sendmail.allow]] table in " + r.cfg + " can allow others\n"
		if code != 77 || out != want {
			t.Errorf("exit %d:\n%s\nwant 77:\n%s", code, out, want)
		}
		// daemon's rule allows @apps.example, not this.
		if code, out := r.runAs(userDaemon, msg, r.bin, "sendmail", "-t", "-f", "x@other.example"); code != 77 || !strings.Contains(out, `user daemon may not send as "x@other.example"`) {
			t.Errorf("daemon: exit %d: %s", code, out)
		}
	})
	t.Run("77 maildrop closed", func(t *testing.T) {
		data := filepath.Dir(r.drop)
		if err := os.Chmod(data, 0o700); err != nil {
			t.Fatal(err)
		}
		defer os.Chmod(data, 0o711) //nolint:errcheck // the rig's directory goes away
		code, out := r.runAs(userNobody, msg, r.bin, "sendmail", "-t")
		if code != 77 || !strings.Contains(out, "sealrelay: maildrop "+r.drop+": open: stat "+r.drop+": permission denied\n") ||
			!strings.Contains(out, "sealrelay: hint: local users need to reach "+r.drop+": its directory must be searchable by others (chmod o+x "+data+")") {
			t.Errorf("exit %d: %s", code, out)
		}
	})
	t.Run("77 mailq of a closed spool", func(t *testing.T) {
		code, out := r.runAs(userNobody, "", filepath.Join(r.links, "mailq"))
		spoolDir := filepath.Join(filepath.Dir(r.drop), "spool")
		if code != 77 || !strings.Contains(out, "sealrelay: ") || !strings.Contains(out, spoolDir+": permission denied") {
			t.Errorf("exit %d: %s", code, out)
		}
	})
	t.Run("67 no user name", func(t *testing.T) {
		code, out := r.runAs(localUser{"(none)", 424242, 424242}, msg, r.bin, "sendmail", "-t")
		if code != 67 || !strings.Contains(out, "sealrelay: uid 424242 has no user name: ") || !strings.Contains(out, "the agent could not tell whose mail this is") {
			t.Errorf("exit %d: %s", code, out)
		}
	})
	// A full and a read-only maildrop, in a mount namespace of their own.
	inNamespace := func(t *testing.T, setup string) (int, string) {
		t.Helper()
		script := setup + ` && exec "$0" sendmail -t -C "$1"`
		cmd := exec.Command("unshare", "-m", "sh", "-c", script, r.bin, r.cfg)
		cmd.Stdin = strings.NewReader("To: x@example.net\nSubject: big\n\n" + strings.Repeat("0123456789abcdef\n", 8192))
		out, err := cmd.CombinedOutput()
		if ee, ok := err.(*exec.ExitError); ok {
			return ee.ExitCode(), string(out)
		}
		if err != nil {
			t.Fatal(err)
		}
		return 0, string(out)
	}
	t.Run("75 disk full", func(t *testing.T) {
		code, out := inNamespace(t, "mount -t tmpfs -o size=64k,mode=3733 tmpfs "+r.drop)
		if code != 75 || !strings.Contains(out, "no space left on device") || !strings.Contains(out, "sealrelay: hint: the file system is full (or your quota is used up); try again later") {
			t.Errorf("exit %d: %s", code, out)
		}
	})
	t.Run("73 read-only", func(t *testing.T) {
		code, out := inNamespace(t, "mount --bind "+r.drop+" "+r.drop+" && mount -o remount,bind,ro "+r.drop)
		if code != 73 || !strings.Contains(out, "sealrelay: maildrop "+r.drop+": create: ") || !strings.Contains(out, "read-only file system") {
			t.Errorf("exit %d: %s", code, out)
		}
	})
	if files := r.dropFiles(); len(files) != 0 {
		t.Errorf("the maildrop holds %v after failed submissions", files)
	}
}

// TestSendmailSenderEnforcedByAgent: the agent applies its own policy to
// what it takes: a file whose -f sender the agent's config does not allow
// (submitted with a config of the user's own that did) goes out from the
// user's own address, and the agent says so in its log.
func TestSendmailSenderEnforcedByAgent(t *testing.T) {
	r := newPeerRig(t, "")
	own := filepath.Join(r.base, "own.toml")
	writeTestFile(t, own, "hostname = \"agent.test\"\ndata_dir = \"data\"\n[[sendmail.allow]]\nusers = [\"*\"]\nsenders = [\"*@example.com\"]\n")
	a := startAgent(t, r.cfg)
	code, out := r.runAs(userNobody, "To: x@example.net\nSubject: s\nMessage-ID: <forged-1@test>\n\nbody\n", r.bin, "sendmail", "-t", "-f", "ceo@example.com", "-C", own)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, out)
	}
	waitFor(t, 20*time.Second, "the message", func() bool { return hasMessage(r.up, "<forged-1@test>") })
	r.checkArrived("<forged-1@test>", "nobody@agent.test", []string{"x@example.net"}, "body\r\n")
	if !strings.Contains(a.logs.String(), `msg="maildrop: sender not allowed for this user; sending as the user's own address ([[sendmail.allow]] allows others)" component=maildrop uid=65534 user=nobody asked=ceo@example.com from=nobody@agent.test`) {
		t.Errorf("no log line for the refused sender:\n%s", a.logs.String())
	}
}
