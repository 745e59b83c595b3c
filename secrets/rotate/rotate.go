package rotate

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"slices"
	"strings"
	"time"

	"github.com/sealrelay/sealrelay/secrets"
)

// Rotation rotates entry Name. Every field is needed.
type Rotation struct {
	Name     string
	Backend  Backend
	Fleet    Fleet
	Hooks    Hooks
	Password Password
	// Wait bounds step 4; Poll is how often the fleet is asked meanwhile.
	Wait, Poll time.Duration
	// StatePath is the state file; StatePath+".lock" is its lock.
	StatePath string
	// Out receives the log: a line per step, the fleet's progress, and
	// what the hooks print (secrets replaced).
	Out io.Writer
}

// steps is how many steps a rotation has.
const steps = 5

// Start begins a rotation and runs it as far as it goes: to its end, or
// to the step that fails, which its error names. It refuses to start
// while a rotation of the entry is unfinished.
func (r *Rotation) Start(ctx context.Context) error {
	unlock, err := lock(r.StatePath)
	if err != nil {
		return err
	}
	defer unlock()
	st, err := loadState(r.StatePath)
	if err != nil {
		return err
	}
	if st != nil {
		return &Error{Msg: fmt.Sprintf("a rotation of %q is unfinished: %s (state %s)", r.Name, st.where(), r.StatePath),
			hint: "continue it with `sealrelay creds rotate " + r.Name + " --resume`, or roll it back with --abort"}
	}
	old, err := r.Backend.Current(ctx, r.Name)
	if err != nil {
		return err
	}
	key, err := rotatedKey(old)
	if err != nil {
		return err
	}
	if err := r.checkHooks(old.Kind()); err != nil {
		return err
	}
	gen := secrets.NewGeneration()
	nc, err := r.make(ctx, old, key, gen)
	if err != nil {
		return err
	}
	now := time.Now().UTC()
	st = &State{Format: stateFormat, Name: r.Name, Source: r.Backend.String(), Kind: string(old.Kind()),
		OldUsername: old.Username, OldGeneration: old.Generation, NewUsername: nc.Username, NewGeneration: nc.Generation,
		Started: now}
	// The new secret is kept before any hook may make it valid anywhere:
	// whatever a crash leaves can be resumed or rolled back.
	if st.Previous, err = r.Backend.Keep(ctx, RolePrevious, old); err != nil {
		return err
	}
	if st.Pending, err = r.Backend.Keep(ctx, RolePending, nc); err != nil {
		return err
	}
	st.Step = StepMade
	st.MadeByHook = len(r.Hooks.Make) > 0
	made := "sealrelay made it"
	if st.MadeByHook {
		made = "the make hook made it"
	}
	r.logf(st, "step 1/5: made a new %s for %s %s, generation %s (%s); kept %s",
		label(key), accountWord(old.Kind()), nc.Username, nc.Generation, made, r.Backend.KeepsIn(r.Name, r.StatePath))
	if err := st.save(r.StatePath, now); err != nil {
		return err
	}
	return r.proceed(ctx, st, old, nc)
}

// Resume continues an unfinished rotation from the step after the last
// one completed.
func (r *Rotation) Resume(ctx context.Context) error {
	unlock, st, err := r.open()
	if err != nil {
		return err
	}
	defer unlock()
	if st.Aborting {
		return &Error{Msg: fmt.Sprintf("the rotation of %q is being rolled back", r.Name),
			hint: "finish the roll back with `sealrelay creds rotate " + r.Name + " --abort`"}
	}
	nc, err := r.Backend.Kept(ctx, RolePending, r.Name, st.Pending)
	if err != nil {
		return err
	}
	old, _ := r.Backend.Kept(ctx, RolePrevious, r.Name, st.Previous) // only to keep it out of what hooks print
	if err := r.checkHooks(nc.Kind()); err != nil {
		return err
	}
	r.logf(st, "resuming the rotation begun %s: %s", st.Started.Format(time.RFC3339), st.where())
	return r.proceed(ctx, st, old, nc)
}

