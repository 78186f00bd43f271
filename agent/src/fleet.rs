//! Many simulated devices in one process: a profile (TOML) gives the mix of platforms,
//! OS versions, ownership and supervision; devices share one runtime, one QUIC socket
//! and one set of counters.

use std::path::PathBuf;
use std::sync::Arc;

use serde::Deserialize;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::error::AgentError;
use crate::facts::{DeviceFacts, Ownership, Platform};
use crate::metrics::AgentMetrics;
use crate::transport::{Agent, AgentConfig};

/// A fleet profile: weighted kinds of devices.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetProfile {
    /// The kinds of devices.
    pub devices: Vec<DeviceKind>,
}

/// One kind of device in the mix.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceKind {
    /// Relative share of the fleet.
    #[serde(default = "one")]
    pub weight: u32,
    /// Platform.
    pub platform: Platform,
    /// OS versions, used in turn.
    pub os_versions: Vec<String>,
    /// Product name, e.g. `iPhone15,2`.
    pub product_name: Option<String>,
    /// Ownership.
    #[serde(default = "corporate")]
    pub ownership: Ownership,
    /// Supervised.
    #[serde(default)]
    pub supervised: bool,
    /// Single-app (kiosk) mode.
    #[serde(default)]
    pub kiosk: bool,
    /// The App Store is usable (false: a restrictions profile disables it).
    #[serde(default = "yes")]
    pub app_store_allowed: bool,
    /// The Apple ID signed in to the App Store, with `{index}` replaced by the device's
    /// number (e.g. `user{index}@example.com`); none when absent.
    #[serde(default)]
    pub apple_id: Option<String>,
    /// How the users of these devices answer prompts.
    #[serde(default)]
    pub persona: crate::persona::Persona,
    /// Identity key type: `p256` (default) or `rsa2048`.
    #[serde(default)]
    pub identity_key: orchard_certs::KeyAlgorithm,
}

fn yes() -> bool {
    true
}

fn one() -> u32 {
    1
}

fn corporate() -> Ownership {
    Ownership::Corporate
}

impl FleetProfile {
    /// Parses a profile.
    pub fn parse(text: &str) -> Result<Self, String> {
        let profile: Self =
            toml::from_str(text).map_err(|e| format!("invalid fleet profile: {e}"))?;
        if profile.devices.is_empty() || profile.devices.iter().all(|d| d.weight == 0) {
            return Err("invalid fleet profile: no device kind has a weight above 0".into());
        }
        if let Some(kind) = profile.devices.iter().find(|d| d.os_versions.is_empty()) {
            return Err(format!(
                "invalid fleet profile: a {:?} kind lists no os_versions",
                kind.platform
            ));
        }
        Ok(profile)
    }

    /// Supervised corporate iPhones only.
    pub fn supervised_iphones() -> Self {
        Self {
            devices: vec![DeviceKind {
                weight: 1,
                platform: Platform::Ios,
                os_versions: vec!["17.5".into()],
                product_name: Some("iPhone15,2".into()),
                ownership: Ownership::Corporate,
                supervised: true,
                kiosk: false,
                app_store_allowed: true,
                apple_id: None,
                persona: crate::persona::Persona::default(),
                identity_key: orchard_certs::KeyAlgorithm::P256,
            }],
        }
    }

    /// The facts of device number `index` (deterministic: the same index gives the same device).
    pub fn facts(&self, index: usize, run: &str) -> DeviceFacts {
        let total: u32 = self.devices.iter().map(|d| d.weight).sum();
        let mut slot = (index as u32) % total.max(1);
        let kind = self
            .devices
            .iter()
            .find(|d| {
                if slot < d.weight {
                    true
                } else {
                    slot -= d.weight;
                    false
                }
            })
            .unwrap_or(&self.devices[0]);
        let udid = format!("{run}-{index:012X}");
        let serial = serial_number(run, index);
        let mut facts = DeviceFacts::supervised_iphone(&udid, &serial);
        facts.platform = kind.platform;
        facts.os_version = kind.os_versions[index % kind.os_versions.len()].clone();
        facts.product_name = kind
            .product_name
            .clone()
            .unwrap_or_else(|| match kind.platform {
                Platform::Ios => "iPhone15,2".into(),
                Platform::IpadOs => "iPad13,18".into(),
                Platform::MacOs => "Mac14,2".into(),
            });
        facts.ownership = kind.ownership;
        facts.supervised = kind.supervised;
        facts.kiosk = kind.kiosk;
        facts.app_store_allowed = kind.app_store_allowed;
        facts.apple_id = kind
            .apple_id
            .as_ref()
            .map(|id| id.replace("{index}", &index.to_string()));
        facts.persona = kind.persona.clone();
        facts.persona.apple_id_to_enter = facts
            .persona
            .apple_id_to_enter
            .replace("{index}", &index.to_string());
        facts.identity_key = kind.identity_key;
        facts
    }
}

