//go:build linux

// Package deb tests the Debian packages that build.sh makes: it builds
// them, checks them with lintian, and installs, upgrades, removes and
// purges the sealrelay package on this machine with apt, running the
// packaged agent as its service user in between. It changes the machine
// (a package, a system user), so it runs only as root, one run at a time,
// and puts everything back when it ends. sealrelay-mta is only inspected:
// installing it would remove Postfix, which other tests use.
package deb

import (
	"bufio"
	"compress/gzip"
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/sealrelay/sealrelay/internal/testing/testlib"
	"github.com/sealrelay/sealrelay/internal/testing/upstream"
)

const (
	repoRoot = "../.."
	conf     = "/etc/sealrelay"
	state    = "/var/lib/sealrelay"
	// testMark, in /etc/sealrelay, says a run of this test made it (a run
	// that was killed leaves it behind for the next run to clean up).
	testMark = conf + "/.deb-test"
	// The versions the test builds; an installed version with "~test"
	// in it is a leftover of this test.
	v1, v2 = "0.0~test1", "0.0~test2"

	relayUser = "relay-account@upstream.test"
	relayPass = "deb-test-Pa55word-never-logged"
)

// TestDebianPackage: the packages build; lintian finds no error in them;
// sealrelay-mta provides the MTA (sendmail and mailq links, Provides,
// Conflicts and Replaces mail-transport-agent); and sealrelay installs
// with apt with its files, owners and modes, its service user and
// `sealrelay version`, the packaged agent relays mail as that user,
// an upgrade keeps the admin's files, config and queued mail, remove
// keeps /etc/sealrelay and /var/lib/sealrelay, purge removes the conffile
// but keeps the admin's files and a spool holding mail (saying why), and
// a purge with an empty spool removes /var/lib/sealrelay.
func TestDebianPackage(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("installs a package: runs as root only")
	}
	for _, tool := range []string{"dpkg-deb", "apt-get", "lintian", "dpkg-buildflags", "dpkg-shlibdeps", "gcc", "go", "adduser"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is not installed; run `make deps` (tools/deps.sh)", tool)
		}
	}
	lockMachine(t)
	createdUser := prepareMachine(t)
	t.Cleanup(func() { restoreMachine(t, createdUser) })

	dir1, dir2 := t.TempDir(), t.TempDir()
	run(t, "", filepath.Join(repoRoot, "dist/deb/build.sh"), "-v", v1, "-o", dir1)
	run(t, "", filepath.Join(repoRoot, "dist/deb/build.sh"), "-v", v2, "-o", dir2)
	pkg1 := filepath.Join(dir1, "sealrelay_"+v1+"_"+debArch(t)+".deb")
	pkg2 := filepath.Join(dir2, "sealrelay_"+v2+"_"+debArch(t)+".deb")
	mta := filepath.Join(dir1, "sealrelay-mta_"+v1+"_"+debArch(t)+".deb")

	t.Run("lintian", func(t *testing.T) { checkLintian(t, pkg1, mta) })
	t.Run("mta", func(t *testing.T) { checkMTA(t, mta) })
	t.Run("contents", func(t *testing.T) { checkContents(t, pkg1) })

	// Install, and run the agent as the package sets it up.
	apt(t, "install", pkg1)
	checkInstalled(t, v1)
	setUp(t)
	up := startUpstream(t, "", nil)
	editConfig(t, up)
	agent := startAgent(t)
	send(t, agent.addr, "sent@example.net")
	waitFor(t, "the relay to have the first message", func() bool { return len(up.Messages()) == 1 })
	if m := up.Messages()[0]; m.Username != relayUser || !m.TLS {
		t.Errorf("the relay got %+v, want it over TLS, authenticated as %s", m, relayUser)
	}
	up.SetBehavior(upstream.Behavior{Rules: []upstream.Rule{{Command: "RCPT", Reply: &smtp.SMTPError{
		Code: 451, EnhancedCode: smtp.EnhancedCode{4, 2, 0}, Message: "mailbox busy"}}}})
	send(t, agent.addr, "queued@example.net")
	waitFor(t, "the second message to be deferred", func() bool {
		return strings.Contains(agent.log.String(), "to=queued@example.net relay=primary status=deferred")
	})
	agent.stop(t)
	if strings.Contains(agent.log.String(), relayPass) {
		t.Error("the agent's log shows the relay password")
	}
	checkQueued(t, 1)

	// The admin's files, in both directories.
	writeFile(t, conf+"/local-note", "kept by the admin\n", 0o600)
	writeFile(t, state+"/local-note", "kept by the admin\n", 0o600)
	kept := snapshot(t, conf+"/identity.txt", conf+"/credentials.age", conf+"/recipients.txt", conf+"/local-note",
		conf+"/sealrelay.toml", state+"/local-note")

	// Upgrade: everything of the admin's stays, modes are the package's.
	out := apt(t, "install", pkg2)
	checkInstalled(t, v2)
	kept.check(t, "after the upgrade")
	checkQueued(t, 1)
	if strings.Contains(out, "sealrelay: installed, not enabled") {
		t.Errorf("the upgrade printed the first install's note:\n%s", out)
	}

	// Remove: the binary and the unit go, the config and the spool stay.
	apt(t, "remove", "sealrelay")
	for _, gone := range []string{"/usr/bin/sealrelay", "/lib/systemd/system/sealrelay.service"} {
		if _, err := os.Lstat(gone); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s after remove: %v, want it gone", gone, err)
		}
	}
	if st := dpkgStatus(t, "sealrelay"); !strings.HasPrefix(st, "deinstall ok config-files ") {
		t.Errorf("dpkg status after remove = %q, want config-files", st)
	}
	kept.check(t, "after remove")
	checkMode(t, conf, fs.ModeDir|0o750, "root", "sealrelay")
	checkMode(t, state, fs.ModeDir|0o700, "sealrelay", "sealrelay")

	// Purge with mail in the spool: the conffile goes, the rest stays.
	out = apt(t, "purge", "sealrelay")
	for _, want := range []string{
		"sealrelay: /var/lib/sealrelay kept: its spool holds mail that was not delivered",
		"sealrelay: /etc/sealrelay kept: it holds files the package did not install",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("purge did not say %q:\n%s", want, out)
		}
	}
	if st := dpkgStatus(t, "sealrelay"); st != "" && !strings.Contains(st, "not-installed") {
		t.Errorf("dpkg status after purge = %q, want not installed", st)
	}
	if _, err := os.Stat(conf + "/sealrelay.toml"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the conffile after purge: %v, want it gone", err)
	}
	delete(kept, conf+"/sealrelay.toml")
	kept.check(t, "after purge")
	if _, err := user.Lookup("sealrelay"); err != nil {
		t.Errorf("the sealrelay user after purge: %v, want it kept", err)
	}

	// Install again: the queued message goes, and a purge with an empty
	// spool removes the state directory.
	apt(t, "install", pkg2)
	checkInstalled(t, v2)
	up.SetBehavior(upstream.Behavior{})
	editConfig(t, up)
	agent = startAgent(t)
	waitFor(t, "the queued message at the relay", func() bool { return len(up.Messages()) == 2 })
	agent.stop(t)
	checkQueued(t, 0)
	out = apt(t, "purge", "sealrelay")
	if _, err := os.Stat(state); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("%s after a purge with an empty spool: %v, want it gone\n%s", state, err, out)
	}
	if strings.Contains(out, "/var/lib/sealrelay kept") {
		t.Errorf("purge with an empty spool kept the spool:\n%s", out)
	}
	if _, err := os.Stat(conf + "/identity.txt"); err != nil {
		t.Errorf("the identity after the second purge: %v, want it kept", err)
	}
}