// Abort rolls an unfinished rotation back: the previous entry is put back
// if the new one was sealed, the fleet is waited for until it holds the
// previous generation again, and the new secret is retired at the relay
// if the set hook ran.
func (r *Rotation) Abort(ctx context.Context) error {
	unlock, st, err := r.open()
	if err != nil {
		return err
	}
	defer unlock()
	nc, err := r.Backend.Kept(ctx, RolePending, r.Name, st.Pending)
	if err != nil {
		return err
	}
	old, _ := r.Backend.Kept(ctx, RolePrevious, r.Name, st.Previous)
	if !st.Aborting {
		st.Aborting = true
		r.logf(st, "rolling back the rotation begun %s: %s", st.Started.Format(time.RFC3339), st.where())
		if err := st.save(r.StatePath, time.Now().UTC()); err != nil {
			return err
		}
	}
	cur, err := r.Backend.Current(ctx, r.Name)
	if err != nil {
		return err
	}
	sealed := st.Step.number() >= StepResealed.number() || cur.Generation == st.NewGeneration
	if sealed && !st.Restored {
		how, err := r.Backend.Restore(ctx, r.Name, st.Previous)
		if err != nil {
			return err
		}
		st.Restored = true
		r.logf(st, "abort: put the previous entry %s back in %s %s (generation %s)", r.Name, r.Backend, how, orNone(st.OldGeneration))
		if err := st.save(r.StatePath, time.Now().UTC()); err != nil {
			return err
		}
	}
	if sealed {
		r.logf(st, "abort: waiting up to %s for %s to hold generation %s again", r.Wait, r.Fleet, orNone(st.OldGeneration))
		summary, err := r.waitFleet(ctx, st, "abort", st.OldGeneration)
		if err != nil {
			return &Error{Msg: "abort: " + err.Error() + "; the new secret was not retired",
				hint: "when they hold the previous generation, `sealrelay creds rotate " + r.Name + " --abort` goes on"}
		}
		r.logf(st, "abort: %s", summary)
	}
	if st.SetHookRun || st.MadeByHook {
		if err := r.checkHook("retire_hook", r.Hooks.Retire, true); err != nil {
			return err
		}
		if _, err := r.hook(ctx, r.Hooks.Retire, ActionRetireNew, st, nc, old); err != nil {
			return &Error{Msg: "abort: " + err.Error() + "; the new secret may still be valid at the relay",
				hint: "fix the hook; `sealrelay creds rotate " + r.Name + " --abort` runs it again"}
		}
		r.logf(st, "abort: the retire hook retired the new %s at the relay", label(mustKey(nc)))
	}
	r.finish(ctx, st)
	r.logf(st, "rolled back: %s and the relay hold only the previous secret, generation %s", r.Backend, orNone(st.OldGeneration))
	return nil
}

// open locks and reads the state of an unfinished rotation.
func (r *Rotation) open() (func(), *State, error) {
	unlock, err := lock(r.StatePath)
	if err != nil {
		return nil, nil, err
	}
	st, err := loadState(r.StatePath)
	if err == nil && st == nil {
		err = &Error{Msg: fmt.Sprintf("no rotation of %q is unfinished (no %s)", r.Name, r.StatePath),
			hint: "start one with `sealrelay creds rotate " + r.Name + "`"}
	}
	if err == nil && st.Name != r.Name {
		err = &Error{Msg: fmt.Sprintf("%s is the state of a rotation of %q, not %q", r.StatePath, st.Name, r.Name)}
	}
	if err != nil {
		unlock()
		return nil, nil, err
	}
	return unlock, st, nil
}

