//! CIDR access control: allow, deny (deny wins), and which peers are trusted proxies.
//!
//! The rules live in two binary prefix tries, one per address family. An IPv4-mapped IPv6
//! peer, as a dual-stack `[::]` listener reports it, is looked up as IPv4, and a rule written
//! inside `::ffff:0:0/96` is stored as the IPv4 rule it names. An IPv6 rule wider than that
//! range (`::/0`, `::/8`) holds IPv6 addresses only, as `ipnet` would have it: IPv4 clients
//! do not fall under it. A lookup walks at most 128 nodes whatever the number of rules, and
//! takes no lock: the tries are immutable, and a reload builds new ones.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use http::header::{GetAll, HeaderValue};
use ipnet::IpNet;

use crate::config::AccessSettings;

const ALLOW: u8 = 1;
const DENY: u8 = 2;
const TRUSTED: u8 = 4;

/// The outcome of the access check for one client address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// In an allow range, or no allow list is set, and in no deny range.
    Allowed,
    /// In a deny range (whatever the allow list says).
    Denied,
    /// Outside every allow range.
    NotAllowed,
}

impl Decision {
    /// The word written in the access log.
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Allowed => "allow",
            Decision::Denied => "deny",
            Decision::NotAllowed => "not-allowed",
        }
    }

    /// Whether the request may go on.
    pub fn is_allowed(self) -> bool {
        self == Decision::Allowed
    }
}

/// The address a decision is made on, and how it was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Client {
    /// Canonical (IPv4-mapped addresses in their IPv4 form).
    pub ip: IpAddr,
    /// True when `ip` was taken from `X-Forwarded-For` sent by a trusted proxy.
    pub forwarded: bool,
    /// True when the TCP peer is a trusted proxy.
    pub peer_trusted: bool,
}

/// The compiled access rules.
#[derive(Debug, Clone)]
pub struct AccessRules {
    v4: Trie,
    v6: Trie,
    allow_all: bool,
    any_trusted: bool,
}

impl AccessRules {
    /// Compiles the rules of `[access]`.
    pub fn new(settings: &AccessSettings) -> AccessRules {
        let (mut v4, mut v6) = (Trie::default(), Trie::default());
        let lists = [
            (&settings.allow, ALLOW),
            (&settings.deny, DENY),
            (&settings.trusted_proxies, TRUSTED),
        ];
        for (nets, flag) in lists {
            for net in nets {
                match net_key(*net) {
                    (Family::V4, bits, len) => v4.insert(bits, len, flag),
                    (Family::V6, bits, len) => v6.insert(bits, len, flag),
                }
            }
        }
        AccessRules {
            v4,
            v6,
            allow_all: settings.allow.is_empty(),
            any_trusted: !settings.trusted_proxies.is_empty(),
        }
    }

    /// Decides on one (already canonical or not) address.
    pub fn decide(&self, ip: IpAddr) -> Decision {
        self.decision_for(self.flags(ip))
    }

    fn flags(&self, ip: IpAddr) -> u8 {
        match canonical(ip) {
            IpAddr::V4(v4) => self.v4.lookup(u128::from(u32::from(v4)) << 96),
            IpAddr::V6(v6) => self.v6.lookup(u128::from(v6)),
        }
    }

    fn decision_for(&self, flags: u8) -> Decision {
        if flags & DENY != 0 {
            Decision::Denied
        } else if self.allow_all || flags & ALLOW != 0 {
            Decision::Allowed
        } else {
            Decision::NotAllowed
        }
    }

    /// Whether `ip` is in `trusted_proxies`.
    pub fn is_trusted_proxy(&self, ip: IpAddr) -> bool {
        self.any_trusted && self.flags(ip) & TRUSTED != 0
    }