// lockMachine makes runs of this test on one machine (from several
// checkouts, say) wait for each other.
func lockMachine(t *testing.T) {
	t.Helper()
	dir := "/run/lock"
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		dir = "/tmp" // a container without /run/lock
	}
	f, err := os.OpenFile(filepath.Join(dir, "sealrelay-deb-test.lock"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
}

// prepareMachine refuses to touch a sealrelay this test did not install,
// cleans up what a killed run left, and reports whether the sealrelay user
// is the test's to delete at the end.
func prepareMachine(t *testing.T) (createdUser bool) {
	t.Helper()
	_, markErr := os.Stat(testMark)
	leftover := markErr == nil
	for _, pkg := range []string{"sealrelay-mta", "sealrelay"} {
		st := dpkgStatus(t, pkg)
		if st == "" || strings.Contains(st, "not-installed") {
			continue
		}
		if !strings.Contains(st, "~test") {
			t.Skipf("%s is on this machine (%s), not from this test: not touching it", pkg, st)
		}
		leftover = true
	}
	if !leftover {
		for _, d := range []string{conf, state} {
			if _, err := os.Stat(d); err == nil {
				t.Skipf("%s exists and this test did not make it: not touching it", d)
			}
		}
	}
	if leftover {
		t.Log("cleaning up after an earlier run of this test")
		purgeAll(t)
	}
	_, err := user.Lookup("sealrelay")
	return leftover || err != nil
}

// purgeAll purges both packages and removes their directories.
func purgeAll(t *testing.T) {
	t.Helper()
	cmd := exec.Command("dpkg", "--purge", "sealrelay-mta", "sealrelay")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Logf("dpkg --purge: %v\n%s", err, out)
	}
	for _, d := range []string{conf, state} {
		if err := os.RemoveAll(d); err != nil {
			t.Error(err)
		}
	}
}

