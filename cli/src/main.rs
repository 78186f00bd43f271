//! `orchard`: Orchard's admin API from a shell. Server, CA and token come from flags or
//! `ORCHARD_SERVER`, `ORCHARD_CA` and `ORCHARD_TOKEN`; answers are tables for people and
//! JSON with `--json` for scripts; apps, groups, tokens and users are taken by name
//! where the name is unique.

mod client;
mod table;

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use reqwest::Method;
use serde_json::{Value, json};

use client::Api;
use table::Table;

#[derive(Parser)]
#[command(name = "orchard", version, about = "Orchard's admin API from a shell")]
struct Cli {
    /// The server's URL.
    #[arg(
        long,
        env = "ORCHARD_SERVER",
        default_value = "https://127.0.0.1:8443",
        global = true
    )]
    server: String,
    /// The server's CA certificate (PEM), e.g. the data directory's `ca.pem`; without
    /// it the web's roots are trusted.
    #[arg(long, env = "ORCHARD_CA", global = true)]
    ca: Option<PathBuf>,
    /// An admin token.
    #[arg(long, env = "ORCHARD_TOKEN", hide_env_values = true, global = true)]
    token: Option<String>,
    /// Print the server's JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The enrollment details agents need (shared secret, server URL, push topic).
    Enrollment {
        /// Print only the shared enrollment secret (for `--enrollment-secret`).
        #[arg(long)]
        secret: bool,
    },
    /// VPP tokens.
    #[command(subcommand)]
    Tokens(Tokens),
    /// Apps with their license counts.
    Apps,
    /// Groups and their members.
    #[command(subcommand)]
    Groups(Groups),
    /// Assign an app to a group.
    Assign {
        /// App name or id.
        #[arg(long)]
        app: String,
        /// Group name or id.
        #[arg(long)]
        group: String,
        /// required, available or uninstall.
        #[arg(long, default_value = "required")]
        intent: String,
        /// device or user.
        #[arg(long, default_value = "device")]
        license_type: String,
    },
    /// Assignments; `--delete ID` removes one.
    Assignments {
        /// Delete this assignment (its licenses go back unless another needs them).
        #[arg(long, value_name = "ID")]
        delete: Option<String>,
    },
    /// Devices, filtered as the API filters them.
    Devices {
        /// Print only the UDIDs, one per line (for `groups add-devices`).
        #[arg(long)]
        udids: bool,
        /// ios, ipados, macos or unknown.
        #[arg(long)]
        platform: Option<String>,
        /// Group name or id.
        #[arg(long)]
        group: Option<String>,
    },
    /// Users; `--create EMAIL` adds one.
    Users {
        /// Add a user with this email.
        #[arg(long, value_name = "EMAIL")]
        create: Option<String>,
        /// The new user's name.
        #[arg(long, requires = "create")]
        name: Option<String>,
    },
    /// Install states.
    Installs {
        /// App name or id.
        #[arg(long)]
        app: Option<String>,
        /// A device's UDID.
        #[arg(long)]
        device: Option<String>,
        /// e.g. installed, failed, license_failed.
        #[arg(long)]
        status: Option<String>,
    },
    /// Prompts devices showed.
    Prompts {
        /// A device's UDID.
        #[arg(long)]
        device: Option<String>,
    },
    /// Take licenses back.
    Revoke {
        /// App name or id: every license of the app.
        #[arg(long)]
        app: Option<String>,
        /// A device's UDID: every license of the device.
        #[arg(long)]
        device: Option<String>,
    },
    /// The audit log, newest first.
    Audit {
        /// Admin token name or id.
        #[arg(long)]
        actor: Option<String>,
    },
    /// Events; with --follow, waits for new ones until interrupted.
    Events {
        /// Keep the stream open.
        #[arg(long)]
        follow: bool,
        /// A kind (install.status) or family (install).
        #[arg(long)]
        kind: Option<String>,
        /// App name or id.
        #[arg(long)]
        app: Option<String>,
        /// Start after this event id.
        #[arg(long)]
        after: Option<i64>,
    },
    /// Admin tokens.
    #[command(subcommand, name = "admin-tokens")]
    AdminTokens(AdminTokens),
}

#[derive(Subcommand)]
enum Tokens {
    /// List VPP tokens.
    List,
    /// Upload a token file.
    Upload {
        /// Display name.
        #[arg(long)]
        name: String,
        /// The `.vpptoken` file.
        #[arg(long)]
        file: PathBuf,
        /// Agree that user and device data is sent to Apple.
        #[arg(long)]
        consent: bool,
    },
    /// Sync a token with Apple now.
    Sync {
        /// Token name or id.
        #[arg(value_name = "TOKEN")]
        vpp_token: String,
    },
}

