//! The kernel turns away hosts that hold their connection cap, so a refused client's
//! retries cost the engine nothing.
//!
//! A connection refused at accept (the host holds `MAX_CONNECTIONS_PER_HOST`) still costs
//! an accept, a canned 503 and a close on a shard thread, and the client's new attempt
//! comes right back: a few hosts reconnecting in a loop made ~10,000 refusals a second in
//! `loadtest/hostile.sh`, work queued ahead of every honest request on the same threads.
//! So once a host is refused, its address goes into a classic BPF socket filter on every
//! listener: the kernel drops that host's connection attempts (its SYNs) before they
//! reach an accept queue, and the client's TCP stack retries them on its own back-off
//! (1 s, 2 s, 4 s, ...). The host is let in again once it holds at most
//! [`reopen_at`] connections: the first refusal is answered (503, the clear message),
//! the retries are not.
//!
//! The filter is a list of addresses, [`GATED_HOSTS_MAX`] at most (a filter has at most
//! 4,096 instructions); hosts beyond it are refused at accept as before. Children of a
//! listener inherit its filter at the handshake, so an accepted connection drops it
//! ([`SynGate::detach`]): an established connection's packets are never filtered.
//!
//! Filters need no privilege (`SO_ATTACH_FILTER`); if the kernel refuses one anyway
//! (a seccomp policy, a kernel without BPF), the gate says so once and stays open, and
//! refusals stay at accept.

use std::collections::BTreeSet;
use std::io;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use prometheus::IntGauge;
use socket2::{SockFilter, SockRef, Socket};

/// Hosts the filter names at most: 5 instructions each for an IPv6 /64, so the program
/// stays far below the kernel's 4,096 instructions.
pub const GATED_HOSTS_MAX: usize = 256;

/// Connections a gated host may hold before it is let in again: 7/8 of its cap, so a
/// host at the cap whose connections come and go one by one does not flip the filter
/// (and rebuild every listener's program) at each of them.
pub fn reopen_at(host_max: usize) -> usize {
    host_max - host_max.div_ceil(8)
}

/// Every listener's filter and the hosts it names.
pub struct SynGate {
    /// The listeners (a duplicate of each descriptor, dropped when its accept loop ends)
    /// and the hosts their program names now. One lock: whoever installs a program last
    /// builds it from the latest set ([`SynGate::install`]).
    state: Mutex<GateState>,
    /// A filter was installed at least once: accepted connections may carry one.
    used: AtomicBool,
    /// The kernel refused a filter: the gate stays open from then on.
    failed: AtomicBool,
    /// Hosts the installed program names, for the metrics.
    gated_hosts: IntGauge,
}

#[derive(Default)]
struct GateState {
    /// Listeners by registration number.
    listeners: Vec<(u64, Socket)>,
    next_id: u64,
    /// Hosts the installed program drops.
    installed: BTreeSet<IpAddr>,
}

/// A listener's place in the gate; dropping it forgets the listener (and closes the
/// gate's duplicate of its descriptor, so the socket closes with its accept loop).
pub struct Registration {
    gate: Arc<SynGate>,
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut state = self.gate.lock();
        state.listeners.retain(|(id, _)| *id != self.id);
    }
}

