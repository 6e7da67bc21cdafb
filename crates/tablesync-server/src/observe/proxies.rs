//! `trusted_proxies`: the peers whose `X-Forwarded-For` header is believed.

use std::net::IpAddr;

/// Addresses and networks (`"10.0.0.0/8"`, `"::1"`, `"127.0.0.1"`) of trusted proxies.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<(IpAddr, u8)>);

impl TrustedProxies {
    /// Parse the config's entries; the error names the first one that is not an address or
    /// `address/prefix-length`.
    pub fn parse(entries: &[String]) -> Result<Self, String> {
        let mut nets = Vec::with_capacity(entries.len());
        for entry in entries {
            let bad = || {
                format!("trusted_proxies: '{entry}' is not an IP address or network (such as 10.0.0.0/8)")
            };
            let (addr, len) = match entry.split_once('/') {
                Some((a, l)) => (a, Some(l)),
                None => (entry.as_str(), None),
            };
            let ip: IpAddr = addr.trim().parse().map_err(|_| bad())?;
            let max = if ip.is_ipv4() { 32 } else { 128 };
            let len = match len {
                Some(l) => l
                    .trim()
                    .parse::<u8>()
                    .ok()
                    .filter(|l| *l <= max)
                    .ok_or_else(bad)?,
                None => max,
            };
            nets.push((ip, len));
        }
        Ok(TrustedProxies(nets))
    }

    /// Whether `ip` is in one of the networks (an IPv4-mapped IPv6 address counts as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        self.0.iter().any(|(net, len)| match (net, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => prefix_eq(&n.octets(), &a.octets(), *len),
            (IpAddr::V6(n), IpAddr::V6(a)) => prefix_eq(&n.octets(), &a.octets(), *len),
            _ => false,
        })
    }
}

/// Whether the first `bits` bits of `a` and `b` agree.
fn prefix_eq(a: &[u8], b: &[u8], bits: u8) -> bool {
    let bits = usize::from(bits);
    let (whole, rest) = (bits / 8, bits % 8);
    if a[..whole] != b[..whole] {
        return false;
    }
    rest == 0 || {
        let mask = 0xffu8 << (8 - rest);
        a[whole] & mask == b[whole] & mask
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_match_by_prefix() {
        let t = TrustedProxies::parse(&[
            "10.0.0.0/8".into(),
            "192.168.1.128/25".into(),
            "fd00::/8".into(),
            "127.0.0.1".into(),
        ])
        .unwrap();
        for yes in [
            "10.255.0.1",
            "192.168.1.200",
            "fd12::1",
            "127.0.0.1",
            "::ffff:10.0.0.1",
        ] {
            assert!(t.contains(yes.parse().unwrap()), "{yes}");
        }
        for no in ["11.0.0.1", "192.168.1.100", "fe80::1", "127.0.0.2"] {
            assert!(!t.contains(no.parse().unwrap()), "{no}");
        }
        assert!(TrustedProxies::parse(&["10.0.0.0/33".into()]).is_err());
        assert!(TrustedProxies::parse(&["proxy.local".into()]).is_err());
        assert!(!TrustedProxies::default().contains("127.0.0.1".parse().unwrap()));
    }
}