#[derive(Subcommand)]
enum Groups {
    /// List groups.
    List,
    /// Create a group.
    Create {
        /// Its name.
        name: String,
        /// device or user.
        #[arg(long, default_value = "device")]
        kind: String,
    },
    /// Add devices (by UDID) to a device group.
    AddDevices {
        /// Group name or id.
        group: String,
        /// UDIDs.
        #[arg(required = true)]
        udids: Vec<String>,
    },
    /// A group's members.
    Members {
        /// Group name or id.
        group: String,
    },
}

#[derive(Subcommand)]
enum AdminTokens {
    /// List admin tokens.
    List,
    /// Create a token; its secret is printed once.
    Create {
        /// Unique name.
        name: String,
        /// admin, manager, operator or auditor.
        #[arg(long)]
        role: String,
        /// Seconds it works (default: until revoked).
        #[arg(long)]
        expires_in_seconds: Option<u64>,
    },
    /// Replace a token's secret; the new one is printed once.
    Rotate {
        /// Admin token name or id.
        #[arg(value_name = "ADMIN_TOKEN")]
        admin_token: String,
    },
    /// Revoke a token.
    Revoke {
        /// Admin token name or id.
        #[arg(value_name = "ADMIN_TOKEN")]
        admin_token: String,
    },
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    if let Err(e) = run(cli).await {
        eprintln!("orchard: {e:#}");
        std::process::exit(1);
    }
}

/// What a command prints: the server's JSON, the table people read, or plain lines
/// for other commands to read.
enum Output {
    Json(Value),
    Table(Value, Table),
    Lines(Vec<String>),
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let ca = cli
        .ca
        .as_ref()
        .map(|p| std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display())))
        .transpose()?;
    let token = cli
        .token
        .as_deref()
        .context("no admin token: give --token or set ORCHARD_TOKEN")?;
    let api = Api::new(&cli.server, ca.as_deref(), token)?;
    if let Command::Events {
        follow: true,
        kind,
        app,
        after,
    } = &cli.command
    {
        let path = events_path(&api, kind.as_deref(), app.as_deref()).await?;
        return follow_events(&api, &path, *after, cli.json).await;
    }
    match command(&api, cli.command).await? {
        Output::Json(v) => println!("{}", serde_json::to_string_pretty(&v)?),
        Output::Table(v, _) if cli.json => println!("{}", serde_json::to_string_pretty(&v)?),
        Output::Table(_, table) => print!("{table}"),
        Output::Lines(lines) => lines.iter().for_each(|l| println!("{l}")),
    }
    Ok(())
}

fn items_table(items: &[Value], columns: &[(&str, &str)]) -> Output {
    let mut table = Table::new(columns.iter().map(|(title, _)| *title).collect());
    for item in items {
        table.row(
            columns
                .iter()
                .map(|(_, path)| table::cell(item, path))
                .collect(),
        );
    }
    Output::Table(Value::Array(items.to_vec()), table)
}

fn query(pairs: &[(&str, Option<String>)]) -> String {
    let parts: Vec<String> = pairs
        .iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={}", encode(v))))
        .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!("?{}", parts.join("&"))
    }
}

