//! The fault schedule: a YAML file of load settings and a list of faults with their times,
//! validated strictly (an unknown key or fault, a missing zone, a fault running past the
//! end are errors naming the line).

use std::fmt;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context as _};
use serde::Deserialize;
use tollgate_config::units::{format_duration, parse_duration};

/// A whole schedule, validated.
#[derive(Debug, Clone)]
pub struct Schedule {
    pub name: String,
    /// Length of the load.
    pub duration: Duration,
    /// Requests per second, sent on schedule whatever is outstanding.
    pub rate: u32,
    /// WebSockets kept open through the run (each echoes a message a second).
    pub websockets: u32,
    pub faults: Vec<Entry>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// Kill every backend of a zone (and their sidecars: the pods die); `for` later they
    /// start again.
    KillZoneBackends,
    /// SIGSTOP the zone's first backend; SIGCONT after `for`.
    FreezeEndpoint,
    /// Drop every packet to and from the zone on the region bridge (nftables).
    CutZone,
    /// Every backend of the zone answers after `latency` (fault knob).
    SlowZone,
    /// The zone's backends answer 503 to half the calls that come through the sidecars
    /// (`/dep/`, the edge sidecars' dependency); `/api/` calls to them are untouched.
    FailDependency,
    /// Change every gateway's config file (the watcher reloads it).
    ReloadConfig,
    /// New certificates for every sidecar, from the same CA.
    RotateCerts,
    /// SIGKILL redis-server; start it again after `for`.
    KillRedis,
    /// SIGTERM the zone's gateway, wait for it to drain and exit, start it again.
    RestartGateway,
    /// `gateway upgrade` in the zone: a new process takes the listening sockets over.
    UpgradeGateway,
}

impl FaultKind {
    pub fn name(self) -> &'static str {
        match self {
            Self::KillZoneBackends => "kill_zone_backends",
            Self::FreezeEndpoint => "freeze_endpoint",
            Self::CutZone => "cut_zone",
            Self::SlowZone => "slow_zone",
            Self::FailDependency => "fail_dependency",
            Self::ReloadConfig => "reload_config",
            Self::RotateCerts => "rotate_certs",
            Self::KillRedis => "kill_redis",
            Self::RestartGateway => "restart_gateway",
            Self::UpgradeGateway => "upgrade_gateway",
        }
    }

    /// Faults that need a zone.
    fn zoned(self) -> bool {
        !matches!(
            self,
            Self::ReloadConfig | Self::RotateCerts | Self::KillRedis
        )
    }

    /// Faults that last until reverted (`for` required); the others are one action.
    pub fn lasting(self) -> bool {
        matches!(
            self,
            Self::KillZoneBackends
                | Self::FreezeEndpoint
                | Self::CutZone
                | Self::SlowZone
                | Self::FailDependency
                | Self::KillRedis
        )
    }

    /// A fault confined to one zone: the goal is no failed idempotent request after
    /// its first second.
    pub fn single_zone(self) -> bool {
        matches!(
            self,
            Self::KillZoneBackends
                | Self::FreezeEndpoint
                | Self::CutZone
                | Self::SlowZone
                | Self::FailDependency
        )
    }

    /// Operations that must lose no request at all.
    pub fn operation(self) -> bool {
        matches!(
            self,
            Self::ReloadConfig | Self::RotateCerts | Self::RestartGateway | Self::UpgradeGateway
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Zone {
    A,
    B,
    C,
}

impl Zone {
    pub fn letter(self) -> &'static str {
        match self {
            Zone::A => "a",
            Zone::B => "b",
            Zone::C => "c",
        }
    }
}

/// One fault, validated.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "RawEntry")]
pub struct Entry {
    pub at: Duration,
    pub fault: FaultKind,
    pub zone: Option<Zone>,
    pub lasts: Option<Duration>,
    pub latency: Option<Duration>,
}

impl Entry {
    /// `kill_zone_backends b @30s for 20s`: the label in the report and the chart.
    pub fn label(&self) -> String {
        let mut s = self.fault.name().to_owned();
        if let Some(z) = self.zone {
            s.push(' ');
            s.push_str(z.letter());
        }
        if let Some(l) = self.latency {
            s.push_str(&format!(" +{}", format_duration(l)));
        }
        s
    }
}

impl fmt::Display for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at {}", self.label(), format_duration(self.at))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntry {
    at: String,
    fault: FaultKind,
    #[serde(default)]
    zone: Option<Zone>,
    #[serde(default, rename = "for")]
    lasts: Option<String>,
    #[serde(default)]
    latency: Option<String>,
}

fn duration(field: &str, value: &str) -> Result<Duration, String> {
    parse_duration(value).map_err(|e| format!("{field}: {e}"))
}

impl TryFrom<RawEntry> for Entry {
    type Error = String;

