package testbed

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Proc is a process running inside a node's namespace (`ip netns exec` replaces itself
// with the program, so the pid is the program's). Its output goes to a log file; with
// Lines, its standard output is also handed over line by line.
type Proc struct {
	Name    string
	Node    *Node
	Args    []string
	LogPath string

	cmd  *exec.Cmd
	done chan struct{}
	err  error
	log  *os.File
	mu   sync.Mutex
}

// ProcOptions are the optional parts of Start.
type ProcOptions struct {
	Env []string
	// Lines receives each line of the process's standard output (it must not block for
	// long; the process stalls while it does).
	Lines func(string)
}

// Start runs bin with args inside the node's namespace. The process gets SIGKILL if the
// testing process dies (Pdeathsig), so a killed run leaves no meshfed behind it.
func (nd *Node) Start(name, logDir, bin string, args []string, o ProcOptions) (*Proc, error) {
	if err := os.MkdirAll(logDir, 0o755); err != nil {
		return nil, err
	}
	p := &Proc{Name: name, Node: nd, Args: args, LogPath: filepath.Join(logDir, name+".log"), done: make(chan struct{})}
	lf, err := os.OpenFile(p.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	p.log = lf
	fmt.Fprintf(lf, "=== %s: %s %s (in %s)\n", time.Now().Format(time.RFC3339Nano), bin, strings.Join(args, " "), nd.NS)
	cmd := exec.Command("ip", append([]string{"netns", "exec", nd.NS, bin}, args...)...)
	cmd.Env = append(os.Environ(), o.Env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	cmd.Stderr = lf
	var stdout io.ReadCloser
	if o.Lines != nil {
		if stdout, err = cmd.StdoutPipe(); err != nil {
			lf.Close()
			return nil, err
		}
	} else {
		cmd.Stdout = lf
	}
	if err := cmd.Start(); err != nil {
		lf.Close()
		return nil, fmt.Errorf("start %s in %s: %w", name, nd.NS, err)
	}
	p.cmd = cmd
	var readers sync.WaitGroup
	if stdout != nil {
		readers.Add(1)
		go func() {
			defer readers.Done()
			sc := bufio.NewScanner(stdout)
			sc.Buffer(make([]byte, 64<<10), 1<<20)
			for sc.Scan() {
				o.Lines(sc.Text())
				p.mu.Lock()
				fmt.Fprintln(lf, sc.Text())
				p.mu.Unlock()
			}
			_, _ = io.Copy(io.Discard, stdout)
		}()
	}
	go func() {
		readers.Wait() // Wait closes the pipe: read it all first
		err := cmd.Wait()
		p.mu.Lock()
		fmt.Fprintf(lf, "=== %s: exited: %v\n", time.Now().Format(time.RFC3339Nano), err)
		p.err = err
		p.mu.Unlock()
		lf.Close()
		close(p.done)
	}()
	return p, nil
}

// Pid is the process id.
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// Running reports whether the process has not exited.
func (p *Proc) Running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// Err is how the process ended (nil while it runs or after a clean exit).
func (p *Proc) Err() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err
}

// Stop sends SIGTERM and waits up to grace, then SIGKILL. It returns the exit error of a
// process that did not exit cleanly on SIGTERM.
func (p *Proc) Stop(grace time.Duration) error {
	if !p.Running() {
		return nil
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return p.Err()
	case <-time.After(grace):
		p.Kill()
		return fmt.Errorf("%s did not exit within %v of SIGTERM: killed", p.Name, grace)
	}
}

// Kill sends SIGKILL (to the process group: anything it started goes too) and waits.
func (p *Proc) Kill() {
	if !p.Running() {
		return
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	_ = p.cmd.Process.Kill()
	<-p.done
}

// Wait waits for the process to exit, or ctx to end.
func (p *Proc) Wait(ctx context.Context) error {
	select {
	case <-p.done:
		return p.Err()
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Tail is the end of the process's log (n bytes at most), for failure messages.
func (p *Proc) Tail(n int64) string {
	f, err := os.Open(p.LogPath)
	if err != nil {
		return ""
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return ""
	}
	off := max(st.Size()-n, 0)
	b := make([]byte, st.Size()-off)
	if _, err := f.ReadAt(b, off); err != nil && !errors.Is(err, io.EOF) {
		return ""
	}
	return string(b)
}