/// Percent-encodes a query value.
fn encode(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

async fn app_id(api: &Api, app: Option<&str>) -> anyhow::Result<Option<String>> {
    match app {
        Some(a) => Ok(Some(api.resolve("/v1/apps", "name", a).await?)),
        None => Ok(None),
    }
}

async fn events_path(api: &Api, kind: Option<&str>, app: Option<&str>) -> anyhow::Result<String> {
    let app = app_id(api, app).await?;
    Ok(format!(
        "/v1/events{}",
        query(&[("kind", kind.map(str::to_owned)), ("app_id", app)])
    ))
}

async fn command(api: &Api, command: Command) -> anyhow::Result<Output> {
    Ok(match command {
        Command::Enrollment { secret } => {
            let details = api.get("/v1/enrollment").await?;
            if secret {
                Output::Lines(vec![
                    details["enrollment_secret"]
                        .as_str()
                        .context("the server sent no enrollment secret")?
                        .to_owned(),
                ])
            } else {
                Output::Json(details)
            }
        }
        Command::Tokens(Tokens::List) => items_table(
            &api.list_all("/v1/tokens").await?,
            &[
                ("ID", "id"),
                ("NAME", "name"),
                ("STATUS", "status"),
                ("EXPIRES", "expires_at"),
                ("LAST SYNC", "last_sync_at"),
            ],
        ),
        Command::Tokens(Tokens::Upload {
            name,
            file,
            consent,
        }) => {
            let token_file = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            let body = json!({ "name": name, "token_file": token_file.trim(), "consent": consent });
            Output::Json(api.send(Method::POST, "/v1/tokens", &body).await?)
        }
        Command::Tokens(Tokens::Sync { vpp_token }) => {
            let id = api.resolve("/v1/tokens", "name", &vpp_token).await?;
            Output::Json(
                api.send(Method::POST, &format!("/v1/tokens/{id}/sync"), &json!({}))
                    .await?,
            )
        }
        Command::Apps => items_table(
            &api.list_all("/v1/apps").await?,
            &[
                ("ID", "id"),
                ("NAME", "name"),
                ("ADAM ID", "adam_id"),
                ("TOTAL", "licenses.total"),
                ("USED", "licenses.used"),
                ("AVAILABLE", "licenses.available"),
            ],
        ),
        Command::Groups(Groups::List) => items_table(
            &api.list_all("/v1/groups").await?,
            &[("ID", "id"), ("NAME", "name"), ("KIND", "kind")],
        ),
        Command::Groups(Groups::Create { name, kind }) => Output::Json(
            api.send(
                Method::POST,
                "/v1/groups",
                &json!({ "name": name, "kind": kind }),
            )
            .await?,
        ),
        Command::Groups(Groups::AddDevices { group, udids }) => {
            let id = api.resolve("/v1/groups", "name", &group).await?;
            Output::Json(
                api.send(
                    Method::POST,
                    &format!("/v1/groups/{id}/devices"),
                    &json!({ "udids": udids }),
                )
                .await?,
            )
        }
        Command::Groups(Groups::Members { group }) => {
            let id = api.resolve("/v1/groups", "name", &group).await?;
            let groups = api.list_all("/v1/groups").await?;
            let kind = groups
                .iter()
                .find(|g| g["id"] == id.as_str())
                .and_then(|g| g["kind"].as_str())
                .unwrap_or("device");
            let members = api
                .list_all(&format!(
                    "/v1/groups/{id}/{}",
                    if kind == "user" { "users" } else { "devices" }
                ))
                .await?;
            let rows: Vec<Value> = members
                .into_iter()
                .map(|m| json!({ "member": m }))
                .collect();
            items_table(&rows, &[("MEMBER", "member")])
        }
        Command::Assign {
            app,
            group,
            intent,
            license_type,
        } => {
            let app_id = api.resolve("/v1/apps", "name", &app).await?;
            let group_id = api.resolve("/v1/groups", "name", &group).await?;
            let body = json!({ "app_id": app_id, "group_id": group_id, "intent": intent, "license_type": license_type });
            Output::Json(api.send(Method::POST, "/v1/assignments", &body).await?)
        }
        Command::Assignments { delete: Some(id) } => {
            Output::Json(api.delete(&format!("/v1/assignments/{id}")).await?)
        }
        Command::Assignments { delete: None } => items_table(
            &api.list_all("/v1/assignments").await?,
            &[
                ("ID", "id"),
                ("APP", "app_id"),
                ("GROUP", "group_id"),
                ("INTENT", "intent"),
                ("LICENSE", "license_type"),
            ],
        ),
        Command::Devices {
            udids,
            platform,
            group,
        } => {
            let group = match group {
                Some(g) => Some(api.resolve("/v1/groups", "name", &g).await?),
                None => None,
            };
            let path = format!(
                "/v1/devices{}",
                query(&[("platform", platform), ("group_id", group)])
            );
            let devices = api.list_all(&path).await?;
            if udids {
                return Ok(Output::Lines(
                    devices.iter().map(|d| table::cell(d, "udid")).collect(),
                ));
            }
            items_table(
                &devices,
                &[
                    ("UDID", "udid"),
                    ("SERIAL", "serial_number"),
                    ("PLATFORM", "platform"),
                    ("OS", "os_version"),
                    ("STATUS", "status"),
                    ("LAST SEEN", "last_seen_at"),
                ],
            )
        }
        Command::Users {
            create: Some(email),
            name,
        } => {
            let mut body = json!({ "email": email });
            if let Some(name) = name {
                body["name"] = json!(name);
            }
            Output::Json(api.send(Method::POST, "/v1/users", &body).await?)
        }
        Command::Users { create: None, .. } => items_table(
            &api.list_all("/v1/users").await?,
            &[("ID", "id"), ("EMAIL", "email"), ("NAME", "name")],
        ),
        Command::Installs {
            app,
            device,
            status,
        } => {
            let app = app_id(api, app.as_deref()).await?;
            let path = format!(
                "/v1/installs{}",
                query(&[("app_id", app), ("udid", device), ("status", status)])
            );
            items_table(
                &api.list_all(&path).await?,
                &[
                    ("APP", "app_id"),
                    ("DEVICE", "udid"),
                    ("STATUS", "status"),
                    ("VERSION", "version"),
                    ("REASON", "reason"),
                ],
            )
        }
        Command::Prompts { device } => {
            let path = format!("/v1/prompts{}", query(&[("udid", device)]));
            items_table(
                &api.list_all(&path).await?,
                &[
                    ("DEVICE", "udid"),
                    ("KIND", "kind"),
                    ("APP", "bundle_id"),
                    ("SHOWN", "shown_at"),
                    ("ANSWER", "answer"),
                ],
            )
        }
        Command::Revoke { app, device } => {
            let body = match (app, device) {
                (Some(app), None) => {
                    json!({ "app_id": api.resolve("/v1/apps", "name", &app).await? })
                }
                (None, Some(udid)) => json!({ "udid": udid }),
                _ => anyhow::bail!("give one of --app or --device"),
            };
            Output::Json(api.send(Method::POST, "/v1/licenses/revoke", &body).await?)
        }
        Command::Audit { actor } => {
            let path = format!("/v1/audit{}", query(&[("actor", actor)]));
            items_table(
                &api.list_all(&path).await?,
                &[
                    ("AT", "at"),
                    ("ACTOR", "actor"),
                    ("ACTION", "action"),
                    ("TARGET", "target"),
                    ("RESULT", "result"),
                ],
            )
        }
        Command::Events {
            kind, app, after, ..
        } => {
            let path = events_path(api, kind.as_deref(), app.as_deref()).await?;
            let path = match after {
                Some(id) => format!(
                    "{path}{}after={id}",
                    if path.contains('?') { '&' } else { '?' }
                ),
                None => path,
            };
            items_table(
                &api.list_all(&path).await?,
                &[
                    ("ID", "id"),
                    ("AT", "at"),
                    ("KIND", "kind"),
                    ("APP", "app_id"),
                    ("DEVICE", "udid"),
                    ("DATA", "data"),
                ],
            )
        }
        Command::AdminTokens(AdminTokens::List) => items_table(
            &api.list_all("/v1/admin-tokens").await?,
            &[
                ("ID", "id"),
                ("NAME", "name"),
                ("ROLE", "role"),
                ("EXPIRES", "expires_at"),
                ("CREATED", "created_at"),
            ],
        ),
        Command::AdminTokens(AdminTokens::Create {
            name,
            role,
            expires_in_seconds,
        }) => {
            let mut body = json!({ "name": name, "role": role });
            if let Some(s) = expires_in_seconds {
                body["expires_in_seconds"] = json!(s);
            }
            Output::Json(api.send(Method::POST, "/v1/admin-tokens", &body).await?)
        }
        Command::AdminTokens(AdminTokens::Rotate { admin_token }) => {
            let id = api
                .resolve("/v1/admin-tokens", "name", &admin_token)
                .await?;
            Output::Json(
                api.send(
                    Method::POST,
                    &format!("/v1/admin-tokens/{id}/rotate"),
                    &json!({}),
                )
                .await?,
            )
        }
        Command::AdminTokens(AdminTokens::Revoke { admin_token }) => {
            let id = api
                .resolve("/v1/admin-tokens", "name", &admin_token)
                .await?;
            Output::Json(api.delete(&format!("/v1/admin-tokens/{id}")).await?)
        }
    })
}

/// The longest event the stream may send before the client gives up on the connection.
const MAX_EVENT_BYTES: usize = 1 << 20;

/// Prints events as they come, one line each (one JSON object per line with `--json`),
/// resuming after the last one printed when the connection drops.
async fn follow_events(
    api: &Api,
    path: &str,
    after: Option<i64>,
    as_json: bool,
) -> anyhow::Result<()> {
    let mut last = after;
    loop {
        let mut response = match api.event_stream(path, last).await {
            Ok(r) => r,
            Err(e) => {
                eprintln!("orchard: the event stream failed ({e:#}); reconnecting");
                tokio::time::sleep(std::time::Duration::from_secs(2)).await;
                continue;
            }
        };
        let mut buffer = String::new();
        loop {
            let Ok(Some(chunk)) = response.chunk().await else {
                break;
            };
            buffer.push_str(&String::from_utf8_lossy(&chunk));
            if buffer.len() > MAX_EVENT_BYTES && !buffer.contains("\n\n") {
                eprintln!("orchard: an event longer than 1 MiB; reconnecting");
                break;
            }
            while let Some(end) = buffer.find("\n\n") {
                let block: String = buffer.drain(..end + 2).collect();
                let data: String = block
                    .lines()
                    .filter_map(|l| l.strip_prefix("data:"))
                    .map(str::trim)
                    .collect();
                let Ok(event) = serde_json::from_str::<Value>(&data) else {
                    continue;
                };
                last = event["id"].as_i64().or(last);
                if as_json {
                    println!("{event}");
                } else {
                    println!(
                        "{} {} {} {} {}",
                        table::cell(&event, "id"),
                        table::cell(&event, "at"),
                        table::cell(&event, "kind"),
                        table::cell(&event, "udid"),
                        table::cell(&event, "data")
                    );
                }
            }
        }
        eprintln!("orchard: the event stream closed; resuming");
    }
}
