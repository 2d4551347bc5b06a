//! The commands.
//!
//! Over 700 lines: one function per CLI command, each short; they share the output and
//! exit-code helpers at the top.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use leasehold_core::{
    format_duration, parse_duration, Alerting, AuditEvent, AuditSink, Error, ErrorKind,
    IssueRequest, IssuedLease, LeaseFilter, LeaseId, LeaseManager, LeasePages, LeaseRecord,
    LeaseState,
};
use serde_json::{json, Value};

use crate::alerts;
use crate::build::{self, Mode};
use crate::config::{self, is_usage_error, shown_path, Config};
use crate::output::{self, error_json, escape, record_json, time};
use crate::serve;
use crate::static_roles;
use crate::{Command, EXIT_FAILED, EXIT_OK, EXIT_USAGE};

/// A failure that ends the command: its exit code and one line for stderr.
struct Fail {
    code: u8,
    line: String,
}

impl Fail {
    fn usage(line: impl Into<String>) -> Fail {
        Fail {
            code: EXIT_USAGE,
            line: line.into(),
        }
    }

    fn from_error(e: &Error) -> Fail {
        let code = if is_usage_error(e.kind()) {
            EXIT_USAGE
        } else {
            EXIT_FAILED
        };
        Fail {
            code,
            line: one_line(&e.to_string()),
        }
    }
}

impl From<Error> for Fail {
    fn from(e: Error) -> Fail {
        Fail::from_error(&e)
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Where results go: JSON or tables on stdout.
struct Out {
    json: bool,
}

impl Out {
    fn emit(&self, value: &Value, human: impl FnOnce(&mut dyn Write) -> std::io::Result<()>) {
        let stdout = std::io::stdout();
        let mut lock = stdout.lock();
        // A closed pipe (`leasehold list | head`) is not an error worth reporting.
        let _ = if self.json {
            serde_json::to_writer_pretty(&mut lock, value)
                .map_err(std::io::Error::other)
                .and_then(|_| writeln!(lock))
        } else {
            human(&mut lock)
        };
        let _ = lock.flush();
    }
}

/// Runs one command; returns the exit code.
pub async fn run(config_path: PathBuf, json: bool, command: Command) -> u8 {
    let out = Out { json };
    // Before anything slow (reading the config, opening the store, building providers): from
    // here on a SIGINT or SIGTERM is an event these commands handle, never the default action
    // that would kill the process mid-way (a worker mid-revocation, an ephemeral credential
    // left behind).
    let signals = match &command {
        Command::Run { .. } => Some(Signals::install(false)),
        Command::Issue {
            ephemeral: true, ..
        } => Some(Signals::install(true)),
        _ => None,
    };
    let signals = match signals.transpose() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("leasehold: cannot install the signal handlers: {e}");
            return EXIT_FAILED;
        }
    };
    match dispatch(&config_path, &out, command, signals).await {
        Ok(code) => code,
        Err(f) => {
            eprintln!("leasehold: {}", f.line);
            f.code
        }
    }
}

fn load_config(path: &Path) -> Result<Config, Fail> {
    config::load(path).map_err(|e| Fail::usage(format!("config error: {e}")))
}

/// A build error is a configuration error when it is the caller's; either way it names the
/// secret and the file.
fn build_fail(path: &Path, e: Error) -> Fail {
    let shown = shown_path(path);
    // The context may hold the name escaped already (the library escapes what it quotes);
    // quoting it here with `{:?}` would escape the backslashes a second time.
    let where_ = match e.context("secret") {
        Some(s) => format!("{shown}: secrets (\"{}\"): ", escape(s)),
        None => format!("{shown}: "),
    };
    if is_usage_error(e.kind()) {
        let mut msg = e.message().to_string();
        if let Some(f) = e.context("field") {
            if !msg.starts_with(f) {
                msg = format!("{f}: {msg}");
            }
        }
        Fail::usage(format!("config error: {where_}{}", one_line(&msg)))
    } else {
        Fail {
            code: EXIT_FAILED,
            line: format!("{where_}{}", one_line(&e.to_string())),
        }
    }
}

async fn manager(path: &Path, config: &Config, mode: Mode) -> Result<LeaseManager, Fail> {
    build::manager(config, mode, None)
        .await
        .map_err(|e| build_fail(path, e))
}

fn known_secret(config: &Config, name: &str) -> Result<(), Fail> {
    if config.secrets.iter().any(|s| s.name == name) {
        return Ok(());
    }
    let names: Vec<&str> = config.secrets.iter().map(|s| s.name.as_str()).collect();
    Err(Fail::usage(format!(
        "no secret named {name:?} in the configuration (configured: {})",
        if names.is_empty() {
            "none".to_string()
        } else {
            names.join(", ")
        }
    )))
}

fn lease_id(s: &str) -> Result<LeaseId, Fail> {
    s.parse::<LeaseId>().map_err(Fail::from)
}

/// The longest identity, in characters.
const MAX_IDENTITY_CHARS: usize = 256;
/// The longest identity the library stores, in bytes of UTF-8.
const MAX_IDENTITY_BYTES: usize = 256;

