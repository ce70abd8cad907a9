package kinesislocal

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"
)

// packageName is the npm package holding the emulator (kinesis-mock).
const packageName = "kinesis-local"

// defaultDir finds deploy/local by walking up from the working directory to the
// folder that holds go.work.
func defaultDir() (string, error) {
	wd, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("kinesislocal: %w", err)
	}
	for d := wd; ; {
		if st, err := os.Stat(filepath.Join(d, "go.work")); err == nil && !st.IsDir() {
			return filepath.Join(d, "deploy", "local"), nil
		}
		parent := filepath.Dir(d)
		if parent == d {
			return "", fmt.Errorf("kinesislocal: no go.work found in %s or above; set Options.Dir to the deploy/local folder", wd)
		}
		d = parent
	}
}

// packageDir is the emulator's package folder inside dir.
func packageDir(dir string) string {
	return filepath.Join(dir, "node_modules", packageName)
}

// installedOK reports whether node_modules holds the emulator at the version
// pinned in package-lock.json.
func installedOK(dir string) (bool, error) {
	want, err := lockedVersion(dir)
	if err != nil {
		return false, err
	}
	pd := packageDir(dir)
	for _, f := range []string{"main.js", "server.json"} {
		if _, err := os.Stat(filepath.Join(pd, f)); err != nil {
			return false, nil
		}
	}
	b, err := os.ReadFile(filepath.Join(pd, "package.json"))
	if err != nil {
		return false, nil
	}
	var pj struct {
		Version string `json:"version"`
	}
	if json.Unmarshal(b, &pj) != nil {
		return false, nil
	}
	return pj.Version == want, nil
}

// lockedVersion reads the emulator's version from dir/package-lock.json.
func lockedVersion(dir string) (string, error) {
	b, err := os.ReadFile(filepath.Join(dir, "package-lock.json"))
	if err != nil {
		return "", fmt.Errorf("kinesislocal: %w (Options.Dir must be the deploy/local folder)", err)
	}
	var lock struct {
		Packages map[string]struct {
			Version string `json:"version"`
		} `json:"packages"`
	}
	if err := json.Unmarshal(b, &lock); err != nil {
		return "", fmt.Errorf("kinesislocal: parse package-lock.json: %w", err)
	}
	p, ok := lock.Packages["node_modules/"+packageName]
	if !ok || p.Version == "" {
		return "", fmt.Errorf("kinesislocal: %s/package-lock.json does not pin %s", dir, packageName)
	}
	return p.Version, nil
}

// ensureInstalled runs `npm ci` in dir unless the emulator is already
// installed. Concurrent callers (parallel test binaries) are serialized with
// an flock; the lock file lives in the temp dir, keyed by dir, because npm ci
// replaces node_modules and dir is under version control.
func ensureInstalled(ctx context.Context, dir string, log io.Writer) error {
	if ok, err := installedOK(dir); err != nil || ok {
		return err
	}
	sum := sha256.Sum256([]byte(dir))
	lockPath := filepath.Join(os.TempDir(), "gerritflow-kinesislocal-"+hex.EncodeToString(sum[:8])+".lock")
	f, err := os.OpenFile(lockPath, os.O_CREATE|os.O_RDWR, 0o666)
	if err != nil {
		return fmt.Errorf("kinesislocal: install lock: %w", err)
	}
	defer f.Close()
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			break
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) && !errors.Is(err, syscall.EINTR) {
			return fmt.Errorf("kinesislocal: install lock %s: %w", lockPath, err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("kinesislocal: waiting for install lock %s: %w", lockPath, ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
	defer syscall.Flock(int(f.Fd()), syscall.LOCK_UN) //nolint:errcheck

	// Another process may have installed it while we waited.
	if ok, err := installedOK(dir); err != nil || ok {
		return err
	}
	npm, err := exec.LookPath("npm")
	if err != nil {
		return fmt.Errorf("kinesislocal: the emulator is not installed in %s and npm is not on PATH: %w", dir, err)
	}
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, npm, "ci", "--no-audit", "--no-fund")
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = &out, &out
	if log != nil {
		cmd.Stdout = io.MultiWriter(&out, log)
		cmd.Stderr = cmd.Stdout
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("kinesislocal: npm ci in %s: %w\n%s", dir, err, tail(out.Bytes(), 4096))
	}
	if ok, err := installedOK(dir); err != nil || !ok {
		if err == nil {
			err = errors.New("emulator still missing after npm ci")
		}
		return fmt.Errorf("kinesislocal: %w\n%s", err, tail(out.Bytes(), 4096))
	}
	return nil
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}