// restoreMachine leaves the machine as the test found it.
func restoreMachine(t *testing.T, createdUser bool) {
	purgeAll(t)
	if !createdUser {
		return
	}
	for _, c := range [][]string{{"userdel", "sealrelay"}, {"groupdel", "sealrelay"}} {
		if out, err := exec.Command(c[0], c[1:]...).CombinedOutput(); err != nil && !strings.Contains(string(out), "does not exist") {
			t.Errorf("%s: %v: %s", strings.Join(c, " "), err, out)
		}
	}
}

// run runs a command and returns its standard output, failing the test
// on error.
func run(t *testing.T, stdin string, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Stdin = strings.NewReader(stdin)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s%s", name, strings.Join(args, " "), err, out, stderr.String())
	}
	return string(out)
}

// apt runs apt-get VERB on a package file (a path ending in .deb) or
// name, without questions, and returns what it printed.
func apt(t *testing.T, verb, what string) string {
	t.Helper()
	args := []string{verb, "-y", "-q", "--no-install-recommends", "-o", "Dpkg::Lock::Timeout=300",
		// apt would read the file as its _apt user; the test's directory is root's.
		"-o", "APT::Sandbox::User=root"}
	dir := ""
	if strings.HasSuffix(what, ".deb") {
		dir, what = filepath.Dir(what), "./"+filepath.Base(what)
	}
	cmd := exec.Command("apt-get", append(args, what)...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("apt-get %s %s: %v\n%s", verb, what, err, out)
	}
	return string(out)
}

// dpkgStatus returns "STATUS VERSION" of pkg, or "" if dpkg has never
// heard of it.
func dpkgStatus(t *testing.T, pkg string) string {
	t.Helper()
	out, err := exec.Command("dpkg-query", "-W", "-f", "${Status} ${Version}", pkg).Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(out))
}

// debArch is the machine's Debian architecture.
func debArch(t *testing.T) string {
	t.Helper()
	return strings.TrimSpace(run(t, "", "dpkg", "--print-architecture"))
}