/// Refuses an identity that is empty, too long, or holds a character that changes how the text
/// around it is shown (control characters, bidi overrides and isolates, zero-width characters):
/// it ends up in audit lines, tables and templates that people read.
fn check_identity(id: &str) -> Result<(), Fail> {
    let chars = id.chars().count();
    if chars == 0 {
        return Err(Fail::usage("identity: must not be empty"));
    }
    if let Some((i, c)) = id
        .chars()
        .enumerate()
        .find(|(_, c)| output::is_invisible(*c))
    {
        return Err(Fail::usage(format!(
            "identity: character {} is U+{:04X}, a control or invisible formatting character \
             (bidi override, zero-width, ...); an identity must be plain visible text",
            i + 1,
            c as u32
        )));
    }
    if chars > MAX_IDENTITY_CHARS {
        return Err(Fail::usage(format!(
            "identity: {chars} characters; at most {MAX_IDENTITY_CHARS}"
        )));
    }
    if id.len() > MAX_IDENTITY_BYTES {
        return Err(Fail::usage(format!(
            "identity: {chars} characters take {} bytes in UTF-8; the store keeps at most \
             {MAX_IDENTITY_BYTES} bytes",
            id.len()
        )));
    }
    Ok(())
}

/// Whether the store at `url` lives only as long as this process.
fn store_is_process_local(url: &str) -> bool {
    url == "memory"
        || (url.starts_with("sqlite:") && (url.contains(":memory:") || url.contains("mode=memory")))
}

fn cli_duration(flag: &str, s: &str) -> Result<Duration, Fail> {
    parse_duration(flag, s).map_err(|e| Fail::usage(one_line(e.message())))
}

async fn dispatch(
    path: &Path,
    out: &Out,
    command: Command,
    signals: Option<Signals>,
) -> Result<u8, Fail> {
    let config = load_config(path)?;
    match command {
        Command::Secrets => secrets(path, &config, out).await,
        Command::Validate { names } => validate(path, &config, out, names).await,
        Command::Issue {
            name,
            ttl,
            identity,
            no_wait,
            ephemeral,
        } => {
            let args = IssueArgs {
                name,
                ttl,
                identity,
                no_wait,
            };
            match signals.filter(|_| ephemeral) {
                Some(signals) => issue_ephemeral(path, &config, out, args, signals).await,
                None => {
                    let (m, req) = prepare_issue(path, &config, &args, false).await?;
                    let lease = m.issue(&args.name, req).await?;
                    print_issued(out, &lease);
                    Ok(EXIT_OK)
                }
            }
        }
        Command::Renew {
            lease_id: id,
            increment,
        } => {
            let id = lease_id(&id)?;
            let inc = increment
                .map(|d| cli_duration("--increment", &d))
                .transpose()?;
            let m = manager(path, &config, Mode::OneShot).await?;
            let lease = m.renew(&id, inc).await?;
            out.emit(&record_json(&lease), |w| {
                output::write_kv(w, &output::record_rows(&lease))
            });
            Ok(EXIT_OK)
        }
        Command::Revoke {
            lease_ids,
            secret,
            force,
        } => revoke(path, &config, out, lease_ids, secret, force).await,
        Command::Lookup { lease_id: id } => {
            let id = lease_id(&id)?;
            let m = manager(path, &config, Mode::OneShot).await?;
            let lease = m.lookup(&id).await.map_err(|e| {
                let mut f = Fail::from_error(&e);
                if e.kind() == ErrorKind::Store {
                    f.line.push_str(
                        " (a damaged row? `list` shows it; `revoke --force ID` removes it)",
                    );
                }
                f
            })?;
            let mut v = record_json(&lease);
            v["installation"] = Value::String(m.installation_id().to_string());
            out.emit(&v, |w| {
                let mut rows = output::record_rows(&lease);
                rows.push(("installation".into(), m.installation_id().to_string()));
                output::write_kv(w, &rows)
            });
            Ok(EXIT_OK)
        }
        Command::List { secret, state } => {
            if let Some(s) = &secret {
                known_secret(&config, s)?;
            }
            let mut filter = match &secret {
                Some(s) => LeaseFilter::secret(s),
                None => LeaseFilter::all(),
            };
            // `damaged` is not a lease state: it lists only the rows the store cannot read.
            let only_damaged = state.as_deref() == Some("damaged");
            if let Some(s) = state.filter(|_| !only_damaged) {
                filter = filter.state(s.parse::<LeaseState>().map_err(|e| {
                    Fail::usage(format!("{} (or \"damaged\")", one_line(&e.to_string())))
                })?);
            }
            let with_damaged = only_damaged || filter.states.is_empty();
            let m = manager(path, &config, Mode::OneShot).await?;
            let leases = if only_damaged {
                Vec::new()
            } else {
                list_all(&m, filter).await?
            };
            let damaged: Vec<_> = if with_damaged {
                m.damaged()
                    .await?
                    .into_iter()
                    .filter(|d| secret.is_none() || d.secret == secret)
                    .collect()
            } else {
                Vec::new()
            };
            let v = Value::Array(
                leases
                    .iter()
                    .map(record_json)
                    .chain(damaged.iter().map(output::damaged_json))
                    .collect(),
            );
            out.emit(&v, |w| output::write_records(w, &leases, &damaged));
            Ok(EXIT_OK)
        }
        Command::Run { metrics_listen } => match signals {
            Some(signals) => run_worker(path, &config, out, signals, metrics_listen).await,
            None => Err(Fail {
                code: EXIT_FAILED,
                line: "run: the signal handlers are not installed".into(),
            }),
        },
        Command::Reconcile { apply, secret } => reconcile(path, &config, out, apply, secret).await,
        Command::Rotate { name, wait } => {
            let wait = cli_duration("--wait", &wait)?;
            let role = static_role(&config, &name)?;
            let store = build::store(&config.store.url).await?;
            let rotator = static_roles::rotator(
                role,
                static_roles::coordination(store.as_ref())?,
                &static_roles::process_owner(&config.manager),
            )
            .await
            .map_err(|e| static_role_fail(path, &name, e))?;
            let outcome = rotator.rotate_now(wait).await;
            // Hand the claim back at once: a `run` process takes over (and drops the previous
            // password after the grace) without waiting for the hold to lapse.
            if let Err(e) = rotator.release().await {
                eprintln!(
                    "leasehold: releasing the claim of {name:?} failed: {}",
                    one_line(&e.to_string())
                );
            }
            let outcome = outcome?;
            let (v, rows) = static_roles::outcome_json(&name, &outcome);
            out.emit(&v, |w| output::write_kv(w, &rows));
            match outcome {
                leasehold_core::static_role::RotationOutcome::Rotated { .. } => Ok(EXIT_OK),
                _ => Err(Fail {
                    code: EXIT_FAILED,
                    line: format!(
                        "rotate {name}: the rotator holding the claim did not rotate within {}; the request stays recorded for it",
                        format_duration(wait)
                    ),
                }),
            }
        }
        Command::Read { name } => {
            let role = static_role(&config, &name)?;
            let current = static_roles::read(role)
                .await
                .map_err(|e| static_role_fail(path, &name, e))?;
            let (v, rows) = static_roles::current_json(&name, &current);
            out.emit(&v, |w| output::write_kv(w, &rows));
            Ok(EXIT_OK)
        }
    }
}

