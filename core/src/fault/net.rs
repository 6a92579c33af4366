//! Network vocabulary of fault specs: CIDRs, traffic matches, netem and tbf parameters.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use super::{join, SpecError};

/// An IP network, `10.0.0.0/8` or `2001:db8::/32`; a bare address is a /32 or /128.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Cidr {
    pub fn max_prefix(addr: &IpAddr) -> u8 {
        if addr.is_ipv4() {
            32
        } else {
            128
        }
    }

    /// True when `ip` lies inside this network.
    pub fn contains(&self, ip: &IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(*ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(*ip) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (addr, prefix) = match s.trim().split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s.trim(), None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| {
            format!("{s:?} is not a CIDR; use e.g. 10.0.0.0/8, 192.0.2.7 or 2001:db8::/32")
        })?;
        let max = Cidr::max_prefix(&addr);
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{s:?}: prefix length must be 0..={max}"))?,
        };
        Ok(Cidr { addr, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// Which way packets travel relative to the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Direction {
    #[default]
    Egress,
    Ingress,
    Both,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Egress => "egress",
            Direction::Ingress => "ingress",
            Direction::Both => "both",
        }
    }
}

impl FromStr for Direction {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "egress" | "out" => Ok(Direction::Egress),
            "ingress" | "in" => Ok(Direction::Ingress),
            "both" => Ok(Direction::Both),
            _ => Err(format!(
                "{s:?} is not a direction; use egress, ingress or both"
            )),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocol {
    #[default]
    Any,
    Tcp,
    Udp,
    Icmp,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Any => "",
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Icmp => "icmp",
        }
    }

    /// The IP protocol number (0 for any).
    pub fn number(self) -> u8 {
        match self {
            Protocol::Any => 0,
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
            Protocol::Icmp => 1,
        }
    }
}

impl FromStr for Protocol {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "" | "any" | "all" => Ok(Protocol::Any),
            "tcp" => Ok(Protocol::Tcp),
            "udp" => Ok(Protocol::Udp),
            "icmp" => Ok(Protocol::Icmp),
            _ => Err(format!(
                "{s:?} is not a protocol; use tcp, udp, icmp or any"
            )),
        }
    }
}

/// Which packets a network fault acts on. Empty lists match everything.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TrafficMatch {
    pub destinations: Vec<Cidr>,
    pub sources: Vec<Cidr>,
    pub ports: Vec<u16>,
    pub protocol: Protocol,
    pub direction: Direction,
    /// Also impair traffic that is excluded by default (the coordinator, SSH).
    pub include_protected: bool,
}

impl TrafficMatch {
    pub(crate) fn validate(&self, path: &str) -> Result<(), SpecError> {
        if !self.ports.is_empty() && matches!(self.protocol, Protocol::Icmp) {
            return Err(SpecError::new(
                join(path, "ports"),
                "ports cannot be combined with protocol icmp",
            ));
        }
        if self.ports.len() > 64 || self.destinations.len() > 64 || self.sources.len() > 64 {
            return Err(SpecError::new(
                path,
                "at most 64 ports, destinations and sources each",
            ));
        }
        Ok(())
    }
}

/// netem's delay distribution table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Distribution {
    Uniform,
    Normal,
    Pareto,
    ParetoNormal,
}

impl Distribution {
    pub fn as_str(self) -> &'static str {
        match self {
            Distribution::Uniform => "uniform",
            Distribution::Normal => "normal",
            Distribution::Pareto => "pareto",
            Distribution::ParetoNormal => "paretonormal",
        }
    }
}

impl FromStr for Distribution {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "uniform" => Ok(Distribution::Uniform),
            "normal" => Ok(Distribution::Normal),
            "pareto" => Ok(Distribution::Pareto),
            "paretonormal" => Ok(Distribution::ParetoNormal),
            _ => Err(format!(
                "{s:?} is not a distribution; use uniform, normal, pareto or paretonormal"
            )),
        }
    }
}

/// netem parameters. Percentages are 0..=100, times in microseconds.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Netem {
    pub delay_us: u64,
    pub jitter_us: u64,
    pub correlation_pct: f64,
    pub distribution: Option<Distribution>,
    pub loss_pct: f64,
    pub loss_correlation_pct: f64,
    pub duplicate_pct: f64,
    pub corrupt_pct: f64,
    pub reorder_pct: f64,
    pub reorder_gap: u32,
    pub rate_bps: u64,
}

