package sasl

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	gosasl "github.com/emersion/go-sasl"
)

// BearerClient is an XOAUTH2 or OAUTHBEARER client. After a refused
// token, Refusal returns what the relay's error challenge said.
type BearerClient interface {
	gosasl.Client
	// Refusal returns the relay's error challenge, or nil if there was
	// none: the token was accepted, or the relay refused before any
	// challenge (Dovecot answers 535 at once to an empty user name, and
	// when its token check is unreachable).
	Refusal() *BearerError
}

// BearerError is a relay's error challenge to a bearer token: the fields
// of its JSON (RFC 7628 section 3.2.2; XOAUTH2 sends the same form). Its
// fields are reduced to short printable text and never hold the token.
type BearerError struct {
	// Mechanism is XOAUTH2 or OAUTHBEARER.
	Mechanism string
	// Status is the error status: "401" (XOAUTH2 as Google and Dovecot
	// send it), "invalid_token", "insufficient_scope"...
	Status string
	// Schemes and Scope are what the relay says it would accept.
	Schemes, Scope string
	// Malformed is set when the challenge was not that JSON.
	Malformed bool
}

func (e *BearerError) Error() string {
	if e.Malformed {
		return e.Mechanism + ": the relay refused the token (its error challenge is not JSON)"
	}
	s := e.Mechanism + ": the relay refused the token (status " + printable(e.Status, 40)
	if e.Schemes != "" {
		s += ", schemes " + printable(e.Schemes, 40)
	}
	if e.Scope != "" {
		s += ", scope " + printable(e.Scope, 80)
	}
	return s + ")"
}

// bearer is what XOAUTH2 and OAUTHBEARER share: one initial response
// carrying the token, then at most one error challenge, answered with
// reply so that the relay ends the exchange with its failure reply.
type bearer struct {
	mech    string
	initial []byte
	token   string
	reply   []byte
	refusal *BearerError
	err     error
}

func (b *bearer) Start() (string, []byte, error) {
	if b.err != nil {
		return "", nil, b.err
	}
	return b.mech, b.initial, nil
}

func (b *bearer) Next(challenge []byte) ([]byte, error) {
	if b.refusal != nil {
		return nil, fmt.Errorf("%s: the relay sent a second challenge after its error challenge", b.mech)
	}
	b.refusal = parseBearerError(b.mech, challenge, b.token)
	// reply is never nil: go-smtp's Client.Auth takes a nil response as
	// the end of the exchange and returns nil, as if AUTH had succeeded.
	return b.reply, nil
}

func (b *bearer) Refusal() *BearerError { return b.refusal }

func parseBearerError(mech string, challenge []byte, token string) *BearerError {
	var raw struct {
		Status  json.RawMessage `json:"status"`
		Schemes string          `json:"schemes"`
		Scope   string          `json:"scope"`
	}
	if err := json.Unmarshal(challenge, &raw); err != nil {
		return &BearerError{Mechanism: mech, Malformed: true}
	}
	// Google sends "status":"400" and some servers a number.
	status := strings.Trim(string(raw.Status), `"`)
	field := func(s string, max int) string {
		s = redact(s, token)
		if len(s) > max {
			s = s[:max]
		}
		return s
	}
	return &BearerError{
		Mechanism: mech,
		Status:    field(status, 40),
		Schemes:   field(raw.Schemes, 40),
		Scope:     field(raw.Scope, 200),
	}
}

// checkBearer refuses a user name or token that would break the
// mechanisms' framing; the error names which, never the value.
func checkBearer(mech, username, token string) error {
	switch {
	case username == "":
		return fmt.Errorf("%s: the user name is empty", mech)
	case token == "":
		return fmt.Errorf("%s: the access token is empty", mech)
	case hasControl(username):
		return fmt.Errorf("%s: the user name holds a control character", mech)
	case hasControl(token) || strings.ContainsRune(token, ' '):
		return fmt.Errorf("%s: the access token holds a control character or a space", mech)
	}
	return nil
}

func hasControl(s string) bool {
	return strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f })
}

// NewXOAuth2Client returns an XOAUTH2 client (Google's and Microsoft's
// mechanism): the initial response "user=U\x01auth=Bearer T\x01\x01". On
// the relay's error challenge it sends an empty response, so the relay
// answers with its failure reply (535), and Refusal holds the challenge.
func NewXOAuth2Client(username, token string) BearerClient {
	b := &bearer{mech: XOAuth2, token: token, reply: []byte{}}
	b.err = checkBearer(XOAuth2, username, token)
	b.initial = []byte("user=" + username + "\x01auth=Bearer " + token + "\x01\x01")
	return b
}

// NewOAuthBearerClient returns an OAUTHBEARER client (RFC 7628) for the
// user (the authorization identity, a=) with the token; host and port, if
// set, name the relay (kvpairs host= and port=). On the relay's error
// challenge it sends "\x01" (RFC 7628 section 3.2.3), so the relay
// answers with its failure reply (535) rather than go-sasl's abort "*"
// (which Dovecot answers with 501), and Refusal holds the challenge.
func NewOAuthBearerClient(username, token, host string, port int) BearerClient {
	b := &bearer{mech: OAuthBearer, token: token, reply: []byte{1}}
	b.err = checkBearer(OAuthBearer, username, token)
	if b.err == nil && hasControl(host) {
		b.err = fmt.Errorf("%s: the host name holds a control character", OAuthBearer)
	}
	var s strings.Builder
	s.WriteString("n,a=" + gs2Name(username) + ",")
	if host != "" {
		s.WriteString("\x01host=" + host)
	}
	if port > 0 {
		s.WriteString("\x01port=" + strconv.Itoa(port))
	}
	s.WriteString("\x01auth=Bearer " + token + "\x01\x01")
	b.initial = []byte(s.String())
	return b
}

// gs2Name escapes ',' and '=' in a GS2 authzid (RFC 5801 section 4).
func gs2Name(s string) string {
	return strings.NewReplacer("=", "=3D", ",", "=2C").Replace(s)
}