fn static_role<'a>(
    config: &'a Config,
    name: &str,
) -> Result<&'a static_roles::StaticRoleConfig, Fail> {
    config
        .static_roles
        .iter()
        .find(|r| r.name == name)
        .ok_or_else(|| {
            let names: Vec<&str> = config
                .static_roles
                .iter()
                .map(|r| r.name.as_str())
                .collect();
            Fail::usage(format!(
                "no static role named {name:?} in the configuration (configured: {})",
                if names.is_empty() {
                    "none".to_string()
                } else {
                    names.join(", ")
                }
            ))
        })
}

/// Like [`build_fail`], naming the static role.
fn static_role_fail(path: &Path, name: &str, e: Error) -> Fail {
    let shown = shown_path(path);
    if is_usage_error(e.kind()) {
        Fail::usage(format!(
            "config error: {shown}: static_roles ({:?}): {}",
            escape(name),
            one_line(e.message())
        ))
    } else {
        Fail {
            code: EXIT_FAILED,
            line: format!(
                "static role {:?}: {}",
                escape(name),
                one_line(&e.to_string())
            ),
        }
    }
}

/// What `issue` was asked for.
struct IssueArgs {
    name: String,
    ttl: Option<String>,
    identity: Option<String>,
    no_wait: bool,
}

/// Checks the request (before the store is opened) and builds the manager. Refuses a revocable
/// secret on a store that dies with this process unless `ephemeral`: the lease record would go
/// at exit, the credential would stay, and nothing would ever revoke it.
async fn prepare_issue(
    path: &Path,
    config: &Config,
    args: &IssueArgs,
    ephemeral: bool,
) -> Result<(LeaseManager, IssueRequest), Fail> {
    known_secret(config, &args.name)?;
    let mut req = IssueRequest::new().wait(!args.no_wait);
    if let Some(t) = &args.ttl {
        req = req.ttl(cli_duration("--ttl", t)?);
    }
    if let Some(i) = &args.identity {
        check_identity(i)?;
        req = req.identity(i);
    }
    req.check()?;
    if !ephemeral && store_is_process_local(&config.store.url) {
        if let Some(s) = config.secrets.iter().find(|s| s.name == args.name) {
            let secret = build::secret(s)
                .await
                .map_err(|e| build_fail(path, e.with_context("secret", &s.name)))?;
            if secret.provider().capabilities().revocable {
                return Err(Fail::usage(format!(
                    "issue {}: store.url {:?} keeps leases only while this process runs, so the \
                     credential would outlive the only record of it and never be revoked; use a \
                     durable store (sqlite://PATH, postgres://...), or pass --ephemeral to revoke \
                     it when this command exits",
                    args.name,
                    escape(&config.store.url)
                )));
            }
        }
    }
    let m = manager(path, config, Mode::OneShot).await?;
    Ok((m, req))
}

