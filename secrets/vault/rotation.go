package vault

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/hashicorp/vault/api"

	"github.com/sealrelay/sealrelay/keys"
	"github.com/sealrelay/sealrelay/secrets"
)

// What a rotation needs of Vault (docs/credentials.md, "Rotation"):
//
//   - agents report which generation they hold, each at
//     <mount>/data/<agents_path>/<agent> (WriteAgentReport), and the
//     rotation reads every report (AgentReports);
//   - the new secret waits, sealed like an entry, at
//     <mount>/data/<path>-rotation/<name> between the moment it is made and
//     the end of the rotation (PutPending, Pending, DropPending), so that a
//     rotation interrupted after the relay accepted it can go on;
//   - an earlier version of an entry is read (FetchVersion) and, for a
//     roll back, written again as the newest (RestoreVersion).

// AgentReportPath returns the Vault path of agent's report, or "" when
// this agent does not report (report_generations off, or no agents_path).
func (s *Source) AgentReportPath(agent string) string {
	if !s.cfg.Report || s.cfg.AgentsPath == "" {
		return ""
	}
	return s.cfg.Mount + "/data/" + s.cfg.AgentsPath + "/" + agent
}

// WriteAgentReport writes r as a new version of r.Agent's report. It holds
// no secret: generations, times and counts.
func (s *Source) WriteAgentReport(ctx context.Context, r secrets.AgentReport) error {
	if s.cfg.AgentsPath == "" {
		return errors.New("vault: no agents_path to report to")
	}
	if !validElement(r.Agent) {
		return fmt.Errorf("vault: agent name %q cannot be a Vault path element", r.Agent)
	}
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	var data map[string]any
	if err := json.Unmarshal(b, &data); err != nil {
		return err
	}
	_, err = s.putData(ctx, s.cfg.AgentsPath+"/"+r.Agent, data)
	var ve *Error
	if errors.As(err, &ve) && errors.Is(ve.Kind, ErrPermissionDenied) {
		ve.hint = fmt.Sprintf("give the agent's token a policy with create and update on %s/data/%s/%s", s.cfg.Mount, s.cfg.AgentsPath, r.Agent)
	}
	return err
}

// AgentReports returns the report of every agent under agents_path, sorted
// by agent. A report that cannot be read as one is returned with only its
// Agent set and an error in the map.
func (s *Source) AgentReports(ctx context.Context) ([]secrets.AgentReport, map[string]error, error) {
	if s.cfg.AgentsPath == "" {
		return nil, nil, errors.New("vault: no agents_path to read reports from")
	}
	names, err := s.list(ctx, s.cfg.AgentsPath)
	if err != nil {
		return nil, nil, err
	}
	var out []secrets.AgentReport
	bad := map[string]error{}
	for _, name := range names {
		p := s.cfg.AgentsPath + "/" + name
		kv, err := s.get(ctx, p, 0)
		if err != nil {
			return nil, nil, err
		}
		if kv.Data == nil {
			continue // deleted: the agent is gone
		}
		r := secrets.AgentReport{Agent: name}
		if b, err := json.Marshal(kv.Data); err != nil || json.Unmarshal(b, &r) != nil {
			bad[name] = fmt.Errorf("%s/data/%s: not an agent report", s.cfg.Mount, p)
		}
		r.Agent = name
		out = append(out, r)
	}
	return out, bad, nil
}

// list returns the names of the entries (not folders) under the KV folder
// p, sorted.
func (s *Source) list(ctx context.Context, p string) ([]string, error) {
	listPath := s.cfg.Mount + "/metadata/" + p
	var sec *api.Secret
	err := s.call(ctx, listPath, func(c *api.Client) error {
		var err error
		sec, err = c.Logical().ListWithContext(ctx, listPath)
		return err
	})
	if err != nil {
		return nil, err
	}
	var names []string
	if sec != nil {
		raw, _ := sec.Data["keys"].([]any)
		for _, k := range raw {
			if n, ok := k.(string); ok && !strings.HasSuffix(n, "/") {
				names = append(names, n)
			}
		}
	}
	slices.Sort(names)
	return names, nil
}

// validElement reports whether name can be one element of a Vault path.
func validElement(name string) bool {
	return name != "" && name != "." && name != ".." && !strings.ContainsAny(name, "/\x00\r\n")
}

// pendingPath is where the new secret of entry name waits during a
// rotation, under the mount.
func (s *Source) pendingPath(name string) (string, error) {
	if _, err := s.entry(name); err != nil {
		return "", err
	}
	return s.cfg.Path + "-rotation/" + name, nil
}

// PendingPath returns the Vault path (with the mount) where PutPending
// keeps c's new secret.
func (s *Source) PendingPath(name string) string {
	p, _ := s.pendingPath(name)
	return s.cfg.Mount + "/data/" + p
}

// PutPending keeps c, the new credential of a rotation, beside the entry:
// sealed to recipients as PutCredential seals an entry.
func (s *Source) PutPending(ctx context.Context, c secrets.Credential, recipients *keys.RecipientList) error {
	p, err := s.pendingPath(c.Name)
	if err != nil {
		return err
	}
	_, err = s.putAt(ctx, p, c, recipients)
	return err
}

// Pending reads back what PutPending kept for entry name.
func (s *Source) Pending(ctx context.Context, name string) (secrets.Credential, error) {
	p, err := s.pendingPath(name)
	if err != nil {
		return secrets.Credential{}, err
	}
	return s.fetchAt(ctx, p, name, 0)
}

// DropPending deletes what PutPending kept for entry name, every version
// of it. Nothing kept is no error.
func (s *Source) DropPending(ctx context.Context, name string) error {
	p, err := s.pendingPath(name)
	if err != nil {
		return err
	}
	return s.call(ctx, s.cfg.Mount+"/metadata/"+p, func(c *api.Client) error {
		return c.KVv2(s.cfg.Mount).DeleteMetadata(ctx, p)
	})
}

// FetchVersion reads version v of entry name, opened as Fetch opens the
// current one.
func (s *Source) FetchVersion(ctx context.Context, name string, v int) (secrets.Credential, error) {
	p, err := s.entry(name)
	if err != nil {
		return secrets.Credential{}, err
	}
	if v <= 0 {
		return secrets.Credential{}, fmt.Errorf("vault: version %d of %s: versions start at 1", v, name)
	}
	c, err := s.fetchAt(ctx, p, name, v)
	if err == nil {
		c.Version = strconv.Itoa(v)
	}
	return c, err
}

// RestoreVersion writes version v of entry name again, as it is stored
// (sealed values stay the same ciphertexts), as the newest version, which
// it returns: a roll back, as `vault kv rollback` does.
func (s *Source) RestoreVersion(ctx context.Context, name string, v int) (int, error) {
	p, err := s.entry(name)
	if err != nil {
		return 0, err
	}
	dataPath := s.cfg.Mount + "/data/" + p
	kv, err := s.get(ctx, p, v)
	if err != nil {
		return 0, err
	}
	if kv.Data == nil {
		return 0, &Error{Path: dataPath, Kind: secrets.ErrNotFound, Detail: fmt.Sprintf("version %d is deleted or destroyed", v)}
	}
	return s.putData(ctx, p, kv.Data)
}
