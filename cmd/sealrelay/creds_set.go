package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/term"

	"github.com/sealrelay/sealrelay/keys"
	"github.com/sealrelay/sealrelay/secrets"
)

// maxSecret caps what a secret read from standard input or a file may be.
const maxSecret = 64 << 10

// maxCertificate caps a certificate chain file.
const maxCertificate = 1 << 20

// setFlags are the flags only creds set takes: the kind, its non-secret
// values, and where its secrets come from. No flag takes a secret value.
type setFlags struct {
	kind   *string
	oauth2 *bool
	// values are the flags of the non-secret keys, by key.
	values map[string]*string
	scopes *listFlag
	// Where secrets come from.
	passwordStdin, secretStdin, refreshTokenStdin *bool
	secretFile, privateKeyFile, refreshTokenFile  *string
}

// listFlag is a flag that may be given several times.
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, " ") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

// valueFlags names the flags of the non-secret keys: flag, key, the
// argument's name in help, and what it is.
var valueFlags = []struct{ flag, key, arg, usage string }{
	{"username", secrets.KeyUsername, "U", "the relay account's user name `U` (password and oauth2: the mailbox XOAUTH2 names)"},
	{"provider", secrets.KeyProvider, "NAME", "oauth2: the provider `NAME`, microsoft365 or google, whose token endpoint and scope are known"},
	{"tenant", secrets.KeyTenant, "TENANT", "oauth2: the Entra ID `TENANT` id or domain (provider microsoft365)"},
	{"token-url", secrets.KeyTokenURL, "URL", "oauth2: the token endpoint `URL` (without a provider)"},
	{"client-id", secrets.KeyClientID, "ID", "oauth2: the client `ID`"},
	{"auth-method", secrets.KeyAuthMethod, "METHOD", "oauth2: the `METHOD` that sends the client secret: client_secret_post (default) or client_secret_basic"},
	{"key-id", secrets.KeyKeyID, "KID", "oauth2: the `KID` to name the private key by in assertions"},
	{"certificate", secrets.KeyCertificate, "FILE", "certificate, oauth2: the certificate chain `FILE` (PEM, leaf first; not secret)"},
	{"access-key-id", secrets.KeyAccessKeyID, "ID", "ses: the IAM access key `ID`, also the SMTP username"},
	{"region", secrets.KeyRegion, "REGION", "ses: the AWS `REGION` of the SES endpoint"},
}

// credsSetFlags defines the flags only creds set takes.
func credsSetFlags(flags *flag.FlagSet) *setFlags {
	sf := &setFlags{values: map[string]*string{}, scopes: &listFlag{}}
	sf.kind = flags.String("kind", "", "the entry's `KIND`: password (default), oauth2, certificate or ses")
	sf.oauth2 = flags.Bool("oauth2", false, "short for --kind oauth2")
	for _, v := range valueFlags {
		sf.values[v.key] = flags.String(v.flag, "", v.usage)
	}
	flags.Var(sf.scopes, "scope", "oauth2: a `SCOPE` to ask for (repeat for more; default: the provider's)")
	sf.passwordStdin = flags.Bool("password-stdin", false, "read the password from standard input")
	sf.secretStdin = flags.Bool("secret-stdin", false, "read the kind's secret (password, client secret, private key, secret access key) from standard input")
	sf.secretFile = flags.String("secret-file", "", "read the kind's secret from `FILE` (mode 0600 or stricter)")
	sf.privateKeyFile = flags.String("private-key-file", "", "certificate, oauth2 (private_key_jwt): read the private key (PEM) from `FILE` (mode 0600 or stricter)")
	sf.refreshTokenStdin = flags.Bool("refresh-token-stdin", false, "oauth2: read a refresh token from standard input (the delegated form)")
	sf.refreshTokenFile = flags.String("refresh-token-file", "", "oauth2: read a refresh token from `FILE` (mode 0600 or stricter)")
	return sf
}

// setRequest is what creds set will write, before its secrets are read.
type setRequest struct {
	name    string
	kind    secrets.Kind
	data    map[string]any // the non-secret keys and the new generation
	secrets []secretInput
}

// secretInput says where one secret key comes from: standard input, a
// file, or (neither) a prompt.
type secretInput struct {
	key   string
	label string // "client secret"
	stdin bool
	file  string
}

// secretLabel names each secret key in messages.
var secretLabel = map[string]string{
	secrets.KeyPassword:        "password",
	secrets.KeyClientSecret:    "client secret",
	secrets.KeyPrivateKey:      "private key",
	secrets.KeyRefreshToken:    "refresh token",
	secrets.KeySecretAccessKey: "secret access key",
}