    /// Finds the client behind `peer`: the peer itself, unless the peer is a trusted proxy, in
    /// which case the right-most `X-Forwarded-For` address that is not a trusted proxy. An
    /// entry that is not an address ends the walk at the last address that was one.
    pub fn client(&self, peer: IpAddr, forwarded_for: GetAll<'_, HeaderValue>) -> Client {
        let peer = canonical(peer);
        let mut client = Client {
            ip: peer,
            forwarded: false,
            peer_trusted: self.is_trusted_proxy(peer),
        };
        if !client.peer_trusted {
            return client;
        }
        // Header values are walked right to left, and entries in each value right to left.
        for value in forwarded_for.iter().rev() {
            let Ok(text) = value.to_str() else {
                return client;
            };
            for entry in text.rsplit(',') {
                let Some(ip) = parse_forwarded_entry(entry) else {
                    return client;
                };
                client.ip = canonical(ip);
                client.forwarded = true;
                if !self.is_trusted_proxy(client.ip) {
                    return client;
                }
            }
        }
        client
    }
}

/// Reads one `X-Forwarded-For` entry: a bare address, a bracketed IPv6 address with or without
/// a port, or an IPv4 address with a port.
fn parse_forwarded_entry(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    if let Ok(ip) = entry.parse() {
        return Some(ip);
    }
    if let Some(rest) = entry.strip_prefix('[') {
        let (inside, _) = rest.split_once(']')?;
        return inside.parse::<Ipv6Addr>().ok().map(IpAddr::V6);
    }
    let (host, _port) = entry.rsplit_once(':')?;
    host.parse::<Ipv4Addr>().ok().map(IpAddr::V4)
}

/// The address as it is matched and logged: IPv4-mapped IPv6 becomes IPv4.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

enum Family {
    V4,
    V6,
}

/// A rule as (family, bits left-aligned in 128, prefix length); a rule inside
/// `::ffff:0:0/96` is the IPv4 rule it names.
fn net_key(net: IpNet) -> (Family, u128, u8) {
    match net {
        IpNet::V4(n) => (
            Family::V4,
            u128::from(u32::from(n.network())) << 96,
            n.prefix_len(),
        ),
        IpNet::V6(n) => match n.network().to_ipv4_mapped() {
            Some(v4) if n.prefix_len() >= 96 => (
                Family::V4,
                u128::from(u32::from(v4)) << 96,
                n.prefix_len() - 96,
            ),
            _ => (Family::V6, u128::from(n.network()), n.prefix_len()),
        },
    }
}

/// A binary trie; node 0 is the root, and a child index of 0 means "no child" (the root is no
/// one's child).
#[derive(Debug, Clone)]
struct Trie {
    children: Vec<[u32; 2]>,
    flags: Vec<u8>,
}

impl Default for Trie {
    fn default() -> Self {
        Trie {
            children: vec![[0, 0]],
            flags: vec![0],
        }
    }
}

impl Trie {
    fn insert(&mut self, bits: u128, len: u8, flag: u8) {
        let mut node = 0usize;
        for depth in 0..len {
            let bit = ((bits >> (127 - depth)) & 1) as usize;
            let next = self.children[node][bit];
            node = if next == 0 {
                let index = self.children.len();
                self.children.push([0, 0]);
                self.flags.push(0);
                self.children[node][bit] = u32::try_from(index).expect("fewer than 2^32 nodes");
                index
            } else {
                next as usize
            };
        }
        self.flags[node] |= flag;
    }