impl SynGate {
    pub fn new(gated_hosts: IntGauge) -> Self {
        SynGate {
            state: Mutex::default(),
            used: AtomicBool::new(false),
            failed: AtomicBool::new(false),
            gated_hosts,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, GateState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds `listener` to the gate, with the program in force now.
    pub fn register(
        self: &Arc<Self>,
        listener: &std::net::TcpListener,
    ) -> io::Result<Registration> {
        let socket = Socket::from(listener.try_clone()?);
        let mut state = self.lock();
        if !state.installed.is_empty() {
            self.attach(&socket, &program(&state.installed));
        }
        let id = state.next_id;
        state.next_id += 1;
        state.listeners.push((id, socket));
        Ok(Registration {
            gate: self.clone(),
            id,
        })
    }

    /// Makes every listener drop exactly `hosts` (the caller's latest view, read while
    /// this call holds the gate's lock, so the last install wins with the latest set).
    /// The caller keeps `hosts` within [`GATED_HOSTS_MAX`].
    pub fn install(&self, hosts: impl FnOnce() -> BTreeSet<IpAddr>) {
        if self.failed.load(Ordering::Acquire) {
            return;
        }
        let mut state = self.lock();
        let hosts = hosts();
        assert!(
            hosts.len() <= GATED_HOSTS_MAX,
            "a program names {GATED_HOSTS_MAX} hosts at most"
        );
        if hosts == state.installed {
            return;
        }
        if hosts.is_empty() {
            for (_, socket) in &state.listeners {
                let _ = socket.detach_filter();
            }
        } else {
            self.used.store(true, Ordering::Release);
            let program = program(&hosts);
            for (_, socket) in &state.listeners {
                self.attach(socket, &program);
            }
            if self.failed.load(Ordering::Acquire) {
                // Refused at accept instead: nobody is gated, on any listener.
                for (_, socket) in &state.listeners {
                    let _ = socket.detach_filter();
                }
                state.installed.clear();
                self.gated_hosts.set(0);
                return;
            }
        }
        self.gated_hosts.set(hosts.len() as i64);
        state.installed = hosts;
    }

    fn attach(&self, socket: &Socket, program: &[SockFilter]) {
        if let Err(e) = socket.attach_filter(program) {
            if !self.failed.swap(true, Ordering::AcqRel) {
                tracing::warn!(
                    error = %e,
                    "cannot install the connection filter: hosts at MAX_CONNECTIONS_PER_HOST are refused at accept instead"
                );
            }
            let _ = socket.detach_filter();
        }
    }

    /// Removes the filter an accepted connection inherited from its listener, so its
    /// own packets are never judged by it; nothing to do before the gate was first used.
    pub fn detach(&self, stream: &tokio::net::TcpStream) {
        if self.used.load(Ordering::Acquire) {
            let _ = SockRef::from(stream).detach_filter();
        }
    }
}

// Classic BPF, as <linux/filter.h> spells it.
const BPF_LD: u16 = 0x00;
const BPF_ALU: u16 = 0x04;
const BPF_JMP: u16 = 0x05;
const BPF_RET: u16 = 0x06;
const BPF_W: u16 = 0x00;
const BPF_B: u16 = 0x10;
const BPF_ABS: u16 = 0x20;
const BPF_RSH: u16 = 0x70;
const BPF_JA: u16 = 0x00;
const BPF_JEQ: u16 = 0x10;
const BPF_K: u16 = 0x00;
/// Loads at `SKF_NET_OFF + n` read the packet's IP header (a TCP socket's filter sees the
/// packet from its TCP header on).
const SKF_NET_OFF: i32 = -0x10_0000;
/// A filter's verdicts: keep the whole packet, or drop it.
const KEEP: u32 = u32::MAX;
const DROP: u32 = 0;

fn net_offset(bytes: i32) -> u32 {
    (SKF_NET_OFF + bytes) as u32
}

/// The program: read the IP version; for IPv4 compare the source address (bytes 12-15
/// of the header) with each gated IPv4 host, for IPv6 the source's first 64 bits (bytes
/// 8-15) with each gated /64 ([`crate::host_budget::client_host`]); drop on a match.
fn program(hosts: &BTreeSet<IpAddr>) -> Vec<SockFilter> {
    let ld_byte = |off| SockFilter::new(BPF_LD | BPF_B | BPF_ABS, 0, 0, net_offset(off));
    let ld_word = |off| SockFilter::new(BPF_LD | BPF_W | BPF_ABS, 0, 0, net_offset(off));
    // "If A == k, go on to the next instruction (a drop), else skip it."
    let jeq_next = |k, skip| SockFilter::new(BPF_JMP | BPF_JEQ | BPF_K, 0, skip, k);
    let ret = |verdict| SockFilter::new(BPF_RET | BPF_K, 0, 0, verdict);
    let ja = |offset: usize| SockFilter::new(BPF_JMP | BPF_JA, 0, 0, offset as u32);

    let mut v4 = vec![ld_word(12)];
    let mut v6 = Vec::new();
    for host in hosts {
        match host {
            IpAddr::V4(a) => {
                v4.extend([jeq_next(u32::from(*a), 1), ret(DROP)]);
            }
            IpAddr::V6(a) => {
                let prefix = u128::from(*a) >> 64;
                let (high, low) = ((prefix >> 32) as u32, prefix as u32);
                // Source bytes 8-11, then 12-15; a mismatch of the first skips the rest.
                v6.extend([
                    ld_word(8),
                    jeq_next(high, 3),
                    ld_word(12),
                    jeq_next(low, 1),
                    ret(DROP),
                ]);
            }
        }
    }
    v4.push(ret(KEEP));
    v6.push(ret(KEEP));
    // The header: version = first byte >> 4; 4 jumps to the IPv4 list, 6 to the IPv6
    // list (long jumps: a conditional jump reaches 255 instructions at most).
    let mut program = vec![
        ld_byte(0),
        SockFilter::new(BPF_ALU | BPF_RSH | BPF_K, 0, 0, 4),
        jeq_next(4, 1),
        ja(3),            // IPv4: to v4, 3 instructions on
        jeq_next(6, 1),   // otherwise
        ja(1 + v4.len()), // IPv6: past the keep below and the IPv4 list
        ret(KEEP),        // neither (cannot happen on a TCP socket): keep
    ];
    program.extend(v4);
    program.extend(v6);
    program
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{SocketAddr, TcpListener};
    use std::time::Duration;

    fn gate() -> Arc<SynGate> {
        Arc::new(SynGate::new(IntGauge::new("gated", "gated").unwrap()))
    }

    /// The address the gate names for `s`'s host: an IPv4 address or an IPv6 /64.
    fn host(s: &str) -> IpAddr {
        crate::host_budget::client_host(s.parse().unwrap())
    }

    /// Connects from `source` to `listener` within `timeout`: true when the handshake
    /// completed (the kernel answered the SYN).
    fn connects(source: &str, to: SocketAddr, timeout: Duration) -> bool {
        let socket = Socket::new(
            socket2::Domain::for_address(to),
            socket2::Type::STREAM,
            None,
        )
        .expect("a socket");
        socket
            .bind(&SocketAddr::new(source.parse().unwrap(), 0).into())
            .expect("a loopback source");
        socket.connect_timeout(&to.into(), timeout).is_ok()
    }

    #[test]
    fn the_kernel_drops_the_gated_hosts_connections_and_only_theirs() {
        let gate = gate();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let _registration = gate.register(&listener).unwrap();
        let wait = Duration::from_millis(300);
        assert!(connects("127.0.0.2", addr, wait), "nobody gated yet");

        gate.install(|| [host("127.0.0.2"), host("2001:db8::")].into());
        assert_eq!(gate.gated_hosts.get(), 2);
        assert!(
            !connects("127.0.0.2", addr, wait),
            "a gated host's SYN is dropped"
        );
        assert!(connects("127.0.0.3", addr, wait), "another host is let in");
        assert!(connects("127.0.0.1", addr, wait));

        gate.install(BTreeSet::new);
        assert_eq!(gate.gated_hosts.get(), 0);
        assert!(connects("127.0.0.2", addr, wait), "let in again");
    }

    #[test]
    fn a_listener_registered_later_gets_the_program_in_force() {
        let gate = gate();
        gate.install(|| [host("127.0.0.4")].into());
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let registration = gate.register(&listener).unwrap();
        assert!(!connects("127.0.0.4", addr, Duration::from_millis(300)));
        drop(registration);
        assert_eq!(gate.lock().listeners.len(), 0, "forgotten with its loop");
    }

    #[test]
    fn an_ipv6_64_is_gated_whole_and_nothing_else() {
        let Ok(listener) = TcpListener::bind("[::1]:0") else {
            liveops_testkit::skip_or_fail(
                "an_ipv6_64_is_gated_whole_and_nothing_else",
                "no IPv6 loopback (::1) on this machine",
            );
            return;
        };
        let gate = gate();
        let addr = listener.local_addr().unwrap();
        let _registration = gate.register(&listener).unwrap();
        let wait = Duration::from_millis(300);
        gate.install(|| [host("::")].into());
        assert!(!connects("::1", addr, wait), "::1 is in the /64 ::");
        gate.install(|| [host("2001:db8::")].into());
        assert!(connects("::1", addr, wait), "another /64");
    }

    #[test]
    fn a_gated_host_is_let_in_again_below_seven_eighths_of_its_cap() {
        assert_eq!(reopen_at(1), 0);
        assert_eq!(reopen_at(8), 7);
        assert_eq!(reopen_at(1218), 1065);
    }
}