// mainSecret is the secret --secret-stdin and --secret-file give, by kind.
var mainSecret = map[secrets.Kind]string{
	secrets.KindPassword:    secrets.KeyPassword,
	secrets.KindOAuth2:      secrets.KeyClientSecret,
	secrets.KindCertificate: secrets.KeyPrivateKey,
	secrets.KindSES:         secrets.KeySecretAccessKey,
}

// request checks the flags given against the kind's schema, reads the
// certificate file, and plans where each secret comes from. Nothing
// secret is read yet: a missing value is found before a secret is asked
// for.
func (sf *setFlags) request(flags *flag.FlagSet, name string) (*setRequest, error) {
	kind, err := secrets.ParseKind(*sf.kind)
	if err != nil {
		return nil, usagef("--kind must be password, oauth2, certificate or ses")
	}
	if *sf.oauth2 {
		if *sf.kind != "" && kind != secrets.KindOAuth2 {
			return nil, usagef("--oauth2 is --kind oauth2, not --kind %s", kind)
		}
		kind = secrets.KindOAuth2
	}
	given := map[string]bool{}
	flags.Visit(func(f *flag.Flag) { given[f.Name] = true })
	r := &setRequest{name: name, kind: kind, data: map[string]any{secrets.KeyKind: string(kind)}}
	if err := r.takeValues(sf, given); err != nil {
		return nil, err
	}
	if err := r.planSecrets(sf, given); err != nil {
		return nil, err
	}
	// The schema's checks that need no secret, with the secrets to come
	// standing in for themselves.
	check := make(map[string]any, len(r.data)+len(r.secrets))
	for k, v := range r.data {
		check[k] = v
	}
	for _, s := range r.secrets {
		check[s.key] = "(read later)"
	}
	if _, err := secrets.ParsePublic(name, check); err != nil {
		return nil, r.missing(err)
	}
	r.data[secrets.KeyGeneration] = secrets.NewGeneration()
	return r, nil
}

// takeValues puts the non-secret flags into r.data, refusing those the
// kind does not take.
func (r *setRequest) takeValues(sf *setFlags, given map[string]bool) error {
	for _, v := range valueFlags {
		if !given[v.flag] {
			continue
		}
		if !r.kind.Takes(v.key) {
			why := ""
			switch {
			case v.key == secrets.KeyUsername && r.kind == secrets.KindCertificate:
				why = " (its identity is the certificate)"
			case v.key == secrets.KeyUsername && r.kind == secrets.KindSES:
				why = " (its username is the access key id: give --access-key-id)"
			}
			return usagef("--%s is not for kind %s%s", v.flag, r.kind, why)
		}
		val := *sf.values[v.key]
		if v.key == secrets.KeyCertificate {
			pem, err := readCertificate(val)
			if err != nil {
				return err
			}
			val = pem
		}
		r.data[v.key] = val
	}
	if len(*sf.scopes) > 0 {
		if !r.kind.Takes(secrets.KeyScopes) {
			return usagef("--scope is not for kind %s", r.kind)
		}
		r.data[secrets.KeyScopes] = []string(*sf.scopes)
	}
	return nil
}

