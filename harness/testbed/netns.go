package testbed

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/meshfed/meshfed/internal/waitfor"
)

// Names and addresses. A run owns one slot S (1..MaxSlot), held by an flock on
// StateDir/slot-S.lock for the life of the process: its bridge is mftbS, its namespaces
// mftbS-<node>, its host-side veths mftbSv<i>, its subnet 198.18.S.0/24 (the host, i.e.
// the test process in the root namespace, is 198.18.S.1). A slot whose lock nobody holds
// but whose names exist belongs to a killed run: the next run removes them.
const (
	StateDir = "/run/meshfed-testbed"
	Prefix   = "mftb"
	MaxSlot  = 250
)

// Net is one run's network: a bridge in the root namespace and one namespace per node.
type Net struct {
	Slot   int
	Bridge string
	HostIP string

	lock  *os.File
	mu    sync.Mutex
	nodes []*Node
}

// Node is one network namespace on the bridge, with one address.
type Node struct {
	Name string // node name, e.g. "east" or "etcd0"
	NS   string // namespace name, e.g. "mftb7-east"
	IP   string // its address on the bridge, e.g. 198.18.7.21
	veth string // host side of its veth pair
	net  *Net
}

// Available says why namespaces cannot be used here (nil: they can): not root, no `ip`
// or `nft`, or the kernel refuses a namespace (a container without CAP_SYS_ADMIN).
func Available() error {
	if os.Geteuid() != 0 {
		return errors.New("needs root (network namespaces, veth pairs, a bridge and nftables rules)")
	}
	for _, tool := range []string{"ip", "nft"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("needs %q on PATH (iproute2, nftables): %w", tool, err)
		}
	}
	probe := fmt.Sprintf("%s-probe-%d", Prefix, os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", probe).CombinedOutput(); err != nil {
		return fmt.Errorf("cannot create a network namespace: %v: %s", err, bytes.TrimSpace(out))
	}
	_ = exec.Command("ip", "netns", "del", probe).Run()
	return nil
}

// NewNet takes a free slot, removes what killed runs left behind, and creates the bridge.
func NewNet(ctx context.Context) (*Net, error) {
	if err := Available(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(StateDir, 0o755); err != nil {
		return nil, err
	}
	CleanLeftovers(ctx)
	for s := 1; s <= MaxSlot; s++ {
		f, ok, err := lockSlot(s)
		if err != nil {
			return nil, err
		}
		if !ok {
			continue
		}
		n := &Net{Slot: s, Bridge: fmt.Sprintf("%s%d", Prefix, s), HostIP: fmt.Sprintf("198.18.%d.1", s), lock: f}
		removeSlot(ctx, s) // ours now: whatever carries its names is a leftover
		if err := n.setup(ctx); err != nil {
			n.Close()
			return nil, err
		}
		return n, nil
	}
	return nil, fmt.Errorf("all %d testbed slots are in use (%s/slot-*.lock)", MaxSlot, StateDir)
}

func (n *Net) setup(ctx context.Context) error {
	if err := run(ctx, "ip", "link", "add", n.Bridge, "type", "bridge"); err != nil {
		return err
	}
	if err := run(ctx, "ip", "addr", "add", n.HostIP+"/24", "dev", n.Bridge); err != nil {
		return err
	}
	return run(ctx, "ip", "link", "set", n.Bridge, "up")
}

// AddNode creates the namespace of node name, with the address 198.18.<slot>.<hostOctet>
// on the bridge.
func (n *Net) AddNode(ctx context.Context, name string, hostOctet int) (*Node, error) {
	n.mu.Lock()
	idx := len(n.nodes)
	n.mu.Unlock()
	nd := &Node{Name: name, NS: fmt.Sprintf("%s%d-%s", Prefix, n.Slot, name), IP: fmt.Sprintf("198.18.%d.%d", n.Slot, hostOctet),
		veth: fmt.Sprintf("%s%dv%d", Prefix, n.Slot, idx), net: n}
	if len(nd.veth) > 15 {
		return nil, fmt.Errorf("interface name %s is longer than 15 bytes", nd.veth)
	}
	n.mu.Lock()
	n.nodes = append(n.nodes, nd)
	n.mu.Unlock()
	steps := [][]string{
		{"ip", "netns", "add", nd.NS},
		{"ip", "-n", nd.NS, "link", "set", "lo", "up"},
		{"ip", "link", "add", nd.veth, "type", "veth", "peer", "name", "eth0", "netns", nd.NS},
		{"ip", "link", "set", nd.veth, "master", n.Bridge},
		{"ip", "link", "set", nd.veth, "up"},
		{"ip", "-n", nd.NS, "addr", "add", nd.IP + "/24", "dev", "eth0"},
		{"ip", "-n", nd.NS, "link", "set", "eth0", "up"},
	}
	for _, s := range steps {
		if err := run(ctx, s[0], s[1:]...); err != nil {
			return nil, fmt.Errorf("node %s: %w", name, err)
		}
	}
	return nd, nil
}

// Nodes lists the nodes in creation order.
func (n *Net) Nodes() []*Node {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]*Node(nil), n.nodes...)
}