// proceed runs the steps after st.Step.
func (r *Rotation) proceed(ctx context.Context, st *State, old, nc secrets.Credential) error {
	key := mustKey(nc)
	if st.Step == StepMade {
		if err := r.set(ctx, st, old, nc, key); err != nil {
			return err
		}
	}
	if st.Step == StepSet {
		if err := r.reseal(ctx, st, nc); err != nil {
			return err
		}
	}
	if st.Step == StepResealed {
		r.logf(st, "step 4/5: waiting up to %s for %s to hold generation %s with no relay connection on the old secret",
			r.Wait, r.Fleet, st.NewGeneration)
		summary, err := r.waitFleet(ctx, st, "step 4/5", st.NewGeneration)
		if err != nil {
			return &Error{Msg: "step 4/5: " + err.Error() + "; nothing was retired: the old secret stays valid",
				hint: "once those agents hold the new generation, `sealrelay creds rotate " + r.Name + " --resume` waits again and retires the old secret; --abort rolls back"}
		}
		st.Step = StepSwitched
		r.logf(st, "step 4/5: %s", summary)
		if err := st.save(r.StatePath, time.Now().UTC()); err != nil {
			return err
		}
	}
	if _, err := r.hook(ctx, r.Hooks.Retire, ActionRetireOld, st, nc, old); err != nil {
		return &Error{Msg: "step 5/5: " + err.Error() + "; the old secret stays valid at the relay",
			hint: "fix the hook; `sealrelay creds rotate " + r.Name + " --resume` runs it again, --abort rolls back"}
	}
	r.logf(st, "step 5/5: the retire hook retired the old %s of %s at the relay", label(key), orNone(st.OldUsername))
	r.finish(ctx, st)
	r.logf(st, "done: %s holds generation %s, which every agent uses; the old secret is retired", r.Name, st.NewGeneration)
	return nil
}

// set is step 2: the set hook makes the new secret valid at the relay.
func (r *Rotation) set(ctx context.Context, st *State, old, nc secrets.Credential, key string) error {
	st.SetHookRun = true
	if err := st.save(r.StatePath, time.Now().UTC()); err != nil {
		return err
	}
	if len(r.Hooks.Set) == 0 {
		r.logf(st, "step 2/5: no set hook: the make hook made the new %s valid", label(key))
	} else {
		if _, err := r.hook(ctx, r.Hooks.Set, ActionSetNew, st, nc, old); err != nil {
			return &Error{Msg: "step 2/5: " + err.Error() + "; nothing was resealed: the agents keep the old secret, which stays valid",
				hint: "fix the hook; `sealrelay creds rotate " + r.Name + " --resume` runs it again, --abort rolls back"}
		}
		r.logf(st, "step 2/5: the set hook says the relay accepts the new %s beside the old one", label(key))
	}
	st.Step = StepSet
	return st.save(r.StatePath, time.Now().UTC())
}

// reseal is step 3: the entry gets the new secret.
func (r *Rotation) reseal(ctx context.Context, st *State, nc secrets.Credential) error {
	cur, err := r.Backend.Current(ctx, r.Name)
	if err != nil {
		return err
	}
	switch cur.Generation {
	case st.NewGeneration:
		// Sealed by a run that stopped before it could say so.
		r.logf(st, "step 3/5: %s already holds generation %s", r.Backend, st.NewGeneration)
	case st.OldGeneration:
		how, err := r.Backend.Install(ctx, nc)
		if err != nil {
			return &Error{Msg: "step 3/5: resealing " + r.Name, Err: err,
				hint: "the relay accepts both secrets; `sealrelay creds rotate " + r.Name + " --resume` tries again"}
		}
		r.logf(st, "step 3/5: resealed %s in %s %s, generation %s", r.Name, r.Backend, how, st.NewGeneration)
	default:
		return &Error{Msg: fmt.Sprintf("step 3/5: %s changed in %s since the rotation began: it holds generation %s, neither the old %s nor the new %s; nothing was resealed",
			r.Name, r.Backend, orNone(cur.Generation), orNone(st.OldGeneration), st.NewGeneration),
			hint: "`sealrelay creds rotate " + r.Name + " --abort` retires the new secret and puts the previous entry back"}
	}
	st.Step = StepResealed
	return st.save(r.StatePath, time.Now().UTC())
}

// waitFleet waits until every agent holds generation want with no
// connection on another secret, up to r.Wait, logging the fleet's state
// whenever it changes. Its error names the agents that did not switch.
func (r *Rotation) waitFleet(ctx context.Context, st *State, step, want string) (string, error) {
	deadline := time.Now().Add(r.Wait)
	last := ""
	for {
		line := ""
		states, err := r.Fleet.Poll(ctx, r.Name)
		if err != nil {
			line = "cannot read " + r.Fleet.String() + ": " + err.Error()
		} else {
			v := view(states, want)
			line = v.summary(orNone(want))
			if v.done() {
				return line, nil
			}
		}
		if line != last {
			r.logf(st, "%s: %s", step, line)
			last = line
		}
		left := time.Until(deadline)
		if left <= 0 {
			return "", fmt.Errorf("not every agent of %s holds generation %s within %s (rotation.wait_timeout): %s",
				r.Fleet, orNone(want), r.Wait, line)
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("stopped while waiting for %s: %w", r.Fleet, ctx.Err())
		case <-time.After(min(r.Poll, left)):
		}
	}
}

