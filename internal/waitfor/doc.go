// Package waitfor is how tests wait: on a condition with a deadline, never on a sleep.
package waitfor
