//! The fault document as people write it (YAML or JSON), e.g.
//! `{kind: cpu, load: 50, workers: 1}` or `{kind: drop, probability: 0.3, match: {ports: [8080]}}`,
//! parsed into [`FaultSpec`] with errors that name the field path and the allowed range.
//!
//! The raw form is one flat struct for every kind: a field that belongs to another kind is an
//! error that lists the fields of this kind, and an unknown field is refused by serde.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::*;
use crate::units;

/// A YAML scalar that may be written as a number or a string (`load: 50`, `size: 512Mi`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum Scalar {
    Num(f64),
    Str(String),
}

impl Scalar {
    pub(crate) fn text(&self) -> String {
        match self {
            Scalar::Num(n) => trim_num(*n),
            Scalar::Str(s) => s.clone(),
        }
    }
}

fn trim_num(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() < 1e15 {
        format!("{}", n as i64)
    } else {
        n.to_string()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawTarget {
    pub netns: Option<String>,
    pub pid: Option<u32>,
    pub cgroup: Option<String>,
    /// Container ID.
    pub container: Option<String>,
    /// Pod UID.
    pub pod: Option<String>,
    pub container_name: Option<String>,
    pub pod_namespace: Option<String>,
    pub pod_name: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawMatch {
    #[serde(default)]
    pub destinations: Vec<String>,
    #[serde(default)]
    pub sources: Vec<String>,
    #[serde(default)]
    pub ports: Vec<i64>,
    pub protocol: Option<String>,
    pub direction: Option<String>,
    #[serde(default)]
    pub include_protected: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawSelector {
    pub pid: Option<i64>,
    pub name: Option<String>,
    pub container: Option<String>,
    pub pod: Option<String>,
}

/// One fault as written in a document. Every kind's fields, all optional.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawFault {
    pub kind: String,
    pub target: Option<RawTarget>,
    // network, drop, partition
    pub interface: Option<String>,
    #[serde(rename = "match")]
    pub matcher: Option<RawMatch>,
    pub delay: Option<Scalar>,
    pub jitter: Option<Scalar>,
    pub correlation: Option<Scalar>,
    pub distribution: Option<String>,
    pub loss: Option<Scalar>,
    pub loss_correlation: Option<Scalar>,
    pub duplicate: Option<Scalar>,
    pub corrupt: Option<Scalar>,
    pub reorder: Option<Scalar>,
    pub gap: Option<u32>,
    pub netem_rate: Option<Scalar>,
    /// tbf rate for network; bytes per second for io.
    pub rate: Option<Scalar>,
    pub burst: Option<Scalar>,
    pub limit: Option<Scalar>,
    pub probability: Option<f64>,
    pub peers: Option<Vec<String>>,
    pub direction: Option<String>,
    // cpu
    pub load: Option<Scalar>,
    pub workers: Option<i64>,
    // memory, io
    pub size: Option<Scalar>,
    pub percent: Option<Scalar>,
    pub path: Option<String>,
    // process
    pub action: Option<String>,
    pub signal: Option<Scalar>,
    pub selector: Option<RawSelector>,
    pub count: Option<i64>,
    // disk-fill (also path, percent, size)
    pub keep_free: Option<Scalar>,
    // io-limit
    pub device: Option<String>,
    pub read_bytes_per_second: Option<Scalar>,
    pub write_bytes_per_second: Option<Scalar>,
    pub read_iops: Option<Scalar>,
    pub write_iops: Option<Scalar>,
    // dns (issue 13); also interface, action and probability above
    pub names: Option<Vec<String>>,
    // Kill faults (issue 13): pod-kill, container-kill.
    pub grace_period: Option<Scalar>,
    pub interval: Option<Scalar>,
    pub containers: Option<Vec<String>>,
    /// Per-fault timing (issue 13, composition): how long this fault of an experiment holds,
    /// at most the experiment's duration. Read by the experiment document only; a fault
    /// anywhere else refuses it.
    pub duration: Option<String>,
}

/// Fields each kind accepts (besides `kind` and `target`).
fn fields_of(kind: FaultKind) -> &'static [&'static str] {
    match kind {
        FaultKind::Network => &[
            "interface",
            "match",
            "delay",
            "jitter",
            "correlation",
            "distribution",
            "loss",
            "lossCorrelation",
            "duplicate",
            "corrupt",
            "reorder",
            "gap",
            "netemRate",
            "rate",
            "burst",
            "limit",
        ],
        FaultKind::Drop => &["interface", "match", "probability"],
        FaultKind::Partition => &["interface", "peers", "direction"],
        FaultKind::Cpu => &["load", "workers"],
        FaultKind::Memory => &["size", "percent"],
        FaultKind::Io => &["path", "workers", "size", "rate"],
        FaultKind::Process => &["action", "signal", "selector", "count"],
        FaultKind::DiskFill => disk::DISK_FILL_FIELDS,
        FaultKind::IoLimit => disk::IO_LIMIT_FIELDS,
        // dns (issue 13)
        FaultKind::Dns => &["interface", "names", "action", "probability"],
        // Kill faults (issue 13).
        FaultKind::PodKill => &["gracePeriod", "interval"],
        FaultKind::ContainerKill => &["containers", "interval"],
    }
}

impl RawFault {
    fn present_fields(&self) -> Vec<&'static str> {
        let mut v = Vec::new();
        let mut add = |name: &'static str, present: bool| {
            if present {
                v.push(name)
            }
        };
        add("interface", self.interface.is_some());
        add("match", self.matcher.is_some());
        add("delay", self.delay.is_some());
        add("jitter", self.jitter.is_some());
        add("correlation", self.correlation.is_some());
        add("distribution", self.distribution.is_some());
        add("loss", self.loss.is_some());
        add("lossCorrelation", self.loss_correlation.is_some());
        add("duplicate", self.duplicate.is_some());
        add("corrupt", self.corrupt.is_some());
        add("reorder", self.reorder.is_some());
        add("gap", self.gap.is_some());
        add("netemRate", self.netem_rate.is_some());
        add("rate", self.rate.is_some());
        add("burst", self.burst.is_some());
        add("limit", self.limit.is_some());
        add("probability", self.probability.is_some());
        add("peers", self.peers.is_some());
        add("direction", self.direction.is_some());
        add("load", self.load.is_some());
        add("workers", self.workers.is_some());
        add("size", self.size.is_some());
        add("percent", self.percent.is_some());
        add("path", self.path.is_some());
        add("action", self.action.is_some());
        add("signal", self.signal.is_some());
        add("selector", self.selector.is_some());
        add("count", self.count.is_some());
        add("keepFree", self.keep_free.is_some());
        add("device", self.device.is_some());
        add("readBytesPerSecond", self.read_bytes_per_second.is_some());
        add("writeBytesPerSecond", self.write_bytes_per_second.is_some());
        add("readIops", self.read_iops.is_some());
        add("writeIops", self.write_iops.is_some());
        // dns (issue 13)
        add("names", self.names.is_some());
        // Kill faults (issue 13).
        add("gracePeriod", self.grace_period.is_some());
        add("interval", self.interval.is_some());
        add("containers", self.containers.is_some());
        v
    }

    /// Validates and converts. `path` prefixes field names in errors (`spec.faults[0]`).
    /// `pod-kill` is refused: it is no fault an agent runs (see [`RawFault::to_pod_spec`]).
    pub fn to_spec(&self, path: &str) -> Result<FaultSpec, SpecError> {
        self.convert(path, false)
    }

    /// As [`RawFault::to_spec`], for a fault of an experiment with `spec.targets.pods`, where
    /// `pod-kill` is allowed (the coordinator carries it out).
    pub(crate) fn to_pod_spec(&self, path: &str) -> Result<FaultSpec, SpecError> {
        self.convert(path, true)
    }

    fn convert(&self, path: &str, pods: bool) -> Result<FaultSpec, SpecError> {
        let at = |f: &str| join(path, f);
        let kind: FaultKind = self
            .kind
            .parse()
            .map_err(|e: String| SpecError::new(at("kind"), e))?;
        if kind == FaultKind::PodKill && !pods {
            return Err(SpecError::new(at("kind"), super::kill::POD_KILL_NEEDS_PODS));
        }
        if self.duration.is_some() {
            return Err(SpecError::new(
                at("duration"),
                "a per-fault duration belongs to a fault of an experiment (spec.faults[i].duration)",
            ));
        }
        let allowed = fields_of(kind);
        if let Some(bad) = self
            .present_fields()
            .into_iter()
            .find(|f| !allowed.contains(f))
        {
            return Err(SpecError::new(
                at(bad),
                format!(
                    "is not a field of kind {kind} (its fields: {})",
                    allowed.join(", ")
                ),
            ));
        }
        let target = match &self.target {
            None => Target::Host,
            Some(t) => raw_target(t, &at("target"))?,
        };
        let fault =
            match kind {
                FaultKind::Network => Fault::Network(self.network(&at)?),
                FaultKind::Drop => Fault::Drop(DropFault {
                    interface: self.interface.clone(),
                    probability: self
                        .probability
                        .ok_or_else(|| SpecError::new(at("probability"), "is required (0..=1)"))?,
                    matcher: raw_match(self.matcher.as_ref(), &at("match"))?,
                }),
                FaultKind::Partition => Fault::Partition(PartitionFault {
                    interface: self.interface.clone(),
                    peers: self
                        .peers
                        .as_deref()
                        .unwrap_or_default()
                        .iter()
                        .enumerate()
                        .map(|(i, p)| {
                            p.parse()
                                .map_err(|e: String| SpecError::new(at(&format!("peers[{i}]")), e))
                        })
                        .collect::<Result<_, _>>()?,
                    direction: match &self.direction {
                        None => Direction::Both,
                        Some(d) => d
                            .parse()
                            .map_err(|e: String| SpecError::new(at("direction"), e))?,
                    },
                }),
                FaultKind::Cpu => Fault::Cpu(CpuFault {
                    load_percent: {
                        let load = self
                            .load
                            .as_ref()
                            .ok_or_else(|| SpecError::new(at("load"), "is required (1..=100)"))?;
                        let v = units::parse_percent(&load.text())
                            .map_err(|e| SpecError::new(at("load"), e))?;
                        if v.fract() != 0.0 || !(1.0..=100.0).contains(&v) {
                            return Err(SpecError::new(
                                at("load"),
                                format!("{} is outside 1..=100 (whole percent)", trim_num(v)),
                            ));
                        }
                        v as u32
                    },
                    workers: match self.workers {
                        None => 0,
                        Some(w) if (1..=i64::from(MAX_WORKERS)).contains(&w) => w as u32,
                        Some(w) => {
                            return Err(SpecError::new(
                                at("workers"),
                                format!("{w} is outside 1..={MAX_WORKERS}"),
                            ))
                        }
                    },
                }),
                FaultKind::Memory => Fault::Memory(MemoryFault {
                    amount: match (&self.size, &self.percent) {
                        (Some(s), None) => MemoryAmount::Bytes(size(s, &at("size"))?),
                        (None, Some(p)) => MemoryAmount::Percent(
                            units::parse_percent(&p.text())
                                .map_err(|e| SpecError::new(at("percent"), e))?,
                        ),
                        _ => return Err(SpecError::new(
                            path,
                            "memory needs exactly one of size (e.g. 512Mi) or percent (0..=100)",
                        )),
                    },
                }),
                FaultKind::Io => Fault::Io(IoFault {
                    path: self.path.clone().ok_or_else(|| {
                        SpecError::new(at("path"), "is required (an absolute directory)")
                    })?,
                    workers: match self.workers {
                        None => 1,
                        Some(w) if (1..=i64::from(MAX_IO_WORKERS)).contains(&w) => w as u32,
                        Some(w) => {
                            return Err(SpecError::new(
                                at("workers"),
                                format!("{w} is outside 1..={MAX_IO_WORKERS}"),
                            ))
                        }
                    },
                    size_bytes: match &self.size {
                        None => 64 << 20,
                        Some(s) => size(s, &at("size"))?,
                    },
                    rate_bytes_per_second: match &self.rate {
                        None => 0,
                        Some(r) => {
                            let text = r.text();
                            let text = text.strip_suffix("/s").unwrap_or(&text);
                            units::parse_size(text).map_err(|e| {
                                SpecError::new(at("rate"), format!("{e} (bytes per second)"))
                            })?
                        }
                    },
                }),
                FaultKind::Process => Fault::Process(self.process(&at)?),
                FaultKind::DiskFill => Fault::DiskFill(disk::raw_disk_fill(self, &at)?),
                FaultKind::IoLimit => Fault::IoLimit(disk::raw_io_limit(self, &at)?),
                // dns (issue 13)
                FaultKind::Dns => Fault::Dns(self.dns(&at)?),
                // Kill faults (issue 13).
                FaultKind::PodKill => Fault::PodKill(PodKillFault {
                    grace_period: opt_duration(&self.grace_period, &at("gracePeriod"))?,
                    interval: opt_duration(&self.interval, &at("interval"))?,
                }),
                FaultKind::ContainerKill => Fault::ContainerKill(ContainerKillFault {
                    containers: self.containers.clone().unwrap_or_default(),
                    interval: opt_duration(&self.interval, &at("interval"))?,
                }),
            };
        let spec = FaultSpec { target, fault };
        spec.validate(path)?;
        Ok(spec)
    }

    fn network(&self, at: &dyn Fn(&str) -> String) -> Result<NetworkFault, SpecError> {
        let dur = |s: &Option<Scalar>, f: &str| -> Result<u64, SpecError> {
            match s {
                None => Ok(0),
                Some(v) => duration_us(v, &at(f)),
            }
        };
        let pct = |s: &Option<Scalar>, f: &str| -> Result<f64, SpecError> {
            match s {
                None => Ok(0.0),
                Some(v) => units::parse_percent(&v.text()).map_err(|e| SpecError::new(at(f), e)),
            }
        };
        let netem = Netem {
            delay_us: dur(&self.delay, "delay")?,
            jitter_us: dur(&self.jitter, "jitter")?,
            correlation_pct: pct(&self.correlation, "correlation")?,
            distribution: match &self.distribution {
                None => None,
                Some(d) => Some(
                    d.parse()
                        .map_err(|e: String| SpecError::new(at("distribution"), e))?,
                ),
            },
            loss_pct: pct(&self.loss, "loss")?,
            loss_correlation_pct: pct(&self.loss_correlation, "lossCorrelation")?,
            duplicate_pct: pct(&self.duplicate, "duplicate")?,
            corrupt_pct: pct(&self.corrupt, "corrupt")?,
            reorder_pct: pct(&self.reorder, "reorder")?,
            reorder_gap: self.gap.unwrap_or(0),
            rate_bps: match &self.netem_rate {
                None => 0,
                Some(r) => units::parse_rate_bps(&r.text())
                    .map_err(|e| SpecError::new(at("netemRate"), e))?,
            },
        };
        let tbf = match &self.rate {
            None => {
                if self.burst.is_some() || self.limit.is_some() {
                    return Err(SpecError::new(at("rate"), "burst and limit need a rate"));
                }
                None
            }
            Some(r) => Some(Tbf {
                rate_bps: units::parse_rate_bps(&r.text())
                    .map_err(|e| SpecError::new(at("rate"), e))?,
                burst_bytes: self
                    .burst
                    .as_ref()
                    .map(|b| size(b, &at("burst")))
                    .transpose()?
                    .unwrap_or(0),
                limit_bytes: self
                    .limit
                    .as_ref()
                    .map(|b| size(b, &at("limit")))
                    .transpose()?
                    .unwrap_or(0),
            }),
        };
        let any_netem = self.delay.is_some()
            || self.loss.is_some()
            || self.duplicate.is_some()
            || self.corrupt.is_some()
            || self.reorder.is_some()
            || self.netem_rate.is_some()
            || self.jitter.is_some();
        Ok(NetworkFault {
            interface: self.interface.clone(),
            matcher: raw_match(self.matcher.as_ref(), &at("match"))?,
            netem: any_netem.then_some(netem),
            tbf,
        })
    }

    fn process(&self, at: &dyn Fn(&str) -> String) -> Result<ProcessFault, SpecError> {
        let action = match self.action.as_deref().map(str::trim) {
            Some("kill") => ProcessAction::Kill {
                signal: match &self.signal {
                    None => 9,
                    Some(s) => units::parse_signal(&s.text())
                        .map_err(|e| SpecError::new(at("signal"), e))?,
                },
            },
            Some("pause") => {
                if self.signal.is_some() {
                    return Err(SpecError::new(
                        at("signal"),
                        "only kill takes a signal; pause uses SIGSTOP/SIGCONT",
                    ));
                }
                ProcessAction::Pause
            }
            Some(other) => {
                return Err(SpecError::new(
                    at("action"),
                    format!("{other:?} is not an action; use kill or pause"),
                ))
            }
            None => return Err(SpecError::new(at("action"), "is required: kill or pause")),
        };
        let sel = self.selector.as_ref().ok_or_else(|| {
            SpecError::new(
                at("selector"),
                "is required: one of pid, name, container, pod",
            )
        })?;
        let given = [
            sel.pid.is_some(),
            sel.name.is_some(),
            sel.container.is_some() || sel.pod.is_some(),
        ];
        if given.iter().filter(|g| **g).count() != 1 {
            return Err(SpecError::new(
                at("selector"),
                "needs exactly one of pid, name, or container/pod",
            ));
        }
        let selector = if let Some(pid) = sel.pid {
            if !(1..=i64::from(u32::MAX)).contains(&pid) {
                return Err(SpecError::new(
                    at("selector.pid"),
                    format!("{pid} is outside 2..=4294967295"),
                ));
            }
            ProcessSelector::Pid(pid as u32)
        } else if let Some(name) = &sel.name {
            ProcessSelector::Name(name.clone())
        } else {
            ProcessSelector::Container(ContainerRef {
                container_id: sel.container.clone().unwrap_or_default(),
                pod_uid: sel.pod.clone().unwrap_or_default(),
                ..Default::default()
            })
        };
        let count = match self.count {
            None => 0,
            Some(c) if (0..=100_000).contains(&c) => c as u32,
            Some(c) => {
                return Err(SpecError::new(
                    at("count"),
                    format!("{c} is outside 0..=100000 (0 = all)"),
                ))
            }
        };
        Ok(ProcessFault {
            action,
            selector,
            count,
        })
    }
}

