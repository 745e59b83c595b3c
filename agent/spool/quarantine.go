package spool

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/sealrelay/sealrelay/internal/safeio"
)

// quarantineCopy keeps a copy of a damaged journal segment in the
// quarantine directory (the segment itself stays: its other records are
// good).
func (q *Queue) quarantineCopy(path string) {
	qdir, err := q.quarantineDir()
	var dst string
	if err == nil {
		dst = freeName(qdir, "journal-"+filepath.Base(path))
		opt := q.st.fileOptions()
		opt.SyncDir = func() error { return q.st.syncDirPath(qdir) }
		err = safeio.WriteFile(dst, func(w io.Writer) error {
			in, err := os.Open(path)
			if err != nil {
				return err
			}
			defer in.Close()
			_, err = io.Copy(w, in)
			return err
		}, opt)
	}
	if err != nil {
		q.log.Error("spool: cannot copy a damaged journal segment to quarantine", "file", path, "err", err)
		return
	}
	q.log.Info("spool: copied damaged journal segment to quarantine", "file", path, "copy", dst)
}

// quarantineDir returns the quarantine directory, creating it if needed;
// like the spool directory, it must be the agent's alone.
func (q *Queue) quarantineDir() (string, error) {
	qdir := filepath.Join(q.opt.Dir, quarantineDir)
	created, err := ensureSubdir("quarantine directory", qdir)
	if err == nil && created {
		err = q.st.dirSync.sync()
	}
	return qdir, err
}

// freeName returns dir/name, or dir/name.N with the first N for which
// nothing (not even a symlink) is there.
func freeName(dir, name string) string {
	p := filepath.Join(dir, name)
	for n := 1; ; n++ {
		if _, err := os.Lstat(p); errors.Is(err, fs.ErrNotExist) {
			return p
		}
		p = filepath.Join(dir, fmt.Sprintf("%s.%d", name, n))
	}
}

// quarantine moves an item's files to the quarantine directory and logs
// one line naming them. Nothing is deleted.
func (q *Queue) quarantine(id string, paths []string, reason error) {
	fail := func(err error) {
		q.log.Error("spool: damaged item left in place: cannot quarantine it", "id", id, "files", paths, "reason", reason.Error(), "err", err)
	}
	qdir, err := q.quarantineDir()
	if err != nil {
		fail(err)
		return
	}
	var moved []string
	for _, p := range paths {
		// rename never follows a symlink, and freeName finds a name that
		// nothing holds.
		dst := freeName(qdir, filepath.Base(p))
		if err := os.Rename(p, dst); err != nil {
			fail(err)
			return
		}
		moved = append(moved, dst)
	}
	if err := q.st.syncDirPath(qdir); err != nil {
		q.log.Error("spool: fsync of quarantine directory failed", "dir", qdir, "err", err)
	}
	q.stats.quarantined.Add(1)
	q.log.Warn("spool: quarantined damaged item", "id", id, "files", paths, "moved_to", moved, "reason", reason.Error())
}