// finish drops what the rotation kept, and its state file.
func (r *Rotation) finish(ctx context.Context, st *State) {
	if err := r.Backend.Forget(ctx, r.Name); err != nil {
		r.logf(st, "warning: could not remove the new secret kept for the rotation: %v", err)
	}
	if err := os.Remove(r.StatePath); err != nil && !errors.Is(err, fs.ErrNotExist) {
		r.logf(st, "warning: could not remove the state file: %v", err)
	}
}

// hook runs a set or retire hook with the new secret.
func (r *Rotation) hook(ctx context.Context, argv []string, action string, st *State, nc, old secrets.Credential) ([]byte, error) {
	in := HookInput{Action: action, Name: r.Name, Kind: string(nc.Kind()), Username: nc.Username,
		Secret: secretOf(nc), Generation: nc.Generation,
		OldUsername: st.OldUsername, OldGeneration: st.OldGeneration}
	return runHook(ctx, argv, r.Hooks.Timeout, in, redactions(append(secretValues(nc), secretValues(old)...)...), r.Out, false)
}

// make is step 1: a new credential like old, with a new secret under key
// (and perhaps a new username), and generation gen.
func (r *Rotation) make(ctx context.Context, old secrets.Credential, key, gen string) (secrets.Credential, error) {
	username, secret := old.Username, ""
	if len(r.Hooks.Make) > 0 {
		in := HookInput{Action: ActionMake, Name: r.Name, Kind: string(old.Kind()), Username: old.Username, Generation: gen,
			OldUsername: old.Username, OldGeneration: old.Generation}
		out, err := runHook(ctx, r.Hooks.Make, r.Hooks.Timeout, in, redactions(secretValues(old)...), r.Out, true)
		if err != nil {
			return secrets.Credential{}, &Error{Msg: "step 1/5: " + err.Error() + "; nothing was changed"}
		}
		ho, err := readHookOutput(out, r.Hooks.Make[0])
		if err != nil {
			return secrets.Credential{}, &Error{Msg: "step 1/5: " + err.Error() + "; nothing was changed"}
		}
		secret = ho.Secret
		if ho.Username != "" {
			username = ho.Username
		}
	}
	if secret == "" {
		if old.Kind() != secrets.KindPassword {
			return secrets.Credential{}, &Error{Msg: fmt.Sprintf("step 1/5: the make hook printed no secret; sealrelay cannot make a new %s for a %s entry", label(key), old.Kind()),
				hint: `the make hook prints {"secret": "...", "username": "..."} on standard output`}
		}
		var err error
		if secret, err = r.Password.New(); err != nil {
			return secrets.Credential{}, err
		}
	}
	data := map[string]any{}
	for _, f := range old.RevealEntry() {
		if f.Key == secrets.KeyScopes {
			data[f.Key] = strings.Fields(f.Value)
		} else {
			data[f.Key] = f.Value
		}
	}
	data[key] = secret
	data[secrets.KeyGeneration] = gen
	if old.Kind() == secrets.KindSES {
		data[secrets.KeyAccessKeyID] = username
	} else {
		data[secrets.KeyUsername] = username
	}
	c, err := secrets.ParseEntry(old.Name, data)
	if err != nil {
		return secrets.Credential{}, &Error{Msg: "step 1/5: the new entry is not valid; nothing was changed", Err: err}
	}
	if c.SameSecret(old) {
		return secrets.Credential{}, &Error{Msg: fmt.Sprintf("step 1/5: the new %s is the old one; nothing was changed", label(key))}
	}
	return c, nil
}