fn print_issued(out: &Out, lease: &IssuedLease) {
    out.emit(&output::issued_json(lease), |w| {
        output::write_kv(w, &output::issued_rows(lease))?;
        if !lease.live() {
            writeln!(
                w,
                "\nnote: the credential is not confirmed live yet; it may take a moment"
            )?;
        }
        Ok(())
    });
}

/// `issue --ephemeral`: issue, print, hold until a signal, end of stdin or expiry, revoke.
async fn issue_ephemeral(
    path: &Path,
    config: &Config,
    out: &Out,
    args: IssueArgs,
    mut signals: Signals,
) -> Result<u8, Fail> {
    let process_local = store_is_process_local(&config.store.url);
    let (m, req) = tokio::select! {
        biased;
        s = signals.recv() => {
            return Err(Fail { code: EXIT_FAILED, line: format!("{s} received; nothing was issued") });
        }
        r = prepare_issue(path, config, &args, true) => r?,
    };
    // An issue is not cut short: a credential may exist by the time a signal comes, and only
    // the finished issue knows its lease. A signal meanwhile revokes it as soon as it is made.
    let mut stopped: Option<&'static str> = None;
    let issued = {
        let issuing = m.issue(&args.name, req);
        tokio::pin!(issuing);
        loop {
            tokio::select! {
                r = &mut issuing => break r,
                s = signals.recv(), if stopped.is_none() => stopped = Some(s),
            }
        }
    };
    let lease = match issued {
        Ok(l) => l,
        Err(e) => {
            if process_local {
                // What a failed issue left (a record awaiting cleanup) dies with the store:
                // clean it up now.
                revoke_leftovers(&m, &args.name).await;
            }
            return Err(e.into());
        }
    };
    let reason = match stopped {
        Some(s) => s,
        None => {
            print_issued(out, &lease);
            eprintln!(
                "leasehold: holding lease {} until SIGINT, SIGTERM or SIGHUP, end of stdin, or its expiry at {}; then it is revoked",
                lease.lease_id,
                time(lease.expires_at)
            );
            hold(&mut signals, lease.expires_at).await
        }
    };
    match m.revoke(&lease.lease_id).await {
        Ok(()) if stopped.is_some() => Err(Fail {
            code: EXIT_FAILED,
            line: format!(
                "{reason} received while issuing; revoked lease {} without printing its credential",
                lease.lease_id
            ),
        }),
        Ok(()) => {
            eprintln!("leasehold: {reason}: revoked lease {}", lease.lease_id);
            Ok(EXIT_OK)
        }
        Err(e) => Err(Fail {
            code: EXIT_FAILED,
            line: format!(
                "{reason}: could not revoke lease {}: {}; {}",
                lease.lease_id,
                one_line(&e.to_string()),
                if process_local {
                    format!(
                        "the credential {:?} may survive: remove it by hand",
                        escape(lease.credentials.principal())
                    )
                } else {
                    "it stays in the store and `leasehold run` retries".to_string()
                }
            ),
        }),
    }
}

/// Waits for a signal, end of stdin, or `expires_at`; says which.
async fn hold(signals: &mut Signals, expires_at: DateTime<Utc>) -> &'static str {
    let left = (expires_at - Utc::now()).to_std().unwrap_or(Duration::ZERO);
    tokio::select! {
        s = signals.recv() => s,
        _ = stdin_closed() => "end of stdin",
        _ = tokio::time::sleep(left) => "the lease expired",
    }
}

/// Resolves when stdin reaches end of file (or cannot be read).
async fn stdin_closed() {
    use tokio::io::AsyncReadExt;
    let mut stdin = tokio::io::stdin();
    let mut buf = [0u8; 1024];
    while let Ok(n) = stdin.read(&mut buf).await {
        if n == 0 {
            return;
        }
    }
}

/// Revokes what a store that dies with this process still holds for `secret`, bounded.
async fn revoke_leftovers(m: &LeaseManager, secret: &str) {
    match tokio::time::timeout(Duration::from_secs(60), m.revoke_secret(secret)).await {
        Ok(Ok(s)) if s.failed.is_empty() => {}
        Ok(Ok(s)) => {
            for (id, e) in s.failed {
                eprintln!(
                    "leasehold: could not clean up lease {id} of the failed issue: {}",
                    one_line(&e.to_string())
                );
            }
        }
        Ok(Err(e)) => eprintln!(
            "leasehold: could not clean up after the failed issue: {}",
            one_line(&e.to_string())
        ),
        Err(_) => eprintln!("leasehold: cleaning up after the failed issue took too long"),
    }
}

async fn list_all(m: &LeaseManager, filter: LeaseFilter) -> Result<Vec<LeaseRecord>, Fail> {
    Ok(LeasePages::new(&**m.store(), filter, 1000)
        .collect_all()
        .await?)
}

