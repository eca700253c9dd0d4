//! Where webhooks may not go: a webhook URL is configuration, but it must not become a way into
//! the network ringcast runs in (server-side request forgery). Destinations on loopback,
//! private, link-local (cloud metadata at 169.254.169.254 among them), shared (CGNAT: Alibaba's
//! metadata at 100.100.100.200), unique-local (AWS's IPv6 metadata at fd00:ec2::254),
//! multicast, documentation, benchmarking and reserved addresses are refused unless the
//! endpoint sets `allow_private_destinations`.
//!
//! An address in the URL is checked at start-up; a name is checked as it resolves, on every
//! new connection, so a name that later resolves inside (DNS rebinding) is refused then: the
//! connection is made only to the addresses that passed.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Why `address` may not be a webhook's destination, or `None` when it is public.
pub fn private_class(address: IpAddr) -> Option<&'static str> {
    match address {
        IpAddr::V4(address) => private_class_v4(address),
        IpAddr::V6(address) => private_class_v6(address),
    }
}

fn private_class_v4(address: Ipv4Addr) -> Option<&'static str> {
    let [first, second, third, _] = address.octets();
    let class = match (first, second, third) {
        (0, _, _) => "unspecified",
        (10, _, _) | (172, 16..=31, _) | (192, 168, _) => "private",
        (127, _, _) => "loopback",
        (169, 254, _) => "link-local",
        (100, 64..=127, _) => "shared (CGNAT)",
        (192, 0, 0) => "reserved",
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => "documentation",
        (198, 18..=19, _) => "benchmarking",
        (224..=239, _, _) => "multicast",
        (240..=255, _, _) => "reserved",
        _ => return None,
    };
    Some(class)
}

fn private_class_v6(address: Ipv6Addr) -> Option<&'static str> {
    if address.is_unspecified() {
        return Some("unspecified");
    }
    if address.is_loopback() {
        return Some("loopback");
    }
    let segments = address.segments();
    // Addresses that carry an IPv4 address reach it: judge that one.
    let embedded = match segments {
        [0, 0, 0, 0, 0, 0xFFFF, high, low] => Some((high, low)), // IPv4-mapped
        [0, 0, 0, 0, 0, 0, high, low] => Some((high, low)),      // IPv4-compatible
        [0x64, 0xFF9B, 0, 0, 0, 0, high, low] => Some((high, low)), // NAT64
        [0x2002, high, low, ..] => Some((high, low)),            // 6to4
        _ => None,
    };
    if let Some((high, low)) = embedded {
        let v4 = Ipv4Addr::from((u32::from(high) << 16) | u32::from(low));
        return private_class_v4(v4);
    }
    let class = match segments[0] {
        0xFC00..=0xFDFF => "unique-local",
        0xFE80..=0xFEBF => "link-local",
        0xFF00..=0xFFFF => "multicast",
        0x2001 if segments[1] == 0x0DB8 => "documentation",
        _ => return None,
    };
    Some(class)
}

/// A name resolved only to refused addresses.
#[derive(Debug)]
pub struct DestinationRefused {
    pub host: String,
    pub address: IpAddr,
    pub class: &'static str,
}

impl std::fmt::Display for DestinationRefused {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            formatter,
            "{} resolves to {}, a {} address: refused (allow_private_destinations is off)",
            self.host, self.address, self.class
        )
    }
}

impl std::error::Error for DestinationRefused {}

/// Whether `error` (or what caused it) is a refused destination.
pub fn is_refused(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(error) = current {
        if error.is::<DestinationRefused>() {
            return true;
        }
        current = error.source();
    }
    false
}

/// Resolves names with the system's resolver (getaddrinfo on tokio's blocking threads) and
/// keeps only public addresses.
#[derive(Clone, Copy, Debug, Default)]
pub struct PublicOnlyResolver;

impl Resolve for PublicOnlyResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let resolved: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let mut refused = None;
            let public: Vec<SocketAddr> = resolved
                .into_iter()
                .filter(|address| match private_class(address.ip()) {
                    None => true,
                    Some(class) => {
                        refused.get_or_insert((address.ip(), class));
                        false
                    }
                })
                .collect();
            match (public.is_empty(), refused) {
                (true, Some((address, class))) => Err(Box::new(DestinationRefused {
                    host,
                    address,
                    class,
                })
                    as Box<dyn std::error::Error + Send + Sync>),
                _ => Ok(Box::new(public.into_iter()) as Addrs),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves the classes of the addresses an attacker would aim at, in both families and
    /// through IPv6 forms that carry an IPv4 address, and that public addresses pass.
    #[test]
    fn private_addresses_are_classified() {
        let cases = [
            ("127.0.0.1", Some("loopback")),
            ("10.1.2.3", Some("private")),
            ("172.31.255.255", Some("private")),
            ("192.168.0.1", Some("private")),
            ("169.254.169.254", Some("link-local")),
            ("100.100.100.200", Some("shared (CGNAT)")),
            ("0.0.0.0", Some("unspecified")),
            ("224.0.0.1", Some("multicast")),
            ("255.255.255.255", Some("reserved")),
            ("::1", Some("loopback")),
            ("::", Some("unspecified")),
            ("::ffff:127.0.0.1", Some("loopback")),
            ("::ffff:169.254.169.254", Some("link-local")),
            ("64:ff9b::10.0.0.1", Some("private")),
            ("2002:7f00:1::", Some("loopback")),
            ("fd00:ec2::254", Some("unique-local")),
            ("fe80::1", Some("link-local")),
            ("ff02::1", Some("multicast")),
            ("2001:db8::1", Some("documentation")),
            ("172.32.0.1", None),
            ("8.8.8.8", None),
            ("100.128.0.1", None),
            ("2606:4700::1111", None),
            ("::ffff:8.8.8.8", None),
        ];
        for (text, expected) in cases {
            let address: IpAddr = text.parse().unwrap();
            assert_eq!(private_class(address), expected, "{text}");
        }
    }
}