// planSecrets decides where each secret comes from.
func (r *setRequest) planSecrets(sf *setFlags, given map[string]bool) error {
	for _, f := range []struct {
		flag string
		ok   bool
	}{
		{"password-stdin", r.kind == secrets.KindPassword},
		{"private-key-file", r.kind == secrets.KindCertificate || r.kind == secrets.KindOAuth2},
		{"refresh-token-stdin", r.kind == secrets.KindOAuth2},
		{"refresh-token-file", r.kind == secrets.KindOAuth2},
	} {
		if given[f.flag] && !f.ok {
			return usagef("--%s is not for kind %s (its secret comes with --secret-stdin or --secret-file FILE)", f.flag, r.kind)
		}
	}
	stdins := 0
	for _, b := range []*bool{sf.passwordStdin, sf.secretStdin, sf.refreshTokenStdin} {
		if *b {
			stdins++
		}
	}
	switch {
	case stdins > 1 && *sf.refreshTokenStdin:
		return usagef("only one secret can come from standard input: give the other with a file (--secret-file, --refresh-token-file)")
	case given["refresh-token-stdin"] && given["refresh-token-file"]:
		return usagef("give the refresh token once: --refresh-token-stdin or --refresh-token-file")
	}
	main := mainSecret[r.kind]
	mainIn := secretInput{key: main, label: secretLabel[main], stdin: *sf.passwordStdin || *sf.secretStdin, file: *sf.secretFile}
	if r.kind == secrets.KindCertificate && *sf.privateKeyFile != "" {
		if mainIn.stdin || mainIn.file != "" {
			return usagef("give the private key once: --private-key-file, --secret-file or --secret-stdin")
		}
		mainIn.file = *sf.privateKeyFile
	}
	if mainIn.stdin && mainIn.file != "" {
		return usagef("give the %s once: --secret-stdin or --secret-file", mainIn.label)
	}
	if r.kind == secrets.KindOAuth2 {
		key := *sf.privateKeyFile != ""
		refresh := *sf.refreshTokenStdin || *sf.refreshTokenFile != ""
		if key {
			r.secrets = append(r.secrets, secretInput{key: secrets.KeyPrivateKey, label: "private key", file: *sf.privateKeyFile})
		}
		if refresh {
			r.secrets = append(r.secrets, secretInput{key: secrets.KeyRefreshToken, label: "refresh token",
				stdin: *sf.refreshTokenStdin, file: *sf.refreshTokenFile})
		}
		// With a key or a refresh token, the client secret is read
		// only when a flag says where from.
		if (key || refresh) && !mainIn.stdin && mainIn.file == "" {
			return nil
		}
	}
	r.secrets = append(r.secrets, mainIn)
	return nil
}

// flagFor returns the flag that sets key, as help shows it.
func flagFor(key string) string {
	for _, v := range valueFlags {
		if v.key == key {
			return "--" + v.flag + " " + v.arg
		}
	}
	if key == secrets.KeyScopes {
		return "--scope SCOPE"
	}
	return ""
}

// missing turns the schema's missing key into a usage error naming the
// flag that gives it; other errors pass.
func (r *setRequest) missing(err error) error {
	var ee *secrets.EntryError
	if !errors.As(err, &ee) || !errors.Is(err, secrets.ErrMissingKey) {
		return err
	}
	lead := "creds set"
	if r.kind != secrets.KindPassword {
		lead += " --kind " + string(r.kind)
	}
	why := ""
	if ee.Why != "" {
		why = " (" + ee.Why + ")"
	}
	if f := flagFor(ee.Key); f != "" {
		return usagef("%s needs %s%s", lead, f, why)
	}
	// A secret that only flags would have asked for.
	return usagef("%s needs the %s%s: give it with --secret-stdin or --secret-file FILE", lead, secretLabel[ee.Key], why)
}

// readCertificate reads a certificate chain file: not secret, but capped.
func readCertificate(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("reading the certificate: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxCertificate+1))
	if err != nil {
		return "", fmt.Errorf("reading the certificate %s: %w", path, err)
	}
	if len(b) > maxCertificate {
		return "", fmt.Errorf("the certificate %s is larger than %d bytes", path, maxCertificate)
	}
	return string(b), nil
}

// build reads the secrets and makes the credential, checked by the
// schema. Its errors never quote a secret.
func (r *setRequest) build(e *env) (secrets.Credential, error) {
	data := make(map[string]any, len(r.data)+len(r.secrets))
	for k, v := range r.data {
		data[k] = v
	}
	for _, s := range r.secrets {
		v, err := s.read(e, r.name)
		if err != nil {
			return secrets.Credential{}, err
		}
		data[s.key] = v
	}
	c, err := secrets.ParseEntry(r.name, data)
	if err != nil {
		return secrets.Credential{}, fmt.Errorf("%w; nothing was written", err)
	}
	warn(e, c)
	return c, nil
}

// read reads one secret from where s says. PEM keeps its line breaks;
// a single-line secret loses one trailing newline (or CRLF).
func (s secretInput) read(e *env, entry string) (string, error) {
	multiline := secrets.IsMultilineKey(s.key)
	var b []byte
	var err error
	switch {
	case s.stdin:
		b, err = readCapped(e.stdin, "standard input", s.label)
	case s.file != "":
		b, err = readSecretFile(s.file, s.label)
	case multiline:
		return "", usagef("the %s is PEM text, which is not typed at a prompt: give it with --private-key-file FILE or --secret-stdin", s.label)
	default:
		return prompt(e, entry, s.label)
	}
	defer clear(b)
	if err != nil {
		return "", err
	}
	if !multiline {
		if bytes.HasSuffix(b, []byte("\r\n")) {
			b = b[:len(b)-2]
		} else {
			b = bytes.TrimSuffix(b, []byte("\n"))
		}
	}
	if len(b) == 0 {
		from := "standard input"
		if !s.stdin {
			from = s.file
		}
		return "", fmt.Errorf("the %s read from %s is empty", s.label, from)
	}
	return string(b), nil
}

// readCapped reads r to its end, at most maxSecret bytes.
func readCapped(r io.Reader, from, label string) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, maxSecret+1))
	if err != nil {
		clear(b)
		return nil, fmt.Errorf("reading the %s from %s: %w", label, from, err)
	}
	if len(b) > maxSecret {
		clear(b)
		return nil, fmt.Errorf("the %s on %s is longer than %d bytes", label, from, maxSecret)
	}
	return b, nil
}