async fn secrets(path: &Path, config: &Config, out: &Out) -> Result<u8, Fail> {
    let mut items = Vec::new();
    let mut rows = Vec::new();
    for s in &config.secrets {
        let secret = build::secret(s)
            .await
            .map_err(|e| build_fail(path, e.with_context("secret", &s.name)))?;
        let caps = secret.provider().capabilities();
        items.push(json!({
            "name": s.name,
            "type": s.provider.type_name(),
            "kind": secret.provider().kind(),
            "default_ttl": format_duration(s.default_ttl),
            "max_ttl": format_duration(s.max_ttl),
            "username_template": secret.username_template().source(),
            "renewable": caps.renewable,
            "revocable": caps.revocable,
        }));
        rows.push(vec![
            s.name.clone(),
            s.provider.type_name().to_string(),
            format_duration(s.default_ttl),
            format_duration(s.max_ttl),
            caps.renewable.to_string(),
            caps.revocable.to_string(),
        ]);
    }
    // The store's installation id: the mark on every credential these secrets create. A store
    // that cannot be opened does not hide the configured secrets.
    let installation = match build::store(&config.store.url).await {
        Ok(store) => store.installation_id().await,
        Err(e) => Err(e),
    };
    let installation = match installation {
        Ok(id) => Some(id),
        Err(e) => {
            eprintln!(
                "leasehold: the installation id is unknown: the store failed: {}",
                one_line(&e.to_string())
            );
            None
        }
    };
    for item in &mut items {
        item["installation"] = json!(installation);
    }
    out.emit(&Value::Array(items), |w| {
        output::write_table(
            w,
            &[
                "NAME",
                "TYPE",
                "DEFAULT TTL",
                "MAX TTL",
                "RENEWABLE",
                "REVOCABLE",
            ],
            &rows,
        )?;
        writeln!(
            w,
            "\ninstallation {} (the store's id; every credential carries it)",
            installation.as_deref().unwrap_or("unknown")
        )
    });
    Ok(EXIT_OK)
}

async fn validate(path: &Path, config: &Config, out: &Out, names: Vec<String>) -> Result<u8, Fail> {
    for n in &names {
        if !config.static_roles.iter().any(|r| &r.name == n) {
            known_secret(config, n)?;
        }
    }
    let mut results = Vec::new();
    let mut rows = Vec::new();
    let mut failed = false;
    for s in &config.secrets {
        if !names.is_empty() && !names.contains(&s.name) {
            continue;
        }
        let secret = build::secret(s)
            .await
            .map_err(|e| build_fail(path, e.with_context("secret", &s.name)))?;
        let r = match tokio::time::timeout(Duration::from_secs(60), secret.provider().validate())
            .await
        {
            Ok(r) => r,
            Err(_) => Err(Error::new(
                ErrorKind::Timeout,
                "validate did not finish within 60s",
            )),
        };
        match r {
            Ok(()) => {
                results.push(json!({ "secret": s.name, "ok": true }));
                rows.push(vec![s.name.clone(), "ok".into(), String::new()]);
            }
            Err(e) => {
                failed = true;
                results.push(json!({ "secret": s.name, "ok": false, "error": error_json(&e) }));
                rows.push(vec![
                    s.name.clone(),
                    "FAILED".into(),
                    one_line(&e.to_string()),
                ]);
            }
        }
    }
    for role in &config.static_roles {
        if !names.is_empty() && !names.contains(&role.name) {
            continue;
        }
        let checked = async {
            let target = static_roles::target(role).await?;
            let publisher = static_roles::publisher(role).await?;
            target.validate().await?;
            publisher.validate().await
        };
        let r = match tokio::time::timeout(Duration::from_secs(60), checked).await {
            Ok(r) => r,
            Err(_) => Err(Error::new(
                ErrorKind::Timeout,
                "validate did not finish within 60s",
            )),
        };
        match r {
            Ok(()) => {
                results.push(json!({
                    "static_role": role.name,
                    "ok": true,
                    "type": role.type_name(),
                    "publisher": role.location(),
                    "schedule": role.schedule_text(),
                }));
                rows.push(vec![role.name.clone(), "ok".into(), String::new()]);
            }
            Err(e) => {
                failed = true;
                results.push(
                    json!({ "static_role": role.name, "ok": false, "error": error_json(&e) }),
                );
                rows.push(vec![
                    role.name.clone(),
                    "FAILED".into(),
                    one_line(&e.to_string()),
                ]);
            }
        }
    }
    out.emit(&Value::Array(results), |w| {
        output::write_table(w, &["SECRET", "RESULT", "ERROR"], &rows)
    });
    Ok(if failed { EXIT_FAILED } else { EXIT_OK })
}

/// Shows `done/total` on stderr when it is a terminal, at most ten times a second.
struct Progress {
    label: String,
    enabled: bool,
    last: Option<Instant>,
    shown: bool,
}

impl Progress {
    fn new(label: String) -> Self {
        Progress {
            label,
            enabled: std::io::stderr().is_terminal(),
            last: None,
            shown: false,
        }
    }

    fn update(&mut self, done: usize, total: usize) {
        if !self.enabled {
            return;
        }
        let now = Instant::now();
        if done < total
            && self
                .last
                .is_some_and(|t| now - t < Duration::from_millis(100))
        {
            return;
        }
        self.last = Some(now);
        self.shown = true;
        let mut e = std::io::stderr().lock();
        let _ = write!(e, "\r{}: {done}/{total}", self.label);
        let _ = e.flush();
    }

    fn finish(&self) {
        if self.shown {
            eprintln!();
        }
    }
}

