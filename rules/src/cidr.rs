//! The `cidr` modifier: IPv4 and IPv6 networks.

use std::net::IpAddr;

use crate::error::ErrorKind;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Cidr {
    v4: bool,
    network: u128,
    mask: u128,
}

impl Cidr {
    pub(crate) fn parse(s: &str) -> Result<Self, ErrorKind> {
        let bad = || ErrorKind::BadValue(format!("`{s}` is not a CIDR network"));
        let (addr, len) = match s.trim().split_once('/') {
            Some((a, l)) => (a, Some(l.parse::<u32>().map_err(|_| bad())?)),
            None => (s.trim(), None),
        };
        let ip: IpAddr = addr.parse().map_err(|_| bad())?;
        let (v4, bits, value) = match ip {
            IpAddr::V4(a) => (true, 32, u128::from(u32::from(a))),
            IpAddr::V6(a) => (false, 128, u128::from(a)),
        };
        let len = len.unwrap_or(bits);
        if len > bits {
            return Err(bad());
        }
        let mask = if len == 0 {
            0
        } else {
            (u128::MAX << (128 - len)) >> (128 - bits)
        };
        Ok(Cidr {
            v4,
            network: value & mask,
            mask,
        })
    }

    /// Whether `s` is an address inside the network. IPv4-mapped IPv6
    /// addresses (`::ffff:10.1.2.3`) count as their IPv4 address; brackets
    /// and a `%zone` suffix are ignored.
    pub(crate) fn contains(&self, s: &str) -> bool {
        let t = s.trim().trim_start_matches('[').trim_end_matches(']');
        let t = t.split_once('%').map_or(t, |(a, _)| a);
        let Ok(ip) = t.parse::<IpAddr>() else {
            return false;
        };
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 @ IpAddr::V4(_) => v4,
        };
        match ip {
            IpAddr::V4(a) if self.v4 => u128::from(u32::from(a)) & self.mask == self.network,
            IpAddr::V6(a) if !self.v4 => u128::from(a) & self.mask == self.network,
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v4_boundaries() {
        let c = Cidr::parse("10.0.0.0/8").unwrap();
        assert!(c.contains("10.0.0.0"));
        assert!(c.contains("10.255.255.255"));
        assert!(!c.contains("11.0.0.0"));
        assert!(!c.contains("9.255.255.255"));
        assert!(c.contains("::ffff:10.1.2.3"));
        assert!(!c.contains("not an ip"));
        assert!(Cidr::parse("0.0.0.0/0").unwrap().contains("1.2.3.4"));
        assert!(Cidr::parse("1.2.3.4/32").unwrap().contains("1.2.3.4"));
        assert!(!Cidr::parse("1.2.3.4/32").unwrap().contains("1.2.3.5"));
        assert!(Cidr::parse("1.2.3.4/33").is_err());
    }

    #[test]
    fn v6_boundaries() {
        let c = Cidr::parse("fe80::/10").unwrap();
        assert!(c.contains("fe80::1"));
        assert!(c.contains("febf:ffff::1"));
        assert!(!c.contains("fec0::"));
        assert!(c.contains("fe80::1%eth0"));
        assert!(!c.contains("10.0.0.1"));
        assert!(Cidr::parse("::1/128").unwrap().contains("::1"));
    }
}
