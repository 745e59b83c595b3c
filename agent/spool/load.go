package spool

import (
	"container/heap"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// addLoaded schedules an item found on disk (or, if it is held, only
// keeps it), unless it is already there.
func (q *Queue) addLoaded(it *item) {
	q.mu.Lock()
	if _, dup := q.items[it.env.ID]; !dup {
		q.items[it.env.ID] = it
		if it.env.held() {
			it.held = true
			q.held++
		} else {
			heap.Push(&q.sched, it)
		}
	}
	q.mu.Unlock()
	q.kick()
}

// itemFile splits a spool file name into an item ID and suffix (msgSuffix or
// envSuffix).
func itemFile(name string) (id, suffix string, ok bool) {
	for _, s := range []string{msgSuffix, envSuffix} {
		if id, found := strings.CutSuffix(name, s); found && validID(id) {
			return id, s, true
		}
	}
	return "", "", false
}

// load scans the spool directory and then the journal segments old that
// were there at Open, scheduling what it finds.
func (q *Queue) load(old []*segment) error {
	entries, err := os.ReadDir(q.opt.Dir)
	if err != nil {
		return fmt.Errorf("reading spool directory: %w", err)
	}
	type files struct{ msg, env bool }
	found := make(map[string]*files)
	fileItems := make(map[string]bool)
	var ids []string
	changed := false
	for _, e := range entries {
		name := e.Name()
		path := filepath.Join(q.opt.Dir, name)
		if (name == quarantineDir || name == journalDir) && e.IsDir() {
			continue
		}
		if name == probeName+tmpSuffix {
			os.Remove(path) // a ProbeWrite cut short
			continue
		}
		if base, ok := strings.CutSuffix(name, tmpSuffix); ok {
			if _, _, ok := itemFile(base); ok {
				// A Put or envelope rewrite that never finished: not
				// acknowledged (or superseded by the committed envelope).
				if err := os.Remove(path); err != nil {
					q.log.Error("spool: cannot remove leftover temporary file", "file", path, "err", err)
				} else {
					q.log.Info("spool: removed leftover temporary file", "file", path)
					changed = true
				}
				continue
			}
		}
		id, suffix, ok := itemFile(name)
		if !ok {
			q.log.Warn("spool: ignoring unknown file in spool directory", "file", path)
			continue
		}
		f := found[id]
		if f == nil {
			f = &files{}
			found[id] = f
			ids = append(ids, id)
		}
		if suffix == msgSuffix {
			f.msg = true
		} else {
			f.env = true
		}
	}
	slices.Sort(ids)
	for _, id := range ids {
		if q.loadQuit.Load() {
			return errors.New("stopped by Close")
		}
		f := found[id]
		msgPath, envPath := q.st.path(id, msgSuffix), q.st.path(id, envSuffix)
		var reason error
		var env *envelope
		switch {
		case !f.env:
			reason = errors.New("message file without an envelope (a Put that never completed, so never acknowledged)")
		case !f.msg:
			reason = fmt.Errorf("message file %s is missing", msgPath)
		default:
			env, reason = readEnvelopeFile(envPath)
			if reason == nil {
				reason = checkMessageFile(msgPath, id, env)
			}
		}
		if reason != nil {
			var paths []string
			if f.msg {
				paths = append(paths, msgPath)
			}
			if f.env {
				paths = append(paths, envPath)
			}
			q.quarantine(id, paths, reason)
			changed = true
			continue
		}
		fileItems[id] = true
		q.addLoaded(&item{env: *env, index: -1})
	}
	if changed {
		if err := q.st.dirSync.sync(); err != nil {
			return err
		}
	}
	return q.loadJournal(old, fileItems)
}

// loadJournal schedules the items the segments old hold. An item that
// also has its own files was moved out of the journal: its files win.
func (q *Queue) loadJournal(old []*segment, fileItems map[string]bool) error {
	defer q.j.adopted(old)
	scan := scanSegments(old)
	for seg := range scan.damagedSegments() {
		q.quarantineCopy(seg)
	}
	for _, d := range scan.damage {
		q.stats.quarantined.Add(1)
		q.log.Warn("spool: damaged journal record skipped; a copy of its segment is in quarantine",
			"file", d.seg, "offset", d.off, "id", d.id, "reason", d.reason)
	}
	for id, e := range scan.entries {
		if fileItems[id] {
			continue
		}
		q.j.mu.Lock()
		e.loc.seg.live++
		q.j.mu.Unlock()
		loc := e.loc
		q.addLoaded(&item{env: *e.env, jl: &loc, index: -1})
	}
	return nil
}

// checkMessageFile checks that the message file of env is there with the
// size and, if the envelope records one, the SHA-256 the envelope records.
func checkMessageFile(path, id string, env *envelope) error {
	if env.ID != id {
		return fmt.Errorf("envelope id %s does not match its file name", env.ID)
	}
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("message file %s is not a regular file", path)
	}
	if fi.Size() != env.Size {
		return fmt.Errorf("message file %s has %d bytes, the envelope says %d", path, fi.Size(), env.Size)
	}
	if env.SHA256 == "" {
		return nil
	}
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	sum := sha256.New()
	buf := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(buf)
	if _, err := io.CopyBuffer(sum, f, *buf); err != nil {
		return fmt.Errorf("reading message file %s: %w", path, err)
	}
	if hex.EncodeToString(sum.Sum(nil)) != env.SHA256 {
		return fmt.Errorf("message file %s does not match the SHA-256 in its envelope (damaged on disk)", path)
	}
	return nil
}

// checkSum checks msg against the SHA-256 env records, if it records one.
func checkSum(msg []byte, env *envelope) error {
	if env.SHA256 == "" {
		return nil
	}
	sum := sha256.Sum256(msg)
	if hex.EncodeToString(sum[:]) != env.SHA256 {
		return fmt.Errorf("message of %s does not match the SHA-256 in its envelope (damaged on disk)", env.ID)
	}
	return nil
}