async fn revoke(
    path: &Path,
    config: &Config,
    out: &Out,
    lease_ids: Vec<String>,
    secret: Option<String>,
    force: bool,
) -> Result<u8, Fail> {
    // Checked before the store is opened. With --force an id that is not a well-formed lease id
    // may still be the id of a damaged row as stored; it is looked up there.
    let mut ids: Vec<(String, Option<LeaseId>)> = Vec::with_capacity(lease_ids.len());
    for raw in lease_ids {
        match raw.parse::<LeaseId>() {
            Ok(id) => ids.push((raw, Some(id))),
            Err(_) if force => ids.push((raw, None)),
            Err(e) => return Err(e.into()),
        }
    }
    if let Some(s) = &secret {
        known_secret(config, s)?;
    }
    let m = manager(path, config, Mode::OneShot).await?;
    let mut revoked: Vec<Value> = Vec::new();
    let mut revoked_count = 0usize;
    let mut gone: Vec<LeaseId> = Vec::new();
    let mut damaged_removed: Vec<String> = Vec::new();
    let mut malformed: Vec<(String, Error)> = Vec::new();
    let mut failed: Vec<(LeaseId, Error)> = Vec::new();
    match &secret {
        Some(s) => {
            let mut progress = Progress::new(format!("revoking leases of {s}"));
            let summary = m
                .revoke_secret_with_progress(s, |done, total| progress.update(done, total))
                .await;
            progress.finish();
            let summary = summary?;
            revoked_count = summary.revoked;
            failed = summary.failed;
        }
        None => {
            for (raw, id) in ids {
                let Some(id) = id else {
                    // --force with an id that only a damaged row can have.
                    if m.forget_damaged(&raw).await? {
                        damaged_removed.push(raw);
                    } else {
                        let e = raw.parse::<LeaseId>().expect_err("refused above");
                        malformed.push((raw, e));
                    }
                    continue;
                };
                match m.lookup(&id).await {
                    Ok(_) => match m.revoke(&id).await {
                        Ok(()) => {
                            revoked_count += 1;
                            revoked.push(Value::String(id.to_string()));
                        }
                        Err(e) => failed.push((id, e)),
                    },
                    // No healthy lease has this id: with --force, a damaged row may.
                    Err(e)
                        if force
                            && matches!(e.kind(), ErrorKind::LeaseNotFound | ErrorKind::Store) =>
                    {
                        if m.forget_damaged(id.as_str()).await? {
                            damaged_removed.push(id.to_string());
                        } else if e.kind() == ErrorKind::LeaseNotFound {
                            gone.push(id);
                        } else {
                            failed.push((id, e));
                        }
                    }
                    // Revoking is idempotent: a lease that is gone was revoked (or never
                    // existed; the store keeps no record of revoked leases).
                    Err(e) if e.kind() == ErrorKind::LeaseNotFound => gone.push(id),
                    Err(e) => failed.push((id, e)),
                }
            }
        }
    }
    let mut forgotten = Vec::new();
    let mut still_failed = Vec::new();
    for (id, e) in failed {
        if force && e.kind() != ErrorKind::LeaseNotFound {
            match m.force_forget(&id).await {
                Ok(l) => {
                    forgotten.push((id, l.external.id, e));
                    continue;
                }
                Err(e2) => {
                    still_failed.push((id, e2));
                    continue;
                }
            }
        }
        still_failed.push((id, e));
    }
    let v = json!({
        "revoked": revoked_count,
        "revoked_ids": revoked,
        "already_gone": gone.iter().map(|id| id.as_str()).collect::<Vec<_>>(),
        "damaged_removed": damaged_removed,
        "forgotten": forgotten.iter().map(|(id, principal, e)| json!({
            "lease_id": id.as_str(), "principal": principal, "revoke_error": error_json(e),
        })).collect::<Vec<_>>(),
        "failed": still_failed.iter().map(|(id, e)| json!({
            "lease_id": id.as_str(), "error": error_json(e),
        })).collect::<Vec<_>>(),
        "malformed": malformed.iter().map(|(raw, e)| json!({
            "lease_id": raw, "error": error_json(e),
        })).collect::<Vec<_>>(),
    });
    out.emit(&v, |w| {
        writeln!(w, "revoked {revoked_count} lease(s)")?;
        for id in &gone {
            writeln!(
                w,
                "{id}: already gone (revoked before, or never issued); nothing to do"
            )?;
        }
        for id in &damaged_removed {
            writeln!(
                w,
                "removed damaged row {} without revoking; check by hand that its principal is gone",
                escape(id)
            )?;
        }
        for (id, principal, e) in &forgotten {
            writeln!(
                w,
                "forgot {id} without revoking it; check that {:?} is gone ({})",
                escape(principal),
                one_line(&e.to_string())
            )?;
        }
        for (id, e) in &still_failed {
            writeln!(w, "FAILED {id}: {}", one_line(&e.to_string()))?;
        }
        Ok(())
    });
    // Errors go to stderr too, one line each: stdout may be a pipe nobody reads for errors.
    for (id, e) in &still_failed {
        eprintln!(
            "leasehold: revoke {id} failed: {}",
            one_line(&e.to_string())
        );
    }
    for (_, e) in &malformed {
        eprintln!("leasehold: {}", one_line(&e.to_string()));
    }
    Ok(if !malformed.is_empty() {
        EXIT_USAGE
    } else if !still_failed.is_empty() {
        EXIT_FAILED
    } else {
        EXIT_OK
    })
}