// dns (issue 13)
impl RawFault {
    fn dns(&self, at: &dyn Fn(&str) -> String) -> Result<DnsFault, SpecError> {
        let names = self.names.as_deref().ok_or_else(|| {
            SpecError::new(
                at("names"),
                format!(
                    "is required: 1..={} exact names or *.suffix patterns",
                    dns::MAX_DNS_NAMES
                ),
            )
        })?;
        let action = match self.action.as_deref() {
            None => {
                return Err(SpecError::new(
                    at("action"),
                    "is required: nxdomain, servfail or timeout",
                ))
            }
            Some(a) => a
                .parse::<DnsAction>()
                .map_err(|e| SpecError::new(at("action"), e))?,
        };
        Ok(DnsFault {
            interface: self.interface.clone(),
            names: DnsFault::parse_names(names, &at("names"))?,
            action,
            probability: self.probability.unwrap_or(1.0),
        })
    }
}

fn size(s: &Scalar, path: &str) -> Result<u64, SpecError> {
    if let Scalar::Num(n) = s {
        if *n < 0.0 {
            return Err(SpecError::new(
                path,
                format!("{} is negative; sizes are 0 or more", trim_num(*n)),
            ));
        }
    }
    units::parse_size(&s.text()).map_err(|e| SpecError::new(path, e))
}

