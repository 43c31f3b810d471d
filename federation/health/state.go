package health

// State is a gateway address's health as the checker sees it.
type State uint8

const (
	// Unknown: not checked yet. The planner treats it as usable (static stability: a
	// restarted federation must not drop every remote cluster until its first checks).
	Unknown State = iota
	// Up: passing checks.
	Up
	// Down: failed FallThreshold checks in a row (timeouts, handshake failures).
	Down
	// HardDown: refused or reset connection, or the gateway said it is not ready or
	// draining: taken out at once, without waiting for FallThreshold failures.
	HardDown
)

// String is the lower-case name used in logs and metrics.
func (s State) String() string {
	switch s {
	case Up:
		return "up"
	case Down:
		return "down"
	case HardDown:
		return "hard-down"
	default:
		return "unknown"
	}
}

// Usable reports whether traffic may be sent to an address in this state.
func (s State) Usable() bool { return s == Unknown || s == Up }