async fn reconcile(
    path: &Path,
    config: &Config,
    out: &Out,
    apply: bool,
    only: Option<String>,
) -> Result<u8, Fail> {
    if let Some(s) = &only {
        known_secret(config, s)?;
    }
    let m = manager(path, config, Mode::OneShot).await?;
    let installation = m.installation_id().to_string();
    let mut items = Vec::new();
    let mut rows = Vec::new();
    let mut foreign_lines = Vec::new();
    let mut error_lines = Vec::new();
    let mut failed = false;
    for name in m.secrets() {
        if only.as_ref().is_some_and(|o| *o != name) {
            continue;
        }
        let lists = m
            .secret(&name)
            .map(|s| s.provider().capabilities().lists_managed)
            .unwrap_or(false);
        if !lists {
            items.push(json!({
                "secret": name,
                "installation": installation,
                "skipped": "the provider cannot list its users",
            }));
            rows.push(vec![
                name,
                "skipped".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "provider cannot list its users".into(),
            ]);
            continue;
        }
        match m.reconcile(&name, apply).await {
            Ok(r) => {
                let principals = |v: &[leasehold_core::ManagedCredential]| -> Vec<String> {
                    v.iter().map(|c| c.external.id.clone()).collect()
                };
                failed |= !r.errors.is_empty();
                items.push(json!({
                    "secret": name,
                    "installation": r.installation,
                    "applied": apply,
                    "found": r.found,
                    "orphans": principals(&r.orphans),
                    "foreign": principals(&r.foreign),
                    "removed": principals(&r.removed),
                    "errors": r.errors.iter().map(|(c, e)| json!({
                        "principal": c.external.id, "error": error_json(e),
                    })).collect::<Vec<_>>(),
                    "prefix_not_guaranteed": r.prefix_not_guaranteed,
                }));
                let detail = if r.orphans.is_empty() {
                    "-".to_string()
                } else {
                    format!("orphans: {}", principals(&r.orphans).join(" "))
                };
                if !r.foreign.is_empty() {
                    foreign_lines.push(format!("{name}: {}", principals(&r.foreign).join(" ")));
                }
                for (c, e) in &r.errors {
                    eprintln!(
                        "leasehold: reconcile {name}: could not remove {:?}: {}",
                        escape(&c.external.id),
                        one_line(&e.to_string())
                    );
                    error_lines.push(format!(
                        "{name}: FAILED to remove {}: {}",
                        c.external.id,
                        one_line(&e.to_string())
                    ));
                }
                rows.push(vec![
                    name,
                    if apply { "applied" } else { "dry run" }.into(),
                    r.found.to_string(),
                    r.orphans.len().to_string(),
                    r.foreign.len().to_string(),
                    detail,
                ]);
            }
            Err(e) => {
                failed = true;
                eprintln!(
                    "leasehold: reconcile {name} failed: {}",
                    one_line(&e.to_string())
                );
                rows.push(vec![
                    name.clone(),
                    "FAILED".into(),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                    one_line(&e.to_string()),
                ]);
                items.push(json!({
                    "secret": name,
                    "installation": installation,
                    "error": error_json(&e),
                }));
            }
        }
    }
    out.emit(&Value::Array(items), |w| {
        output::write_table(
            w,
            &["SECRET", "MODE", "FOUND", "ORPHANS", "FOREIGN", "DETAIL"],
            &rows,
        )?;
        writeln!(
            w,
            "\ninstallation {installation}: only its own users are orphans; users of other installations (foreign) are never removed"
        )?;
        for l in &foreign_lines {
            writeln!(w, "foreign {}", escape(l))?;
        }
        for l in &error_lines {
            writeln!(w, "{}", escape(l))?;
        }
        if !apply {
            writeln!(w, "(dry run: --apply removes the orphans)")?;
        }
        Ok(())
    });
    Ok(if failed { EXIT_FAILED } else { EXIT_OK })
}

/// Prints each audit event of `run` on stdout, one line, written and flushed inside `record`:
/// the manager calls it before it reports the change as done, so a line is never waiting in a
/// buffer or a channel that a crash or `kill -9` would drop.
#[derive(Debug)]
struct PrintSink {
    json: bool,
}

impl AuditSink for PrintSink {
    fn record(&self, e: &AuditEvent) {
        let line = if self.json {
            format!("{}\n", event_json(e))
        } else {
            format!(
                "{}  {:<12}  {}  {}{}\n",
                time(e.at),
                e.action.as_str(),
                escape(e.lease_id.as_ref().map(|l| l.as_str()).unwrap_or(&e.secret)),
                escape(e.principal.as_deref().unwrap_or("-")),
                e.error.map(|k| format!("  error: {k}")).unwrap_or_default()
            )
        };
        let mut stdout = std::io::stdout().lock();
        // A closed stdout must not stop the worker; the event is also in the log (tracing).
        let _ = stdout
            .write_all(line.as_bytes())
            .and_then(|()| stdout.flush());
    }
}