    /// The union of the flags of every prefix containing `bits`.
    fn lookup(&self, bits: u128) -> u8 {
        let mut node = 0usize;
        let mut flags = self.flags[0];
        for depth in 0..128 {
            let bit = ((bits >> (127 - depth)) & 1) as usize;
            let next = self.children[node][bit];
            if next == 0 {
                break;
            }
            node = next as usize;
            flags |= self.flags[node];
        }
        flags
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderMap;

    fn rules(allow: &[&str], deny: &[&str], trusted: &[&str]) -> AccessRules {
        let nets = |l: &[&str]| l.iter().map(|s| s.parse().unwrap()).collect();
        AccessRules::new(&AccessSettings {
            allow: nets(allow),
            deny: nets(deny),
            trusted_proxies: nets(trusted),
        })
    }

    #[test]
    fn deny_wins_and_mapped_addresses_match_ipv4_rules() {
        let r = rules(
            &["203.0.113.0/28", "2001:db8::/32"],
            &["203.0.113.5/32"],
            &[],
        );
        assert_eq!(r.decide("203.0.113.10".parse().unwrap()), Decision::Allowed);
        assert_eq!(
            r.decide("::ffff:203.0.113.10".parse().unwrap()),
            Decision::Allowed
        );
        assert_eq!(r.decide("203.0.113.5".parse().unwrap()), Decision::Denied);
        assert_eq!(
            r.decide("203.0.113.200".parse().unwrap()),
            Decision::NotAllowed
        );
        assert_eq!(r.decide("2001:db8::1".parse().unwrap()), Decision::Allowed);
        assert_eq!(
            r.decide("2001:db9::1".parse().unwrap()),
            Decision::NotAllowed
        );
    }

    #[test]
    fn empty_allow_means_everyone_and_zero_prefix_matches_all() {
        let r = rules(&[], &["0.0.0.0/0"], &[]);
        assert_eq!(r.decide("::1".parse().unwrap()), Decision::Allowed);
        assert_eq!(r.decide("192.0.2.1".parse().unwrap()), Decision::Denied);
    }

    #[test]
    fn wide_ipv6_rules_hold_no_ipv4_clients_and_mapped_rules_are_ipv4_rules() {
        // ::/0 and ::/8 contain ::ffff:0:0/96 as bits, but not IPv4 addresses.
        let r = rules(&["::/0"], &["::/8"], &[]);
        assert_eq!(r.decide("2001:db8::1".parse().unwrap()), Decision::Allowed);
        assert_eq!(r.decide("::1".parse().unwrap()), Decision::Denied);
        assert_eq!(r.decide("192.0.2.1".parse().unwrap()), Decision::NotAllowed);
        assert_eq!(
            r.decide("::ffff:192.0.2.1".parse().unwrap()),
            Decision::NotAllowed
        );
        // A rule written in the mapped range is the IPv4 rule it names, /96 is all of IPv4.
        let r = rules(&["::ffff:192.0.2.0/120"], &["::ffff:0:0/96"], &[]);
        assert_eq!(r.decide("192.0.2.1".parse().unwrap()), Decision::Denied);
        let r = rules(&["::ffff:192.0.2.0/120"], &[], &[]);
        assert_eq!(r.decide("192.0.2.1".parse().unwrap()), Decision::Allowed);
        assert_eq!(r.decide("192.0.3.1".parse().unwrap()), Decision::NotAllowed);
        // /32 and /128 rules are single addresses; 0.0.0.0/0 is IPv4 only.
        let r = rules(&["0.0.0.0/0"], &["192.0.2.1/32", "2001:db8::1/128"], &[]);
        assert_eq!(r.decide("192.0.2.1".parse().unwrap()), Decision::Denied);
        assert_eq!(r.decide("192.0.2.2".parse().unwrap()), Decision::Allowed);
        assert_eq!(
            r.decide("2001:db8::2".parse().unwrap()),
            Decision::NotAllowed
        );
        assert_eq!(r.decide("2001:db8::1".parse().unwrap()), Decision::Denied);
    }

    #[test]
    fn forwarded_for_is_read_only_from_trusted_proxies() {
        let r = rules(&[], &[], &["10.0.0.0/8"]);
        let mut h = HeaderMap::new();
        h.append("x-forwarded-for", "198.51.100.7, 10.1.1.1".parse().unwrap());
        h.append("x-forwarded-for", "10.2.2.2".parse().unwrap());
        let c = r.client("10.0.0.1".parse().unwrap(), h.get_all("x-forwarded-for"));
        assert_eq!(c.ip, "198.51.100.7".parse::<IpAddr>().unwrap());
        assert!(c.forwarded);
        let c = r.client("192.0.2.1".parse().unwrap(), h.get_all("x-forwarded-for"));
        assert_eq!(c.ip, "192.0.2.1".parse::<IpAddr>().unwrap());
        assert!(!c.forwarded);
    }
}