// checkLintian: no error; the rest is logged.
func checkLintian(t *testing.T, debs ...string) {
	cmd := exec.Command("lintian", append([]string{"-I", "--tag-display-limit", "0", "--fail-on", "error"}, debs...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Errorf("lintian: %v", err)
	}
	var errs []string
	for l := range strings.Lines(string(out)) {
		switch {
		case strings.HasPrefix(l, "E: "):
			errs = append(errs, strings.TrimSpace(l))
		case strings.HasPrefix(l, "W: "), strings.HasPrefix(l, "I: "):
			t.Logf("lintian: %s", strings.TrimSpace(l))
		}
	}
	if len(errs) > 0 {
		t.Errorf("lintian errors:\n%s", strings.Join(errs, "\n"))
	}
}

// checkMTA: sealrelay-mta's fields and links.
func checkMTA(t *testing.T, deb string) {
	for field, want := range map[string]string{
		"Package":   "sealrelay-mta",
		"Depends":   "sealrelay (= " + v1 + ")",
		"Provides":  "mail-transport-agent",
		"Conflicts": "mail-transport-agent",
		"Replaces":  "mail-transport-agent",
	} {
		if got := strings.TrimSpace(run(t, "", "dpkg-deb", "-f", deb, field)); got != want {
			t.Errorf("sealrelay-mta %s = %q, want %q", field, got, want)
		}
	}
	listing := run(t, "", "dpkg-deb", "-c", deb)
	for _, want := range []string{
		"./usr/sbin/sendmail -> ../bin/sealrelay",
		"./usr/lib/sendmail -> ../sbin/sendmail",
		"./usr/bin/mailq -> sealrelay",
		"./usr/share/man/man8/sendmail.8.gz -> ",
		"./usr/share/man/man1/mailq.1.gz -> ../man8/",
		"./usr/share/doc/sealrelay-mta/copyright",
	} {
		if !strings.Contains(listing, want) {
			t.Errorf("sealrelay-mta lacks %q:\n%s", want, listing)
		}
	}
}

// checkContents: the files of sealrelay, with their modes, in the package.
func checkContents(t *testing.T, deb string) {
	listing := run(t, "", "dpkg-deb", "-c", deb)
	for _, want := range []string{
		"-rwxr-xr-x root/root .* ./usr/bin/sealrelay\n",
		"-rw-r--r-- root/root .* ./lib/systemd/system/sealrelay.service\n",
		"-rw-r--r-- root/root .* ./etc/sealrelay/sealrelay.toml\n",
		"-rw-r--r-- root/root .* ./usr/share/man/man8/sealrelay.8.gz\n",
		"-rw-r--r-- root/root .* ./usr/share/man/man5/sealrelay.toml.5.gz\n",
		"-rw-r--r-- root/root .* ./usr/share/doc/sealrelay/copyright\n",
		"-rw-r--r-- root/root .* ./usr/share/doc/sealrelay/changelog.gz\n",
		"-rw-r--r-- root/root .* ./usr/share/doc/sealrelay/examples/credential.conf\n",
		"-rwxr-xr-x root/root .* ./usr/share/doc/sealrelay/examples/rotate/dovecot-passwd-file\n",
		"-rw-r--r-- root/root .* ./usr/share/doc/sealrelay/examples/systemd/sealrelay-rotate@.timer\n",
	} {
		if !regexp.MustCompile(want).MatchString(listing) {
			t.Errorf("sealrelay's files lack %q:\n%s", want, listing)
		}
	}
	if strings.Contains(listing, "./var/lib/sealrelay") {
		t.Errorf("the package holds the state directory, which remove would then touch:\n%s", listing)
	}
	info := run(t, "", "dpkg-deb", "-I", deb, "conffiles")
	if info != "/etc/sealrelay/sealrelay.toml\n" {
		t.Errorf("conffiles = %q", info)
	}
}

// checkInstalled: the installed package's version, files, owners, modes,
// user, and what its files hold.
func checkInstalled(t *testing.T, version string) {
	t.Helper()
	if st := dpkgStatus(t, "sealrelay"); st != "install ok installed "+version {
		t.Fatalf("dpkg status = %q, want installed %s", st, version)
	}
	if out := run(t, "", "/usr/bin/sealrelay", "version"); out != "sealrelay "+version+"\n" {
		t.Errorf("sealrelay version = %q, want %s", out, version)
	}
	checkMode(t, "/usr/bin/sealrelay", 0o755, "root", "root")
	checkMode(t, "/lib/systemd/system/sealrelay.service", 0o644, "root", "root")
	checkMode(t, conf, fs.ModeDir|0o750, "root", "sealrelay")
	checkMode(t, conf+"/sealrelay.toml", 0o640, "root", "sealrelay")
	checkMode(t, state, fs.ModeDir|0o700, "sealrelay", "sealrelay")
	sameFile(t, "/lib/systemd/system/sealrelay.service", filepath.Join(repoRoot, "dist/systemd/sealrelay.service"))
	sameGzip(t, "/usr/share/man/man8/sealrelay.8.gz", filepath.Join(repoRoot, "dist/man/sealrelay.8"))
	sameGzip(t, "/usr/share/man/man5/sealrelay.toml.5.gz", filepath.Join(repoRoot, "dist/man/sealrelay.toml.5"))
	sameFile(t, "/usr/share/doc/sealrelay/examples/credential.conf",
		filepath.Join(repoRoot, "dist/systemd/sealrelay-credential.service.d/credential.conf"))

	u, err := user.Lookup("sealrelay")
	if err != nil {
		t.Fatalf("the service user: %v", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	if uid == 0 || uid >= 1000 || u.HomeDir != state {
		t.Errorf("the service user = %+v, want a system user with home %s", u, state)
	}
	if g, err := user.LookupGroupId(u.Gid); err != nil || g.Name != "sealrelay" {
		t.Errorf("the service user's group = %v, %v; want sealrelay", g, err)
	}
	if out := run(t, "", "getent", "passwd", "sealrelay"); !strings.HasSuffix(strings.TrimSpace(out), ":/usr/sbin/nologin") {
		t.Errorf("the service user's shell: %s, want nologin", out)
	}
	if out := run(t, "", "dpkg-query", "-W", "-f", "${Conffiles}", "sealrelay"); !strings.Contains(out, " /etc/sealrelay/sealrelay.toml ") {
		t.Errorf("conffiles = %q", out)
	}
}

// checkMode checks a path's type and permissions, owner and group.
func checkMode(t *testing.T, path string, mode fs.FileMode, owner, group string) {
	t.Helper()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Error(err)
		return
	}
	st := fi.Sys().(*syscall.Stat_t)
	u, _ := user.LookupId(strconv.Itoa(int(st.Uid)))
	g, _ := user.LookupGroupId(strconv.Itoa(int(st.Gid)))
	var un, gn string
	if u != nil {
		un = u.Username
	}
	if g != nil {
		gn = g.Name
	}
	if fi.Mode() != mode || un != owner || gn != group {
		t.Errorf("%s: %v %s:%s, want %v %s:%s", path, fi.Mode(), un, gn, mode, owner, group)
	}
}

func sameFile(t *testing.T, got, want string) {
	t.Helper()
	a, err1 := os.ReadFile(got)
	b, err2 := os.ReadFile(want)
	if err1 != nil || err2 != nil || string(a) != string(b) {
		t.Errorf("%s differs from %s (%v, %v)", got, want, err1, err2)
	}
}

func sameGzip(t *testing.T, got, want string) {
	t.Helper()
	f, err := os.Open(got)
	if err != nil {
		t.Error(err)
		return
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Errorf("%s: %v", got, err)
		return
	}
	a, err := io.ReadAll(zr)
	b, _ := os.ReadFile(want)
	if err != nil || string(a) != string(b) {
		t.Errorf("%s does not hold %s (%v)", got, want, err)
	}
}

func writeFile(t *testing.T, path, data string, mode fs.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), mode); err != nil {
		t.Fatal(err)
	}
}

