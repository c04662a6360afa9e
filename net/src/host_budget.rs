//! Budgets per client host: a token bucket each, so that no single host can use up work
//! the engine shares among all its clients (today: leaderboard reads, whose cost grows
//! with the page size).
//!
//! A host is an IPv4 address, or the /64 prefix of an IPv6 address ([`client_host`]).
//! The map of buckets is bounded: when it is full, buckets that have refilled (and so
//! remember nothing) are dropped first; if none has, the oldest quarter is dropped. A
//! dropped host starts again with a full bucket: memory stays bounded however many
//! addresses an attacker uses, at the price of some lenience to those addresses.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Mutex;

/// The client host a request is charged to: its IPv4 address, or the /64 prefix of its
/// IPv6 address (one host usually holds a whole /64, so counting its addresses apart
/// would let it multiply its share).
pub fn client_host(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let prefix = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(Ipv6Addr::from(prefix))
        }
        v4 => v4,
    }
}

/// One host's bucket.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// Tokens left as of `updated_ms`, at most the burst.
    tokens: f64,
    /// When `tokens` was last brought up to date.
    updated_ms: u64,
}

/// Token buckets per client host, `rate_per_s` tokens a second each, bursts up to one
/// second's worth.
#[derive(Debug)]
pub struct HostBudget {
    /// Tokens each host earns per second; also its burst.
    rate_per_s: u64,
    /// Hosts remembered at most (bounds memory).
    hosts_max: usize,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

impl HostBudget {
    pub fn new(rate_per_s: u64, hosts_max: usize) -> Self {
        assert!(
            rate_per_s > 0 && hosts_max > 0,
            "a budget needs a rate and room"
        );
        HostBudget {
            rate_per_s,
            hosts_max,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes `cost` tokens from `host`'s bucket at `now_ms`; when there are not enough,
    /// takes none and answers how long until there will be, in ms. A cost above the
    /// burst is charged as the whole burst, so any request can pass once refilled.
    pub fn take(&self, host: IpAddr, cost: u64, now_ms: u64) -> Result<(), u64> {
        let burst = self.rate_per_s as f64;
        let cost = (cost as f64).min(burst);
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if buckets.len() >= self.hosts_max && !buckets.contains_key(&host) {
            self.make_room(&mut buckets, now_ms);
        }
        let bucket = buckets.entry(host).or_insert(Bucket {
            tokens: burst,
            updated_ms: now_ms,
        });
        let earned = now_ms.saturating_sub(bucket.updated_ms) as f64 * burst / 1000.0;
        bucket.tokens = (bucket.tokens + earned).min(burst);
        bucket.updated_ms = bucket.updated_ms.max(now_ms);
        if bucket.tokens >= cost {
            bucket.tokens -= cost;
            Ok(())
        } else {
            let missing = cost - bucket.tokens;
            Err(((missing * 1000.0 / burst).ceil() as u64).max(1))
        }
    }

    /// Drops refilled buckets; if none was, the least recently used quarter.
    fn make_room(&self, buckets: &mut HashMap<IpAddr, Bucket>, now_ms: u64) {
        let refill_ms = 1000;
        buckets.retain(|_, b| now_ms.saturating_sub(b.updated_ms) < refill_ms);
        if buckets.len() >= self.hosts_max {
            let mut ages: Vec<u64> = buckets.values().map(|b| b.updated_ms).collect();
            let quarter = ages.len() / 4;
            let (_, cutoff, _) = ages.select_nth_unstable(quarter);
            let cutoff = *cutoff;
            buckets.retain(|_, b| b.updated_ms > cutoff);
        }
    }

    #[cfg(test)]
    fn hosts(&self) -> usize {
        self.buckets.lock().unwrap().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_client_host_is_an_ipv4_address_or_an_ipv6_64() {
        let v4 = ip("192.0.2.7");
        assert_eq!(client_host(v4), v4);
        assert_eq!(client_host(ip("::ffff:192.0.2.7")), v4, "IPv4-mapped");
        let (a, b) = (ip("2001:db8:1:2::1"), ip("2001:db8:1:2:ffff::9"));
        assert_eq!(client_host(a), client_host(b));
        assert_eq!(client_host(a), ip("2001:db8:1:2::"));
    }

    #[test]
    fn each_host_spends_its_own_budget_and_is_told_when_it_refills() {
        let budget = HostBudget::new(1000, 16);
        let (greedy, other) = (ip("127.0.0.2"), ip("127.0.0.3"));
        assert_eq!(budget.take(greedy, 600, 0), Ok(()));
        assert_eq!(budget.take(greedy, 400, 0), Ok(()));
        // Empty: 500 tokens come back in 500 ms.
        assert_eq!(budget.take(greedy, 500, 0), Err(500));
        assert_eq!(budget.take(greedy, 500, 250), Err(250));
        assert_eq!(
            budget.take(other, 1000, 250),
            Ok(()),
            "another host is untouched"
        );
        assert_eq!(budget.take(greedy, 500, 500), Ok(()));
        // A cost above the burst passes once the bucket is full, and empties it.
        assert_eq!(budget.take(greedy, 50_000, 5_000), Ok(()));
        assert_eq!(budget.take(greedy, 1, 5_000), Err(1));
    }

    #[test]
    fn the_map_of_hosts_stays_bounded() {
        let budget = HostBudget::new(10, 64);
        for i in 0..10_000u32 {
            let host = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            // Every host spends its whole burst, so none refills within the run.
            let _ = budget.take(host, 10, u64::from(i) / 100);
            assert!(budget.hosts() <= 64);
        }
    }
}
