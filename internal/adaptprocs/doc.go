// Package adaptprocs runs a process's Go scheduler on one P while the process needs less
// than about a core, and gives it back its default GOMAXPROCS when it needs more.
//
// Why: the east-west gateway's work per connection is a few wake-ups. With several Ps,
// the Go scheduler wakes a spinning thread for each goroutine it readies, which then finds
// nothing to do and sleeps again; at low and moderate connection rates that is most of the
// gateway's context switches (docs/benchmarks.md: 11.5 against 7.3 per connection at 200
// connections per second with GOMAXPROCS=1, and ~20 % less CPU per connection). A fixed
// GOMAXPROCS=1 would cap a busy gateway (and HBONE's TLS) at one core, so the controller
// watches the process's own CPU time and moves between the two: it goes to one P after
// its CPU use has stayed under Down cores for DownAfter, and back to the runtime's
// default (runtime.SetDefaultGOMAXPROCS: the CPU count or the cgroup's limit, kept up to
// date by the runtime) as soon as one Interval at one P uses more than Up cores.
//
// It is process-wide (GOMAXPROCS is), so it belongs to a program's main, never to a
// library that several instances share in one process.
package adaptprocs
