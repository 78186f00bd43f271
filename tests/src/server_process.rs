//! The server as a child process of the testbed (`orchard-testbed server`): its memory is
//! measured apart from the fleet's, and it can be killed as a crash would.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use anyhow::Context;
use orchard_agent::fleet;
use serde_json::Value;

use crate::apple::AppleStandIn;

/// The server as a child process of this one.
pub struct ServerProcess {
    child: Child,
    /// Base URL.
    pub url: String,
    /// The admin token, printed on the first start of a data directory.
    pub admin_token: Option<String>,
    /// The server's CA, PEM.
    pub ca_pem: String,
}

impl ServerProcess {
    /// Starts `exe` (the `orchard-testbed` program) as a server against the stand-in,
    /// on `data_dir`, on PostgreSQL when `database` is given, listening on `listen`
    /// (a free port when absent); returns once it is ready.
    pub fn start(
        exe: &std::path::Path,
        apple: &AppleStandIn,
        apple_ca: &std::path::Path,
        data_dir: &std::path::Path,
        database: Option<&str>,
        listen: Option<std::net::SocketAddr>,
    ) -> anyhow::Result<Self> {
        let mut command = Command::new(exe);
        command.arg("server");
        if let Some(addr) = listen {
            command.args(["--listen", &addr.to_string()]);
        }
        if let Some(url) = database {
            command.env("ORCHARD_DATABASE_URL", url);
        }
        let mut child = command
            .args(["--data-dir"])
            .arg(data_dir)
            .args([
                "--apple-vpp-url",
                &apple.vpp_url(),
                "--apple-lookup-url",
                &apple.lookup_url(),
                "--apple-ca-file",
            ])
            .arg(apple_ca)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("cannot start the server process")?;
        let stdout = child
            .stdout
            .take()
            .context("no stdout from the server process")?;
        let mut lines = BufReader::new(stdout).lines();
        let ready: Value = loop {
            let line = lines
                .next()
                .context("the server process exited before it was ready")??;
            if let Some(json) = line.strip_prefix("ORCHARD_READY ") {
                break serde_json::from_str(json)?;
            }
        };
        let field = |k: &str| {
            ready[k]
                .as_str()
                .map(str::to_owned)
                .with_context(|| format!("server did not report {k}"))
        };
        Ok(Self {
            url: field("url")?,
            admin_token: ready["admin_token"].as_str().map(str::to_owned),
            ca_pem: field("ca_pem")?,
            child,
        })
    }

    /// Kills the process at once (SIGKILL): no shutdown of any kind.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// CPU time the process has used, seconds.
    pub fn cpu_seconds(&self) -> Option<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).ok()?;
        fleet::cpu_seconds_of_stat(&stat)
    }

    /// Peak resident memory, KiB.
    pub fn peak_rss(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        fleet::memory_of_status(&status).map(|(_, peak)| peak)
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