/// How to start a fleet.
#[derive(Debug, Clone)]
pub struct FleetOptions {
    /// Devices.
    pub count: usize,
    /// Enrollments in flight at once.
    pub concurrency: usize,
    /// A prefix making this run's UDIDs and serials unique.
    pub run: String,
    /// Directory for per-device state files (none: no persistence).
    pub state_dir: Option<PathBuf>,
}

/// A running fleet.
pub struct Fleet {
    /// The devices, in index order.
    pub agents: Vec<Agent>,
    /// Shared counters.
    pub metrics: Arc<AgentMetrics>,
    shutdown: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Fleet {
    /// Starts (enrolls or resumes) `options.count` devices from `template` and `profile`,
    /// calling `progress` after each, then runs them all.
    pub async fn start(
        template: AgentConfig,
        profile: &FleetProfile,
        options: &FleetOptions,
        progress: impl Fn(usize) + Send + Sync + 'static,
    ) -> Result<Self, AgentError> {
        let quic = match &template.quic {
            Some(q) => q.clone(),
            None => crate::push::client_endpoint(false)?,
        };
        let metrics = template.metrics.clone();
        // The simulator's own App Store traffic need not cost a TLS handshake per device.
        let store = match &template.shared_store {
            Some(s) => s.clone(),
            None => crate::store_lookup::StoreLookup::new(template.store.clone())?,
        };
        let limit = Arc::new(Semaphore::new(options.concurrency.max(1)));
        let progress = Arc::new(progress);
        let shutdown = CancellationToken::new();
        let mut set = JoinSet::new();
        for index in 0..options.count {
            let mut config = template.clone();
            config.facts = profile.facts(index, &options.run);
            config.quic = Some(quic.clone());
            config.shared_store = Some(store.clone());
            config.state_path = options
                .state_dir
                .as_ref()
                .map(|d| d.join(format!("{}.json", config.facts.udid)));
            let limit = limit.clone();
            let progress = progress.clone();
            let stop = shutdown.clone();
            set.spawn(async move {
                let permit = limit.acquire_owned().await;
                let agent = Agent::start(config).await;
                drop(permit);
                progress(index);
                // A device checks in as soon as it is enrolled, as a real one does, not
                // when the whole fleet is.
                let task = agent.as_ref().ok().map(|a| {
                    let running = a.clone();
                    tokio::spawn(async move { running.run(stop).await })
                });
                (index, agent, task)
            });
        }
        let mut agents: Vec<Option<Agent>> = (0..options.count).map(|_| None).collect();
        let mut tasks = Vec::with_capacity(options.count);
        let mut failed = None;
        while let Some(joined) = set.join_next().await {
            let Ok((index, agent, task)) = joined else {
                continue;
            };
            tasks.extend(task);
            match agent {
                Ok(a) => agents[index] = Some(a),
                Err(e) => failed = failed.or(Some(e)),
            }
        }
        if let Some(e) = failed {
            // The devices already running stop with the fleet that could not start.
            shutdown.cancel();
            return Err(e);
        }
        let agents: Vec<Agent> = agents.into_iter().flatten().collect();
        Ok(Self {
            agents,
            metrics,
            shutdown,
            tasks,
        })
    }

    /// The UDIDs, in index order.
    pub fn udids(&self) -> Vec<String> {
        self.facts().into_iter().map(|f| f.udid.0).collect()
    }

    /// The serial numbers, in index order.
    pub fn serials(&self) -> Vec<String> {
        self.facts()
            .into_iter()
            .map(|f| f.serial_number.0)
            .collect()
    }

    fn facts(&self) -> Vec<DeviceFacts> {
        self.agents
            .iter()
            .map(|a| {
                a.device()
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .facts
                    .clone()
            })
            .collect()
    }

    /// Stops every device (each saves its state).
    pub async fn stop(self) {
        self.shutdown.cancel();
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// Resident and peak resident memory of this process, in bytes (Linux).
pub fn memory() -> Option<(u64, u64)> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    memory_of_status(&status)
}

/// CPU time (user and system) this process has used, in seconds (Linux).
pub fn cpu_seconds() -> Option<f64> {
    cpu_seconds_of_stat(&std::fs::read_to_string("/proc/self/stat").ok()?)
}

/// Reads `utime` + `stime` from a `/proc/<pid>/stat` line, in seconds (the kernel
/// counts them in USER_HZ ticks, 100 a second on Linux).
pub fn cpu_seconds_of_stat(stat: &str) -> Option<f64> {
    // The command name in parentheses may hold spaces: fields are counted after it.
    let (_, rest) = stat.rsplit_once(')')?;
    let mut fields = rest.split_whitespace().skip(11);
    let user: u64 = fields.next()?.parse().ok()?;
    let system: u64 = fields.next()?.parse().ok()?;
    Some((user + system) as f64 / 100.0)
}

/// Reads `VmRSS` and `VmHWM` from a `/proc/<pid>/status` text.
pub fn memory_of_status(status: &str) -> Option<(u64, u64)> {
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<u64>().ok())
            .map(|kb| kb * 1024)
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// A serial number for device `index` of fleet `run`: 12 characters, the run's first
/// letters, three that stand for the whole run name (so fleets whose names share
/// their first letters, such as `LOAD0` and `LOAD1`, do not share serial numbers) and
/// the index.
fn serial_number(run: &str, index: usize) -> String {
    let prefix: String = run
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(3)
        .collect::<String>()
        .to_uppercase();
    // FNV-1a of the run name, in base 36.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in run.bytes() {
        hash = (hash ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    const DIGITS: &[u8; 36] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ";
    let tag: String = (0..3)
        .map(|i| char::from(DIGITS[((hash >> (i * 8)) % 36) as usize]))
        .collect();
    format!("{prefix}{tag}{:06}", index % 1_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fleets_whose_names_share_a_prefix_get_their_own_serial_numbers() {
        let a: std::collections::HashSet<String> =
            (0..1000).map(|i| serial_number("LOAD0", i)).collect();
        let b: std::collections::HashSet<String> =
            (0..1000).map(|i| serial_number("LOAD1", i)).collect();
        assert_eq!(a.len(), 1000);
        assert!(a.is_disjoint(&b));
        assert!(a.iter().all(|s| s.len() == 12 && s.starts_with("LOA")));
    }

    #[test]
    fn profile_mix_follows_weights_and_is_deterministic() {
        let profile = FleetProfile::parse(
            r#"
            [[devices]]
            weight = 3
            platform = "ios"
            os_versions = ["17.5", "16.7"]
            supervised = true

            [[devices]]
            weight = 1
            platform = "macos"
            os_versions = ["14.5"]
            ownership = "personal"
            "#,
        )
        .unwrap();
        let facts: Vec<_> = (0..8).map(|i| profile.facts(i, "run1")).collect();
        let macs = facts
            .iter()
            .filter(|f| f.platform == Platform::MacOs)
            .count();
        assert_eq!(macs, 2);
        assert!(
            facts
                .iter()
                .filter(|f| f.platform == Platform::MacOs)
                .all(|f| f.ownership == Ownership::Personal && !f.supervised)
        );
        assert_eq!(profile.facts(5, "run1").udid, facts[5].udid);
        let udids: std::collections::HashSet<_> = facts.iter().map(|f| f.udid.clone()).collect();
        assert_eq!(udids.len(), 8);
    }

    #[test]
    fn bad_profiles_are_refused_with_the_reason() {
        assert!(
            FleetProfile::parse("devices = []")
                .unwrap_err()
                .contains("weight")
        );
        let err =
            FleetProfile::parse("[[devices]]\nplatform = \"ios\"\nos_versions = []\n").unwrap_err();
        assert!(err.contains("os_versions"), "{err}");
        assert!(
            FleetProfile::parse("[[devices]]\nplatform = \"watchos\"\nos_versions = [\"1\"]\n")
                .is_err()
        );
    }

    #[test]
    fn shipped_example_profile_parses() {
        let text = include_str!("../profiles/mixed.toml");
        let profile = FleetProfile::parse(text).unwrap();
        assert_eq!(profile.devices.len(), 5);
        let personal = profile
            .devices
            .iter()
            .find(|d| d.ownership == Ownership::Personal)
            .unwrap();
        assert_eq!(personal.persona.update, crate::persona::Response::Decline);
        assert!(
            profile
                .devices
                .iter()
                .any(|d| d.kiosk && !d.app_store_allowed)
        );
        // Device number 8 is the personal phone: its user types their own Apple ID.
        let facts = profile.facts(8, "RUN");
        assert_eq!(facts.ownership, Ownership::Personal);
        assert_eq!(facts.persona.apple_id_to_enter, "user8@example.com");
    }

    #[test]
    fn cpu_time_is_read_after_the_command_name() {
        // pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime
        let stat = "4242 (tokio rt) worker) S 1 4242 4242 0 -1 4194560 10 0 0 0 250 125 0 0 20 0";
        assert_eq!(cpu_seconds_of_stat(stat), Some(3.75));
        assert_eq!(cpu_seconds_of_stat("4242 (x) S 1"), None);
        assert!(cpu_seconds().is_some_and(|s| s >= 0.0));
    }

    #[test]
    fn memory_fields_are_read_in_bytes() {
        let status = "Name:\tx\nVmHWM:\t  2048 kB\nVmRSS:\t  1024 kB\n";
        assert_eq!(memory_of_status(status), Some((1024 * 1024, 2048 * 1024)));
    }
}