// readSecretFile reads a secret from a file that only its owner may read,
// as ssh does for private keys: one that group or others can read (or a
// directory above it that others can write) is refused, with a hint.
func readSecretFile(path, label string) ([]byte, error) {
	f, err := keys.OpenSecret(path, label+" file", keys.Private)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return readCapped(f, path, label)
}

// prompt asks for a secret twice on the terminal, without echo.
func prompt(e *env, entry, label string) (string, error) {
	f, ok := e.stdin.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) {
		if label == "password" {
			return "", usagef("standard input is not a terminal: give the password on standard input with --password-stdin")
		}
		return "", usagef("standard input is not a terminal: give the %s with --secret-stdin or --secret-file FILE", label)
	}
	fd := int(f.Fd())
	title := strings.ToUpper(label[:1]) + label[1:]
	fmt.Fprintf(e.stderr, "%s for %s: ", title, entry)
	first, err := term.ReadPassword(fd)
	fmt.Fprintln(e.stderr)
	defer clear(first)
	if err != nil {
		return "", fmt.Errorf("reading the %s from the terminal: %w", label, err)
	}
	if len(first) == 0 {
		return "", fmt.Errorf("the %s is empty", label)
	}
	fmt.Fprintf(e.stderr, "%s for %s, again: ", title, entry)
	second, err := term.ReadPassword(fd)
	fmt.Fprintln(e.stderr)
	defer clear(second)
	if err != nil {
		return "", fmt.Errorf("reading the %s from the terminal: %w", label, err)
	}
	if !bytes.Equal(first, second) {
		return "", fmt.Errorf("the two %ss do not match; nothing was written", label)
	}
	return string(first), nil
}

// summary describes a written entry for the message that says so: never
// a secret.
func summary(c secrets.Credential) string {
	var parts []string
	switch c.Kind() {
	case secrets.KindPassword:
		parts = append(parts, "username "+c.Username)
	case secrets.KindSES:
		parts = append(parts, "kind ses", "access key id "+c.Username, "region "+c.Field(secrets.KeyRegion))
	case secrets.KindCertificate:
		info, _ := c.CertificateInfo()
		parts = append(parts, "kind certificate", info.String())
	default:
		parts = append(parts, "kind "+string(c.Kind()), "username "+c.Username)
	}
	return strings.Join(append(parts, "generation "+c.Generation), ", ")
}

// warn prints what is wrong with c but not an error (an expired
// certificate).
func warn(e *env, c secrets.Credential) {
	for _, w := range c.Warnings(time.Now()) {
		fmt.Fprintf(e.stderr, "sealrelay: warning: %s\n", w)
	}
}

// dash is s, or "-" for nothing.
func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// details lists what creds list shows of an entry besides its name, kind,
// username and generation: its non-secret settings (an oauth2 entry's
// token endpoint resolved from its provider), its certificate's subject
// and expiry, and the names of its secret keys. Never a secret.
func details(c secrets.Credential) string {
	var parts []string
	add := func(k, v string) {
		if v == "" {
			return
		}
		if strings.ContainsAny(v, " \t\"") {
			v = strconv.Quote(v)
		}
		parts = append(parts, k+"="+v)
	}
	for _, k := range []string{secrets.KeyProvider, secrets.KeyTenant} {
		add(k, c.Field(k))
	}
	add("token_url", c.TokenEndpoint())
	for _, k := range []string{secrets.KeyClientID, secrets.KeyAuthMethod, secrets.KeyKeyID, secrets.KeyScopes, secrets.KeyRegion} {
		add(k, c.Field(k))
	}
	if info, ok := c.CertificateInfo(); ok {
		add("certificate", info.String())
	}
	add("secrets", strings.Join(c.SecretKeys(), ","))
	return strings.Join(parts, " ")
}
