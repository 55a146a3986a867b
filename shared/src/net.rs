//! CIDR ranges for the admin allowlist.

use std::net::IpAddr;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr, prefix) = match s.trim().split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s.trim(), None),
        };
        let network: IpAddr = addr.parse().map_err(|_| format!("'{s}' is not an IP address or CIDR range"))?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => {
                p.parse::<u8>().ok().filter(|p| *p <= max).ok_or_else(|| format!("'{s}' has a bad prefix length"))?
            }
        };
        Ok(Cidr { network, prefix })
    }
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        // An IPv4 client seen through an IPv6 socket (::ffff:a.b.c.d) is still that IPv4 client.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.network, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = if self.prefix == 0 { 0 } else { u32::MAX << (32 - u32::from(self.prefix)) };
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = if self.prefix == 0 { 0 } else { u128::MAX << (128 - u32::from(self.prefix)) };
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// Parses a comma-separated list of CIDR ranges (an empty list allows no one).
pub fn parse_cidrs(text: &str) -> Result<Vec<Cidr>, String> {
    text.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::parse).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_contain_their_addresses() {
        let cidrs = parse_cidrs("10.0.0.0/8, 192.168.1.7, ::1/128").unwrap();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(cidrs[0].contains(ip("10.200.3.4")));
        assert!(!cidrs[0].contains(ip("11.0.0.1")));
        assert!(cidrs[1].contains(ip("192.168.1.7")) && !cidrs[1].contains(ip("192.168.1.8")));
        assert!(cidrs[2].contains(ip("::1")));
        assert!(cidrs[0].contains(ip("::ffff:10.1.1.1")));
        assert!("0.0.0.0/0".parse::<Cidr>().unwrap().contains(ip("8.8.8.8")));
        assert!(parse_cidrs("10.0.0.0/33").is_err());
        assert!(parse_cidrs("nope").is_err());
        assert!(parse_cidrs("").unwrap().is_empty());
    }
}