/// The longest delay or jitter a spec may ask for.
pub const MAX_DELAY_US: u64 = 60_000_000;

impl Netem {
    pub fn is_noop(&self) -> bool {
        self.delay_us == 0
            && self.loss_pct == 0.0
            && self.duplicate_pct == 0.0
            && self.corrupt_pct == 0.0
            && self.rate_bps == 0
    }

    pub(crate) fn validate(&self, path: &str) -> Result<(), SpecError> {
        let at = |f: &str| join(path, f);
        for (field, v) in [("delay", self.delay_us), ("jitter", self.jitter_us)] {
            if v > MAX_DELAY_US {
                return Err(SpecError::new(
                    at(field),
                    format!("{}ms is outside 0..=60000ms", v / 1000),
                ));
            }
        }
        for (field, v) in [
            ("correlation", self.correlation_pct),
            ("loss", self.loss_pct),
            ("lossCorrelation", self.loss_correlation_pct),
            ("duplicate", self.duplicate_pct),
            ("corrupt", self.corrupt_pct),
            ("reorder", self.reorder_pct),
        ] {
            if !(0.0..=100.0).contains(&v) {
                return Err(SpecError::new(
                    at(field),
                    format!("{v}% is outside 0..=100%"),
                ));
            }
        }
        if self.jitter_us > 0 && self.delay_us == 0 {
            return Err(SpecError::new(
                at("jitter"),
                "jitter needs a delay greater than 0",
            ));
        }
        if self.distribution.is_some() && self.jitter_us == 0 {
            return Err(SpecError::new(
                at("distribution"),
                "a distribution needs jitter greater than 0",
            ));
        }
        if self.correlation_pct > 0.0 && self.jitter_us == 0 {
            return Err(SpecError::new(
                at("correlation"),
                "delay correlation needs jitter greater than 0",
            ));
        }
        if self.reorder_pct > 0.0 && self.delay_us == 0 {
            return Err(SpecError::new(
                at("reorder"),
                "reorder needs a delay greater than 0",
            ));
        }
        if self.reorder_gap > 0 && self.reorder_pct == 0.0 {
            return Err(SpecError::new(
                at("gap"),
                "gap needs reorder greater than 0",
            ));
        }
        if self.loss_correlation_pct > 0.0 && self.loss_pct == 0.0 {
            return Err(SpecError::new(
                at("lossCorrelation"),
                "loss correlation needs loss greater than 0",
            ));
        }
        if self.rate_bps != 0 && !(8..=100_000_000_000).contains(&self.rate_bps) {
            return Err(SpecError::new(
                at("netemRate"),
                "must be within 8bit..=100gbit",
            ));
        }
        Ok(())
    }
}

/// Token-bucket bandwidth limit.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Tbf {
    pub rate_bps: u64,
    /// 0 = derived from the rate by the agent.
    pub burst_bytes: u64,
    /// 0 = derived from the rate by the agent.
    pub limit_bytes: u64,
}

impl Tbf {
    pub(crate) fn validate(&self, path: &str) -> Result<(), SpecError> {
        if !(8..=100_000_000_000).contains(&self.rate_bps) {
            return Err(SpecError::new(
                join(path, "rate"),
                "must be within 8bit..=100gbit",
            ));
        }
        for (field, v) in [("burst", self.burst_bytes), ("limit", self.limit_bytes)] {
            if v > u64::from(u32::MAX) {
                return Err(SpecError::new(join(path, field), "must be at most 4GiB"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs() {
        let c: Cidr = "10.1.0.0/16".parse().expect("cidr");
        assert!(c.contains(&"10.1.200.3".parse().expect("ip")));
        assert!(!c.contains(&"10.2.0.1".parse().expect("ip")));
        let host: Cidr = "192.0.2.7".parse().expect("host");
        assert_eq!(host.to_string(), "192.0.2.7/32");
        let all: Cidr = "0.0.0.0/0".parse().expect("all");
        assert!(all.contains(&"8.8.8.8".parse().expect("ip")));
        let v6: Cidr = "2001:db8::/32".parse().expect("v6");
        assert!(v6.contains(&"2001:db8::1".parse().expect("ip")));
        assert!(!v6.contains(&"10.0.0.1".parse().expect("ip")));
        assert!("10.0.0.0/33"
            .parse::<Cidr>()
            .expect_err("prefix")
            .contains("0..=32"));
        assert!("10.0.0/8".parse::<Cidr>().is_err());
    }
}
