package testbed

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// BinaryEnv names a prebuilt meshfed binary to use instead of building one (`make e2e`
// and `make bench` pass bin/meshfed).
const BinaryEnv = "MESHFED_BIN"

// Binary returns $MESHFED_BIN, or builds ./cmd/meshfed of the module at moduleDir into dir
// (static, without -race: the testbed measures the product, not the race detector).
func Binary(ctx context.Context, moduleDir, dir string) (string, error) {
	if b := os.Getenv(BinaryEnv); b != "" {
		abs, err := filepath.Abs(b)
		if err != nil {
			return "", err
		}
		if _, err := os.Stat(abs); err != nil {
			return "", fmt.Errorf("%s=%s: %w", BinaryEnv, b, err)
		}
		return abs, nil
	}
	out := filepath.Join(dir, "meshfed")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, "./cmd/meshfed")
	cmd.Dir = moduleDir
	cmd.Env = append(os.Environ(), "GOFLAGS=", "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/meshfed: %w\n%s", err, b)
	}
	return out, nil
}
