// Package rotation runs root rotation jobs: a resumable state machine stored at
// rotations/<td> that moves a trust domain from its current roots to a new root without an
// outage. Every transition is one etcd transaction comparing the mod revision of the job
// record (and of bundles/<td> when the bundle changes with it), so a job survives its own
// crash, two runners never both win a step, and a resumed job redoes only idempotent work.
//
//	preflight ──publish old+new (seq+1), lock──▶ wait-acks-both ──every cluster acked──▶
//	switch-issuer ──issuance on the new root──▶ drain ──longest SVID lifetime passed──▶
//	publish new only (seq+1) ──▶ wait-acks-new ──every cluster acked, unlock──▶ done
//
// An abort is possible until the old root is removed; it goes forward only (a new
// sequence with the old roots), moving issuance back first if it had moved.
//
// rotation.go has the entry points (Start, Ensure, Resume, Abort, ConfirmIssuer) and the
// job's creation, phases.go the phase dispatch, gates.go the ack gates, publish.go the
// bundle and job transactions.
package rotation
