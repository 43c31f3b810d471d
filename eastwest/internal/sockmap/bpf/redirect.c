// SPDX-License-Identifier: (MIT OR GPL-2.0-only)
//
// The sockmap fast path of the east-west gateway: once a connection is routed, both of
// its sockets enter these maps and the kernel moves every byte from one to the other.
//
//   peers:   sockhash, key = the socket cookie of a source socket, value = the socket its
//            bytes go to. No program is attached to it: it only names redirect targets.
//   sources: sockhash holding the sockets whose incoming bytes are redirected; the stream
//            verdict program below is attached to it. Its keys are the sockets' own cookies.
//   stats:   per source socket (key = cookie): bytes redirected and when last.
//
// A socket joins sources only after its peer is in peers, so the verdict always finds a
// target; if it does not (a teardown race), the bytes are passed to the socket itself
// (user space can read them) and counted in misses.

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct conn_stat {
	__u64 bytes;    // bytes redirected from this socket to its peer
	__u64 last_ns;  // bpf_ktime_get_ns() of the last redirect (CLOCK_MONOTONIC)
	__u64 off;      // set by user space: the peer's "written" figure when bytes was 0
	__u64 checked;  // bytes when the peer's backlog was last looked at
	__u64 held;     // 1 once the peer fell behind: this socket's bytes stay with it
	__u64 held_bytes; // bytes kept for user space since then
};

// The kernel's redirect has no backpressure: bytes taken from this socket's receive
// queue wait in the peer's psock queue, unbounded, while the sender's window stays open.
// So every CHECK_EVERY bytes the program measures the peer's backlog (redirected minus
// what has entered the peer's send queue); above BACKLOG_MAX it stops redirecting this
// socket for good (held) and tells user space through the events ring buffer. From then
// on each of its segments is passed to the socket itself: it waits in the socket's own
// queue, charged to its receive buffer, so TCP's window closes and holds the sender back,
// and user space moves it to the peer once the peer has taken everything redirected
// before it (order kept), with its own blocking writes as the backpressure.
//
// The program decides this itself, in the verdict: taking the socket out of the sockhash
// from user space instead would race with a verdict running on another CPU, which the
// kernel then finds with no program and drops (bytes lost, TestBackpressure).
#define CHECK_EVERY (256 << 10)
#define BACKLOG_MAX (4 << 20)

// The fields of the kernel's tcp_sock read here (CO-RE: relocated against the running
// kernel's BTF at load).
struct tcp_sock {
	__u32 write_seq;
	__u32 snd_una;
	__u64 bytes_acked;
} __attribute__((preserve_access_index));

struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, 65536); // set by user space at load
	__type(key, __u64);
	__type(value, __u64);
} peers SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, __u64);
} sources SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct conn_stat);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} misses SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 64 << 10);
} events SEC(".maps");

static __always_inline void check_backlog(__u64 cookie, struct conn_stat *st)
{
	if (st->bytes - st->checked < CHECK_EVERY)
		return;
	st->checked = st->bytes;
	struct bpf_sock *sk = bpf_map_lookup_elem(&peers, &cookie);
	if (!sk)
		return;
	struct tcp_sock *tp = bpf_skc_to_tcp_sock(sk);
	__u64 written = 0;
	if (tp)
		written = tp->bytes_acked + (__u32)(tp->write_seq - tp->snd_una);
	bpf_sk_release(sk);
	if (!tp)
		return;
	__u64 backlog = st->bytes + st->off - written;
	if ((__s64)backlog > BACKLOG_MAX) {
		st->held = 1;
		bpf_ringbuf_output(&events, &cookie, sizeof(cookie), 0);
	}
}

SEC("sk_skb/stream_verdict")
int redirect(struct __sk_buff *skb)
{
	__u64 cookie = bpf_get_socket_cookie(skb);
	__u32 len = skb->len;

	// An skb with no bytes carries only a FIN (the kernel has already marked the socket
	// shut for reading, which user space sees as EPOLLRDHUP). Redirected, it would reach
	// the peer after user space has shut the peer's write side, and fail there with EPIPE.
	if (len == 0)
		return SK_DROP;

	struct conn_stat *st = bpf_map_lookup_elem(&stats, &cookie);
	if (st && st->held) {
		// Held (see check_backlog): the segment stays with this socket, for user space.
		// One verdict at a time per socket (it runs under the socket's lock), so plain
		// updates of this socket's entry do not race with each other.
		st->held_bytes += len;
		st->last_ns = bpf_ktime_get_ns();
		return SK_PASS; // no redirect set: to this socket's own queue
	}
	if (bpf_sk_redirect_hash(skb, &peers, &cookie, 0) != SK_PASS) {
		__u32 zero = 0;
		__u64 *m = bpf_map_lookup_elem(&misses, &zero);
		if (m)
			__sync_fetch_and_add(m, 1);
		return SK_PASS; // no redirect set: the bytes stay with this socket
	}
	if (st) {
		st->bytes += len;
		st->last_ns = bpf_ktime_get_ns();
		check_backlog(cookie, st);
	}
	return SK_PASS; // redirect set: to the peer's egress
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