    fn try_from(raw: RawEntry) -> Result<Self, String> {
        let fault = raw.fault;
        let name = fault.name();
        let at = duration("at", &raw.at)?;
        let lasts = raw
            .lasts
            .as_deref()
            .map(|v| duration("for", v))
            .transpose()?;
        let latency = raw
            .latency
            .as_deref()
            .map(|v| duration("latency", v))
            .transpose()?;
        match (fault.zoned(), raw.zone) {
            (true, None) => return Err(format!("{name} needs `zone: a|b|c`")),
            (false, Some(_)) => return Err(format!("{name} takes no zone")),
            _ => {}
        }
        match (fault.lasting(), lasts) {
            (true, None) => {
                return Err(format!("{name} needs `for: DURATION` (when to revert it)"))
            }
            (false, Some(_)) => return Err(format!("{name} is one action: it takes no `for`")),
            (true, Some(d)) if d.is_zero() => return Err("for: must be above 0".into()),
            _ => {}
        }
        if latency.is_some() && fault != FaultKind::SlowZone {
            return Err(format!("latency applies to slow_zone, not {name}"));
        }
        let latency = match fault {
            FaultKind::SlowZone => Some(latency.unwrap_or(Duration::from_millis(300))),
            _ => None,
        };
        Ok(Entry {
            at,
            fault,
            zone: raw.zone,
            lasts,
            latency,
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSchedule {
    name: String,
    duration: String,
    rate: u32,
    #[serde(default)]
    websockets: u32,
    faults: Vec<Entry>,
}

impl Schedule {
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading schedule {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("schedule {}", path.display()))
    }

    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let raw: RawSchedule = serde_yaml::from_str(text).map_err(|e| anyhow::anyhow!("{e}"))?;
        let duration =
            parse_duration(&raw.duration).map_err(|e| anyhow::anyhow!("duration: {e}"))?;
        if raw.rate == 0 || raw.rate > 2000 {
            bail!("rate: {} requests/s is outside 1..=2000", raw.rate);
        }
        if raw.websockets > 10 {
            bail!("websockets: at most 10");
        }
        let mut prev = Duration::ZERO;
        for (i, f) in raw.faults.iter().enumerate() {
            let line = entry_line(text, i)
                .map(|l| format!("line {l}: "))
                .unwrap_or_default();
            if f.at < prev {
                bail!("{line}faults[{i}] ({f}): faults must be listed in time order");
            }
            prev = f.at;
            let end = f.at + f.lasts.unwrap_or_default();
            if end >= duration {
                bail!(
                    "{line}faults[{i}] ({f}): ends at {}, not before the end of the load ({})",
                    format_duration(end),
                    format_duration(duration)
                );
            }
        }
        Ok(Schedule {
            name: raw.name,
            duration,
            rate: raw.rate,
            websockets: raw.websockets,
            faults: raw.faults,
        })
    }
}

/// The 1-based line of the `i`th item of the `faults:` list (the first line of an item
/// starts with `-` at the list's indentation).
fn entry_line(text: &str, i: usize) -> Option<usize> {
    let mut lines = text
        .lines()
        .enumerate()
        .skip_while(|(_, l)| !l.starts_with("faults:"));
    lines.next()?;
    let mut indent = None;
    let mut n = 0;
    for (no, line) in lines {
        let trimmed = line.trim_start();
        if !trimmed.starts_with('-') {
            continue;
        }
        let this = line.len() - trimmed.len();
        if *indent.get_or_insert(this) != this {
            continue;
        }
        if n == i {
            return Some(no + 1);
        }
        n += 1;
    }
    None
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const OK: &str = "name: t\nduration: 60s\nrate: 50\nfaults:\n  - { at: 10s, fault: kill_zone_backends, zone: b, for: 10s }\n  - { at: 30s, fault: reload_config }\n  - { at: 40s, fault: slow_zone, zone: a, for: 5s, latency: 200ms }\n";

    #[test]
    fn a_valid_schedule_parses() {
        let s = Schedule::parse(OK).unwrap();
        assert_eq!(s.faults.len(), 3);
        assert_eq!(s.faults[0].zone, Some(Zone::B));
        assert_eq!(s.faults[0].lasts, Some(Duration::from_secs(10)));
        assert_eq!(s.faults[2].latency, Some(Duration::from_millis(200)));
        assert_eq!(s.faults[0].label(), "kill_zone_backends b");
    }

    #[test]
    fn mistakes_are_named_with_their_line() {
        let cases = [
            (
                OK.replace("kill_zone_backends", "kill_everything"),
                "unknown variant",
            ),
            (
                OK.replace("for: 10s }", "for: 10s, when: now }"),
                "unknown field",
            ),
            (OK.replace("zone: b, ", ""), "needs `zone"),
            (
                OK.replace("reload_config }", "reload_config, for: 1s }"),
                "takes no `for`",
            ),
            (OK.replace("at: 40s", "at: 55s"), "not before the end"),
            (OK.replace("at: 30s", "at: 5s"), "time order"),
            (OK.replace("10s, fault", "10 parsecs, fault"), "at:"),
        ];
        for (text, want) in cases {
            let err = format!("{:#}", Schedule::parse(&text).unwrap_err());
            assert!(err.contains(want), "{err} lacks {want}");
            assert!(err.contains("line "), "{err} names no line");
        }
    }
}