fn event_json(e: &AuditEvent) -> Value {
    json!({
        "at": time(e.at),
        "action": e.action.as_str(),
        "lease_id": e.lease_id.as_ref().map(|l| l.as_str()),
        "secret": e.secret,
        "principal": e.principal,
        "identity": e.identity,
        "error": e.error.map(|k| k.as_str()),
    })
}

/// SIGINT and SIGTERM (and SIGHUP when asked for), handled from the moment they are installed:
/// a signal that arrives later is delivered to [`recv`](Self::recv), even one that arrives
/// before anyone waits for it, and never takes the default (fatal) action.
struct Signals {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
    #[cfg(unix)]
    hup: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn install(hup: bool) -> std::io::Result<Signals> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Ok(Signals {
                term: signal(SignalKind::terminate())?,
                int: signal(SignalKind::interrupt())?,
                hup: if hup {
                    Some(signal(SignalKind::hangup())?)
                } else {
                    None
                },
            })
        }
        #[cfg(not(unix))]
        {
            let _ = hup;
            Ok(Signals {})
        }
    }

    /// The next signal's name.
    async fn recv(&mut self) -> &'static str {
        #[cfg(unix)]
        {
            let Signals { term, int, hup } = self;
            let hup = async {
                match hup {
                    Some(h) => {
                        h.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                _ = int.recv() => "SIGINT",
                _ = term.recv() => "SIGTERM",
                _ = hup => "SIGHUP",
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            "Ctrl-C"
        }
    }
}

async fn run_worker(
    path: &Path,
    config: &Config,
    out: &Out,
    mut signals: Signals,
    metrics_listen: Option<std::net::SocketAddr>,
) -> Result<u8, Fail> {
    // Bound first, so a taken port fails at once; the recorder is installed before the
    // manager exists, so start-up is measured too. Neither happens unless asked for: without
    // them the library's metrics cost next to nothing.
    let metrics = match metrics_listen.or(config.metrics.listen) {
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| Fail {
                    code: EXIT_FAILED,
                    line: format!("cannot listen for metrics on {addr}: {e}"),
                })?;
            let handle = serve::install_recorder().map_err(|line| Fail {
                code: EXIT_FAILED,
                line,
            })?;
            Some((listener, handle))
        }
        None => None,
    };
    let printer: Arc<dyn AuditSink> = Arc::new(PrintSink { json: out.json });
    let mut alerting =
        Alerting::new(alerts::CliAlerts::new(config.alerts.webhook.clone())).forward_to(printer);
    if let Some(n) = config.alerts.repeated_after {
        alerting = alerting.repeated_after(n);
    }
    let sink: Arc<dyn AuditSink> = Arc::new(alerting);
    // Opening the store and building the providers may take a while (a database that does not
    // answer): a signal meanwhile stops here, before the worker runs.
    let m = tokio::select! {
        biased;
        s = signals.recv() => {
            eprintln!("leasehold: {s} received while starting; stopped before the worker ran");
            return Ok(EXIT_OK);
        }
        r = build::manager(config, Mode::Worker, Some(sink)) => r.map_err(|e| build_fail(path, e))?,
    };
    let server = metrics.map(|(listener, handle)| {
        let server = serve::spawn(listener, handle, m.clone());
        eprintln!(
            "leasehold: serving metrics on http://{0}/metrics and health on http://{0}/healthz",
            server.local_addr()
        );
        server
    });
    let rotators = static_roles::start_all(
        &config.static_roles,
        m.store().coordination(),
        m.instance_id(),
    )
    .await
    .map_err(|e| match e.context("static_role").map(str::to_string) {
        Some(name) => static_role_fail(path, &name, e),
        None => build_fail(path, e),
    })?;
    let stable = config.manager.instance_id.is_some();
    eprintln!(
        "leasehold: expiry worker running (instance {}{}, installation {}, {} secret(s)); SIGINT or SIGTERM stops it",
        escape(m.instance_id()),
        if stable {
            ", stable: claims of its previous run taken back"
        } else {
            ", random"
        },
        m.installation_id(),
        m.secrets().len()
    );
    if !config.static_roles.is_empty() {
        eprintln!(
            "leasehold: rotating {} static role(s) on schedule (one rotator per role across every `run` sharing the store)",
            config.static_roles.len()
        );
    }
    let signal = signals.recv().await;
    rotators.stop().await;
    eprintln!(
        "leasehold: {signal} received, stopping the worker (finishing the revocations in flight; a second signal exits at once)"
    );
    tokio::select! {
        () = m.shutdown() => {}
        s = signals.recv() => {
            return Err(Fail {
                code: EXIT_FAILED,
                line: format!(
                    "{s} received again: exiting without waiting for the revocations in flight; \
                     their leases stay claimed until claim_hold passes (or until a restart with \
                     the same instance_id takes them back)"
                ),
            });
        }
    }
    drop(server);
    drop(m);
    eprintln!("leasehold: stopped; leases stay in the store for the next start");
    Ok(EXIT_OK)
}