// files are the contents of some files, to check that they stay.
type files map[string]string

func snapshot(t *testing.T, paths ...string) files {
	t.Helper()
	f := files{}
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		f[p] = string(b)
	}
	return f
}

func (f files) check(t *testing.T, when string) {
	t.Helper()
	for p, want := range f {
		b, err := os.ReadFile(p)
		if err != nil || string(b) != want {
			t.Errorf("%s %s: %v, or its content changed", p, when, err)
		}
	}
}

// setUp does what the admin does after the install: a key for this
// server (owned by the service user), the recipient list, the sealed
// relay password, the relay's CA.
func setUp(t *testing.T) {
	t.Helper()
	writeFile(t, testMark, "made by dist/deb's TestDebianPackage\n", 0o600)
	out := run(t, "", "/usr/bin/sealrelay", "keygen", "-o", conf+"/identity.txt")
	pub := strings.TrimSpace(out)
	run(t, "", "chown", "sealrelay:", conf+"/identity.txt")
	writeFile(t, conf+"/recipients.txt", "# this server\n"+pub+"\n", 0o644)
	run(t, relayPass+"\n", "/usr/bin/sealrelay", "creds", "set", "primary", "-f", conf+"/credentials.age",
		"-R", conf+"/recipients.txt", "--username", relayUser, "--password-stdin")
	run(t, "", "chown", "root:sealrelay", conf+"/credentials.age")
	run(t, "", "chmod", "0640", conf+"/credentials.age")
}

// startUpstream starts the relay host, with the CA a previous one used if
// given, and writes its CA where the agent can read it.
func startUpstream(t *testing.T, addr string, ca *upstream.CA) *upstream.Server {
	t.Helper()
	up, err := upstream.Start(upstream.Config{Addr: addr, CA: ca, Accounts: map[string]string{relayUser: relayPass}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { up.Close() })
	return up
}

// editConfig points the installed example config at the test's relay, as
// the admin edits it, and makes retries quick.
func editConfig(t *testing.T, up *upstream.Server) {
	t.Helper()
	if err := up.WriteCA(conf + "/upstream-ca.pem"); err != nil {
		t.Fatal(err)
	}
	run(t, "", "chown", "root:sealrelay", conf+"/upstream-ca.pem")
	run(t, "", "chmod", "0640", conf+"/upstream-ca.pem")
	path := conf + "/sealrelay.toml"
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	for _, e := range []struct{ table, key, value string }{
		{"[listen]", "address", `"127.0.0.1:0"`},
		{"[[relay]]", "address", strconv.Quote(up.Addr())},
		{"[[relay]]", "ca_file", `"/etc/sealrelay/upstream-ca.pem"`},
		{"[[relay]]", "server_name", `"localhost"`},
		{"[queue]", "min_backoff", `"1s"`},
		{"[queue]", "max_backoff", `"2s"`},
	} {
		s = setKey(t, s, e.table, e.key, e.value)
	}
	// Written in place, as an editor does: the owner and mode stay.
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(s); err != nil {
		t.Fatal(err)
	}
	f.Close()
}

// setKey sets key's value in table (the first such line after the
// table's header), keeping its comment.
func setKey(t *testing.T, s, table, key, value string) string {
	t.Helper()
	start := strings.Index(s, "\n"+table)
	if start < 0 {
		t.Fatalf("the config has no %s", table)
	}
	re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(key) + ` = ("[^"]*"|\S+)`)
	loc := re.FindStringIndex(s[start:])
	if loc == nil {
		t.Fatalf("the config has no %s in %s", key, table)
	}
	return s[:start+loc[0]] + key + " = " + value + s[start+loc[1]:]
}