// checkHooks checks that the hooks a rotation of kind needs are set, and
// that each set one can be run.
func (r *Rotation) checkHooks(kind secrets.Kind) error {
	if kind != secrets.KindPassword && len(r.Hooks.Make) == 0 {
		return &Error{Msg: fmt.Sprintf("sealrelay cannot make a new %s for a %s entry itself: rotation.make_hook is not set", label(mainSecret[kind]), kind),
			hint: "set rotation.make_hook to a program that makes one (README, \"Rotating a credential\")"}
	}
	if err := r.checkHook("make_hook", r.Hooks.Make, false); err != nil {
		return err
	}
	if err := r.checkHook("set_hook", r.Hooks.Set, len(r.Hooks.Make) == 0); err != nil {
		return err
	}
	return r.checkHook("retire_hook", r.Hooks.Retire, true)
}

// checkHook checks one hook: set if needed, and its program runnable.
func (r *Rotation) checkHook(key string, argv []string, needed bool) error {
	if len(argv) == 0 {
		if needed {
			return &Error{Msg: "rotation." + key + " is not set",
				hint: "set it to the program that acts at the relay (README, \"Rotating a credential\")"}
		}
		return nil
	}
	if _, err := exec.LookPath(argv[0]); err != nil {
		return &Error{Msg: "rotation." + key, Err: err, hint: "it must name an executable file"}
	}
	return nil
}

// logf writes a line of the rotation's log and keeps it in the state.
func (r *Rotation) logf(st *State, format string, args ...any) {
	text := fmt.Sprintf(format, args...)
	fmt.Fprintf(r.Out, "sealrelay: rotate %s: %s\n", r.Name, text)
	st.Log = append(st.Log, LogEntry{At: time.Now().UTC(), Text: text})
}

// where says how far a rotation got.
func (st *State) where() string {
	return fmt.Sprintf("step %d of %d done (%s), generation %s to %s", st.Step.number(), steps, st.Step, orNone(st.OldGeneration), st.NewGeneration)
}

// mainSecret is the secret a rotation replaces, by kind.
var mainSecret = map[secrets.Kind]string{
	secrets.KindPassword: secrets.KeyPassword,
	secrets.KindOAuth2:   secrets.KeyClientSecret,
	secrets.KindSES:      secrets.KeySecretAccessKey,
}

// rotatedKey returns the key a rotation of c replaces, or why c cannot be
// rotated.
func rotatedKey(c secrets.Credential) (string, error) {
	switch {
	case c.Kind() == secrets.KindCertificate:
		return "", &Error{Msg: fmt.Sprintf("entry %q is a certificate: creds rotate makes passwords, client secrets and access keys", c.Name),
			hint: "renew the certificate, then `sealrelay creds set " + c.Name + " --kind certificate`"}
	case c.Kind() == secrets.KindOAuth2 && !slices.Contains(c.SecretKeys(), secrets.KeyClientSecret):
		return "", &Error{Msg: fmt.Sprintf("entry %q is an oauth2 entry without a client secret: creds rotate replaces client secrets only", c.Name),
			hint: "replace a private key or refresh token with `sealrelay creds set " + c.Name + " --oauth2 ...`"}
	}
	return mainSecret[c.Kind()], nil
}

// secretOf returns the secret a rotation of c replaces, in clear.
func secretOf(c secrets.Credential) string {
	switch c.Kind() {
	case secrets.KindOAuth2:
		return c.ClientSecret()
	case secrets.KindSES:
		return c.SecretAccessKey()
	}
	return c.Password()
}

// mustKey is rotatedKey for a credential already checked.
func mustKey(c secrets.Credential) string { return mainSecret[c.Kind()] }

// secretValues lists c's secrets in clear, and an ses entry's derived
// SMTP password, for what hooks print to be cleaned of.
func secretValues(c secrets.Credential) []string {
	var out []string
	for _, f := range c.RevealEntry() {
		if f.Secret && f.Value != "" {
			out = append(out, f.Value)
		}
	}
	if p := c.Password(); p != "" {
		out = append(out, p)
	}
	return out
}

// label names a secret key in messages.
func label(key string) string {
	switch key {
	case secrets.KeyPassword:
		return "password"
	case secrets.KeyClientSecret:
		return "client secret"
	case secrets.KeySecretAccessKey:
		return "secret access key"
	}
	return key
}

// accountWord names what a kind's username is.
func accountWord(k secrets.Kind) string {
	if k == secrets.KindSES {
		return "access key id"
	}
	return "user"
}