// Close kills every process left in the slot's namespaces and removes the namespaces,
// the veths and the bridge, then releases the slot.
func (n *Net) Close() {
	if n.lock == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	removeSlot(ctx, n.Slot)
	_ = n.lock.Close() // releases the flock
	n.lock = nil
}

// lockSlot takes slot s's flock without waiting; ok false when another process holds it.
func lockSlot(s int) (*os.File, bool, error) {
	f, err := os.OpenFile(filepath.Join(StateDir, fmt.Sprintf("slot-%d.lock", s)), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, false, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, false, nil
		}
		return nil, false, fmt.Errorf("lock testbed slot %d: %w", s, err)
	}
	fmt.Fprintf(f, "%d\n", os.Getpid())
	return f, true, nil
}

var slotName = regexp.MustCompile(`^` + Prefix + `(\d+)(?:-|v\d+$|$)`)

// CleanLeftovers removes the namespaces, links and processes of every slot that no live
// run holds (a run killed before its cleanup). Slots held by a live process, in this
// process or another, are left alone.
func CleanLeftovers(ctx context.Context) {
	slots := map[int]bool{}
	for _, name := range leftoverNames(ctx) {
		if m := slotName.FindStringSubmatch(name); m != nil {
			s, _ := strconv.Atoi(m[1])
			slots[s] = true
		}
	}
	for s := range slots {
		f, ok, err := lockSlot(s)
		if err != nil || !ok {
			continue
		}
		removeSlot(ctx, s)
		f.Close()
	}
}

// leftoverNames lists namespaces and links whose names start with the prefix.
func leftoverNames(ctx context.Context) []string {
	var names []string
	if out, err := output(ctx, "ip", "netns", "list"); err == nil {
		for _, l := range strings.Split(out, "\n") {
			if f := strings.Fields(l); len(f) > 0 && strings.HasPrefix(f[0], Prefix) {
				names = append(names, f[0])
			}
		}
	}
	if out, err := output(ctx, "ip", "-o", "link", "show"); err == nil {
		for _, l := range strings.Split(out, "\n") {
			f := strings.Fields(l)
			if len(f) < 2 {
				continue
			}
			name, _, _ := strings.Cut(strings.TrimSuffix(f[1], ":"), "@")
			if strings.HasPrefix(name, Prefix) {
				names = append(names, name)
			}
		}
	}
	sort.Strings(names)
	return names
}

// removeSlot kills the processes in slot s's namespaces, deletes the namespaces (their
// veth ends go with them) and the slot's links. The caller holds the slot's lock.
func removeSlot(ctx context.Context, s int) {
	for _, name := range leftoverNames(ctx) {
		m := slotName.FindStringSubmatch(name)
		if m == nil || m[1] != strconv.Itoa(s) {
			continue
		}
		if strings.Contains(name, "-") { // a namespace
			killNamespace(ctx, name)
			_ = run(ctx, "ip", "netns", "del", name)
			continue
		}
		_ = run(ctx, "ip", "link", "del", name)
	}
}

// killNamespace sends SIGKILL to every process in the namespace and waits (bounded) until
// they are gone: a namespace with processes outlives `ip netns del`.
func killNamespace(ctx context.Context, ns string) {
	waitfor.Poll(10*time.Second, func() bool {
		out, err := output(ctx, "ip", "netns", "pids", ns)
		if err != nil || strings.TrimSpace(out) == "" {
			return true
		}
		for _, f := range strings.Fields(out) {
			if pid, err := strconv.Atoi(f); err == nil && pid > 1 && pid != os.Getpid() {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
		return false
	})
}

func run(ctx context.Context, name string, args ...string) error {
	_, err := output(ctx, name, args...)
	return err
}

func output(ctx context.Context, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return out.String(), nil
}

// Exec runs a command inside the node's namespace and returns its standard output.
func (nd *Node) Exec(ctx context.Context, name string, args ...string) (string, error) {
	return output(ctx, "ip", append([]string{"netns", "exec", nd.NS, name}, args...)...)
}