fn duration_us(s: &Scalar, path: &str) -> Result<u64, SpecError> {
    match s {
        Scalar::Num(n) if *n < 0.0 => Err(SpecError::new(
            path,
            format!("{} is negative; use e.g. 100ms", trim_num(*n)),
        )),
        Scalar::Num(_) => Err(SpecError::new(
            path,
            "needs a unit; use e.g. 100ms, 1.5s or 250us",
        )),
        Scalar::Str(t) if t.trim().starts_with('-') => Err(SpecError::new(
            path,
            format!("{t:?} is negative; durations are 0 or more"),
        )),
        Scalar::Str(t) => humantime::parse_duration(t.trim())
            .map(|d: Duration| d.as_micros().min(u128::from(u64::MAX)) as u64)
            .map_err(|e| {
                SpecError::new(
                    path,
                    format!("{t:?} is not a duration ({e}); use e.g. 100ms"),
                )
            }),
    }
}

/// An optional duration field (`interval: 30s`); a number without a unit is refused.
fn opt_duration(s: &Option<Scalar>, path: &str) -> Result<Option<Duration>, SpecError> {
    s.as_ref()
        .map(|v| duration_us(v, path).map(Duration::from_micros))
        .transpose()
}

fn raw_target(t: &RawTarget, path: &str) -> Result<Target, SpecError> {
    let kinds = [
        t.netns.is_some(),
        t.pid.is_some(),
        t.cgroup.is_some(),
        t.container.is_some() || t.pod.is_some(),
    ];
    match kinds.iter().filter(|k| **k).count() {
        0 => Ok(Target::Host),
        1 => Ok(if let Some(n) = &t.netns {
            Target::Netns(n.clone())
        } else if let Some(p) = t.pid {
            Target::Pid(p)
        } else if let Some(c) = &t.cgroup {
            Target::Cgroup(c.clone())
        } else {
            Target::Container(ContainerRef {
                container_id: t.container.clone().unwrap_or_default(),
                pod_uid: t.pod.clone().unwrap_or_default(),
                pod_namespace: t.pod_namespace.clone().unwrap_or_default(),
                pod_name: t.pod_name.clone().unwrap_or_default(),
                container_name: t.container_name.clone().unwrap_or_default(),
            })
        }),
        _ => Err(SpecError::new(
            path,
            "give one of netns, pid, cgroup, or container/pod",
        )),
    }
}