// agentProcess is the packaged agent, run as its service user.
type agentProcess struct {
	cmd  *exec.Cmd
	log  *testlib.LogBuf
	addr string
	done chan struct{}
}

// startAgent runs `sealrelay serve` as the unit does (its user, group and
// config), without systemd, and waits until it listens.
func startAgent(t *testing.T) *agentProcess {
	t.Helper()
	u, err := user.Lookup("sealrelay")
	if err != nil {
		t.Fatal(err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	a := &agentProcess{log: &testlib.LogBuf{}, done: make(chan struct{})}
	a.cmd = exec.Command("/usr/bin/sealrelay", "serve", "-c", conf+"/sealrelay.toml")
	a.cmd.Env = []string{"PATH=/usr/bin:/bin"}
	a.cmd.Dir = "/"
	a.cmd.Stderr = a.log
	a.cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}}
	if err := a.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { a.cmd.Wait(); close(a.done) }() //nolint:errcheck // the exit status is read in stop
	t.Cleanup(func() {
		a.cmd.Process.Kill()
		<-a.done
		if t.Failed() {
			t.Logf("agent log:\n%s", a.log.String())
		}
	})
	re := regexp.MustCompile(`msg=listening address=(\S+)`)
	waitFor(t, "the agent to listen", func() bool {
		select {
		case <-a.done:
			t.Fatalf("the agent exited: %v\n%s", a.cmd.ProcessState, a.log.String())
		default:
		}
		if m := re.FindStringSubmatch(a.log.String()); m != nil {
			a.addr = m[1]
			return true
		}
		return false
	})
	return a
}

// stop sends SIGTERM and waits for the agent to drain and exit 0.
func (a *agentProcess) stop(t *testing.T) {
	t.Helper()
	a.cmd.Process.Signal(syscall.SIGTERM) //nolint:errcheck // it may have exited; Wait says
	select {
	case <-a.done:
	case <-time.After(60 * time.Second):
		t.Fatalf("the agent did not stop after SIGTERM:\n%s", a.log.String())
	}
	if code := a.cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("the agent exited %d after SIGTERM:\n%s", code, a.log.String())
	}
}

// send submits one message to addr for rcpt.
func send(t *testing.T, addr, rcpt string) {
	t.Helper()
	c, err := smtp.Dial(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	msg := "From: app@client.test\r\nTo: " + rcpt + "\r\nSubject: deb test\r\nMessage-ID: <" + rcpt + ">\r\n\r\nHello.\r\n"
	if err := c.SendMail("app@client.test", []string{rcpt}, strings.NewReader(msg)); err != nil {
		t.Fatalf("sending to %s: %v", rcpt, err)
	}
	c.Quit() //nolint:errcheck // the message is taken
}

// checkQueued: `sealrelay queue list`, as root, shows n messages.
func checkQueued(t *testing.T, n int) {
	t.Helper()
	out := run(t, "", "/usr/bin/sealrelay", "queue", "list", "-c", conf+"/sealrelay.toml")
	if n == 0 {
		if out != "Mail queue is empty\n" {
			t.Errorf("queue list = %q, want empty", out)
		}
		return
	}
	got := 0
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		if regexp.MustCompile(`^[0-9a-f]{24}!? `).MatchString(sc.Text()) {
			got++
		}
	}
	if got != n {
		t.Errorf("queue list shows %d messages, want %d:\n%s", got, n, out)
	}
}

// waitFor polls cond for up to 30 seconds (a bound on a hang, not a
// timing assertion).
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("gave up waiting for %s", what)
		case <-time.After(20 * time.Millisecond):
		}
	}
}
