// Package sockmap is the gateway's in-kernel copy path (Linux): once a connection is
// routed, its two sockets enter a BPF sockhash whose sk_skb stream verdict program
// (bpf/redirect.c) redirects every byte that arrives on one socket to the other's send side,
// so the bytes never wake user space.
//
// User space keeps what the kernel does not do by itself:
//
//   - End of stream. The kernel redirects data, not FIN. A dedicated epoll instance
//     watches each socket for EPOLLRDHUP/EPOLLERR only (data arrival does not match those
//     events, so it wakes nobody). On EOF from one side, the bytes already redirected may
//     still sit in the peer's psock queue, sent by a kernel worker: the peer's write side is
//     shut only once everything redirected to it (counted by the program) has entered its
//     send queue (TCP_INFO bytes_acked + SIOCOUTQ, from a baseline taken at setup); then
//     the other direction goes on until its own EOF, and both sockets are closed.
//   - Idle timeout: the program records when it last moved bytes; a timer per connection
//     checks that stamp (one map lookup per timeout period), no reads.
//   - Backpressure: the redirect has none (bytes wait in the peer's psock queue while the
//     sender's window stays open). The program measures the peer's backlog and, past
//     BACKLOG_MAX, holds the socket's later bytes in its own queue (the window closes);
//     user space then moves that direction itself, after the kernel's earlier bytes, with
//     blocking writes. Only the verdict may stop a redirect: deleting the socket from the
//     sockhash races with a verdict on another CPU, which the kernel then drops.
//   - Byte counters: per source socket in a BPF hash map, read on demand (scrape) and when
//     the connection ends.
//   - Order: the peer map (redirect targets) is filled before any socket joins the source
//     map. What the client side has queued is read and sent after the caller's first bytes
//     (the verdict takes queued segments whole, so one the caller read part of would be sent
//     twice, TestPartlyReadSegment); bytes arriving later, and whatever the upstream side
//     sent before joining, stay in the receive queue and are swept, in order, when the
//     socket joins (setting SO_RCVLOWAT re-runs data_ready), so nothing is reordered,
//     repeated or stranded.
//
// Probe tells whether this kernel and process can use it (BPF syscall, sockhash, sk_skb,
// CAP_BPF or CAP_NET_ADMIN), and why not.
package sockmap