fn raw_match(m: Option<&RawMatch>, path: &str) -> Result<TrafficMatch, SpecError> {
    let Some(m) = m else {
        return Ok(TrafficMatch::default());
    };
    let cidrs = |list: &[String], field: &str| -> Result<Vec<Cidr>, SpecError> {
        list.iter()
            .enumerate()
            .map(|(i, c)| {
                c.parse()
                    .map_err(|e: String| SpecError::new(join(path, &format!("{field}[{i}]")), e))
            })
            .collect()
    };
    let ports = m
        .ports
        .iter()
        .enumerate()
        .map(|(i, p)| {
            u16::try_from(*p).ok().filter(|p| *p != 0).ok_or_else(|| {
                SpecError::new(
                    join(path, &format!("ports[{i}]")),
                    format!("{p} is outside 1..=65535"),
                )
            })
        })
        .collect::<Result<_, _>>()?;
    Ok(TrafficMatch {
        destinations: cidrs(&m.destinations, "destinations")?,
        sources: cidrs(&m.sources, "sources")?,
        ports,
        protocol: match &m.protocol {
            None => Protocol::Any,
            Some(p) => p
                .parse()
                .map_err(|e: String| SpecError::new(join(path, "protocol"), e))?,
        },
        direction: match &m.direction {
            None => Direction::Egress,
            Some(d) => d
                .parse()
                .map_err(|e: String| SpecError::new(join(path, "direction"), e))?,
        },
        include_protected: m.include_protected,
    })
}

/// Parses a YAML or JSON document into `T`, naming the field path of any error
/// (`faults[1]: unknown field "lod", expected one of ...`).
pub fn parse_document<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, SpecError> {
    let de = serde_yaml_ng::Deserializer::from_str(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        SpecError::new(if path == "." { String::new() } else { path }, inner)
    })
}

/// Parses one fault document (`kind: cpu ...`).
pub fn parse_fault(text: &str) -> Result<FaultSpec, SpecError> {
    let raw: RawFault = parse_document(text)?;
    raw.to_spec("")
}

/// Labels as written in documents.
pub type RawLabels = BTreeMap<String, String>;

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        parse_fault(text).expect_err(text).to_string()
    }

    #[test]
    fn parses_each_kind() {
        let cpu = parse_fault("kind: cpu\nload: 50\nworkers: 2").expect("cpu");
        assert_eq!(
            cpu.fault,
            Fault::Cpu(CpuFault {
                load_percent: 50,
                workers: 2
            })
        );
        assert_eq!(cpu.target, Target::Host);
        let mem = parse_fault("{kind: memory, size: 512Mi, target: {cgroup: /faultline/x}}")
            .expect("mem");
        assert_eq!(
            mem.fault,
            Fault::Memory(MemoryFault {
                amount: MemoryAmount::Bytes(512 << 20)
            })
        );
        assert_eq!(mem.target, Target::Cgroup("/faultline/x".into()));
        let io = parse_fault("{kind: io, path: /var/tmp, workers: 2, size: 16Mi, rate: 10Mi/s}")
            .expect("io");
        assert_eq!(
            io.fault,
            Fault::Io(IoFault {
                path: "/var/tmp".into(),
                workers: 2,
                size_bytes: 16 << 20,
                rate_bytes_per_second: 10 << 20
            })
        );
        let kill = parse_fault(
            "{kind: process, action: kill, signal: SIGTERM, selector: {name: '^sleep$'}, count: 1}",
        )
        .expect("kill");
        assert_eq!(
            kill.fault,
            Fault::Process(ProcessFault {
                action: ProcessAction::Kill { signal: 15 },
                selector: ProcessSelector::Name("^sleep$".into()),
                count: 1
            })
        );
        let drop = parse_fault(r#"{"kind": "drop", "probability": 0.3, "match": {"ports": [8080], "direction": "ingress"}}"#).expect("json drop");
        let Fault::Drop(d) = drop.fault else {
            panic!("drop")
        };
        assert_eq!(
            (d.probability, d.matcher.ports.clone(), d.matcher.direction),
            (0.3, vec![8080], Direction::Ingress)
        );
        let net = parse_fault("{kind: network, delay: 100ms, jitter: 10ms, distribution: normal, loss: 5%, rate: 10mbit}").expect("net");
        let Fault::Network(n) = net.fault else {
            panic!("network")
        };
        let netem = n.netem.expect("netem");
        assert_eq!(
            (netem.delay_us, netem.jitter_us, netem.loss_pct),
            (100_000, 10_000, 5.0)
        );
        assert_eq!(n.tbf.expect("tbf").rate_bps, 10_000_000);
        let part =
            parse_fault("{kind: partition, peers: [10.0.0.2, 10.1.0.0/16]}").expect("partition");
        let Fault::Partition(p) = part.fault else {
            panic!("partition")
        };
        assert_eq!((p.peers.len(), p.direction), (2, Direction::Both));
    }

    #[test]
    fn bad_input_names_field_and_range() {
        assert_eq!(
            err("{kind: cpu, load: 150}"),
            "load: 150 is outside 1..=100 (whole percent)"
        );
        assert_eq!(
            err("{kind: cpu, load: 0}"),
            "load: 0 is outside 1..=100 (whole percent)"
        );
        assert_eq!(err("{kind: cpu}"), "load: is required (1..=100)");
        assert_eq!(
            err("{kind: cpu, load: 10, workers: 0}"),
            "workers: 0 is outside 1..=1024"
        );
        assert_eq!(
            err("{kind: memory, size: -5}"),
            "size: -5 is negative; sizes are 0 or more"
        );
        assert!(
            err("{kind: process, action: kill, signal: SIGFOO, selector: {pid: 5}}")
                .starts_with("signal: \"SIGFOO\" is not a signal")
        );
        assert_eq!(
            err("{kind: io, workers: 1}"),
            "path: is required (an absolute directory)"
        );
        assert!(err("{kind: teleport}").starts_with("kind: unknown kind \"teleport\""));
        assert_eq!(
            err("{kind: network, loss: 150}"),
            "loss: 150% is outside 0..=100%"
        );
        assert_eq!(
            err("{kind: network, delay: -5ms}"),
            "delay: \"-5ms\" is negative; durations are 0 or more"
        );
        assert_eq!(
            err("{kind: network, delay: 0ms, jitter: 5ms}"),
            "jitter: jitter needs a delay greater than 0"
        );
        assert_eq!(
            err("{kind: network, loss: 1, reorder: 25}"),
            "reorder: reorder needs a delay greater than 0"
        );
        assert!(
            err("{kind: drop, probability: 0.1, match: {destinations: [10.0.0.300/8]}}")
                .starts_with("match.destinations[0]:")
        );
        assert_eq!(
            err("{kind: drop, probability: 0.1, match: {ports: [0]}}"),
            "match.ports[0]: 0 is outside 1..=65535"
        );
        assert_eq!(
            err("{kind: drop, probability: 0.1, match: {ports: [70000]}}"),
            "match.ports[0]: 70000 is outside 1..=65535"
        );
        assert_eq!(
            err("{kind: drop, probability: 1.5}"),
            "probability: 1.5 is outside 0..=1"
        );
        assert!(err("{kind: cpu, load: 5, probability: 0.1}")
            .starts_with("probability: is not a field of kind cpu (its fields: load, workers)"));
        assert!(err("{kind: cpu, lod: 5}").contains("unknown field `lod`"));
        assert!(
            err("{kind: process, action: kill, selector: {pid: 1}}").contains("never targetable")
        );
    }

    // dns (issue 13)
    #[test]
    fn dns_parses_and_refuses_with_field_and_range() {
        let spec = parse_fault(
            "{kind: dns, names: [API.example.com, '*.svc.local'], action: servfail, target: {pod: 1234-ab}}",
        )
        .expect("dns");
        let Fault::Dns(d) = &spec.fault else {
            panic!("dns")
        };
        assert_eq!(d.action, DnsAction::Servfail);
        assert_eq!(d.probability, 1.0, "probability defaults to 1");
        assert_eq!(
            d.names.iter().map(DnsName::text).collect::<Vec<_>>(),
            ["api.example.com", "*.svc.local"]
        );
        assert_eq!(
            spec.describe(),
            "dns servfail for api.example.com, *.svc.local on pod 1234-ab"
        );
        assert_eq!(
            err("{kind: dns, names: [a.example], action: refuse}"),
            "action: \"refuse\" is not an action; use nxdomain, servfail or timeout"
        );
        assert_eq!(
            err("{kind: dns, names: [a.example]}"),
            "action: is required: nxdomain, servfail or timeout"
        );
        assert_eq!(
            err("{kind: dns, names: [a.example], action: nxdomain, probability: 1.5}"),
            "probability: 1.5 is outside 0..=1"
        );
        assert_eq!(
            err("{kind: dns, names: [ok.example, 'bad..name'], action: timeout}"),
            "names[1]: \"bad..name\" has a label of 0 characters; labels have 1..=63"
        );
        assert_eq!(
            err("{kind: dns, names: [], action: timeout}"),
            "names: has 0 names; give 1..=64 (exact names or *.suffix patterns)"
        );
        assert_eq!(
            err("{kind: dns, action: timeout}"),
            "names: is required: 1..=64 exact names or *.suffix patterns"
        );
        let many: Vec<String> = (0..65).map(|i| format!("n{i}.example")).collect();
        assert!(err(&format!(
            "{{kind: dns, action: timeout, names: [{}]}}",
            many.join(", ")
        ))
        .starts_with("names: has 65 names; give 1..=64"));
        assert!(err("{kind: dns, names: [a.example], action: timeout, load: 5}")
            .starts_with("load: is not a field of kind dns (its fields: interface, names, action, probability)"));
    }
}
