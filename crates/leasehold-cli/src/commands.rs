//! The commands.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use leasehold_core::{
    format_duration, parse_duration, AuditEvent, AuditSink, Error, ErrorKind, IssueRequest,
    LeaseFilter, LeaseId, LeaseManager, LeaseRecord, LeaseState,
};
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::build::{self, Mode};
use crate::config::{self, is_usage_error, Config};
use crate::output::{self, error_json, record_json, time};
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
    match dispatch(&config_path, &out, command).await {
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
    let where_ = match e.context("secret") {
        Some(s) => format!("{}: secrets ({s:?}): ", path.display()),
        None => format!("{}: ", path.display()),
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

fn cli_duration(flag: &str, s: &str) -> Result<Duration, Fail> {
    parse_duration(flag, s).map_err(|e| Fail::usage(one_line(e.message())))
}

async fn dispatch(path: &Path, out: &Out, command: Command) -> Result<u8, Fail> {
    let config = load_config(path)?;
    match command {
        Command::Secrets => secrets(path, &config, out).await,
        Command::Validate { names } => validate(path, &config, out, names).await,
        Command::Issue {
            name,
            ttl,
            identity,
            no_wait,
        } => {
            known_secret(&config, &name)?;
            let mut req = IssueRequest::new().wait(!no_wait);
            if let Some(t) = ttl {
                req = req.ttl(cli_duration("--ttl", &t)?);
            }
            if let Some(i) = identity {
                req = req.identity(i);
            }
            // Refused before the store is opened.
            req.check()?;
            let m = manager(path, &config, Mode::OneShot).await?;
            let lease = m.issue(&name, req).await?;
            out.emit(&output::issued_json(&lease), |w| {
                output::write_kv(w, &output::issued_rows(&lease))?;
                if !lease.live() {
                    writeln!(
                        w,
                        "\nnote: the credential is not confirmed live yet; it may take a moment"
                    )?;
                }
                Ok(())
            });
            Ok(EXIT_OK)
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
            let lease = m.lookup(&id).await?;
            out.emit(&record_json(&lease), |w| {
                output::write_kv(w, &output::record_rows(&lease))
            });
            Ok(EXIT_OK)
        }
        Command::List { secret, state } => {
            let mut filter = match &secret {
                Some(s) => LeaseFilter::secret(s),
                None => LeaseFilter::all(),
            };
            if let Some(s) = state {
                filter = filter.state(s.parse::<LeaseState>()?);
            }
            let m = manager(path, &config, Mode::OneShot).await?;
            let leases = list_all(&m, filter).await?;
            let v = Value::Array(leases.iter().map(record_json).collect());
            out.emit(&v, |w| output::write_records(w, &leases));
            Ok(EXIT_OK)
        }
        Command::Run => run_worker(path, &config, out).await,
        Command::Reconcile { apply, secret } => reconcile(path, &config, out, apply, secret).await,
    }
}

async fn list_all(m: &LeaseManager, filter: LeaseFilter) -> Result<Vec<LeaseRecord>, Fail> {
    let mut all = Vec::new();
    let mut after = None;
    loop {
        let page = m.list(&filter.clone().after(after).limit(1000)).await?;
        let full = page.len() == 1000;
        after = page.last().map(|l| l.id.clone());
        all.extend(page);
        if !full {
            return Ok(all);
        }
    }
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
        )
    });
    Ok(EXIT_OK)
}

async fn validate(path: &Path, config: &Config, out: &Out, names: Vec<String>) -> Result<u8, Fail> {
    for n in &names {
        known_secret(config, n)?;
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
    let ids: Vec<LeaseId> = lease_ids
        .iter()
        .map(|s| lease_id(s))
        .collect::<Result<_, _>>()?;
    if let Some(s) = &secret {
        known_secret(config, s)?;
    }
    let m = manager(path, config, Mode::OneShot).await?;
    let mut revoked: Vec<Value> = Vec::new();
    let mut revoked_count = 0usize;
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
            for id in ids {
                match m.revoke(&id).await {
                    Ok(()) => {
                        revoked_count += 1;
                        revoked.push(Value::String(id.to_string()));
                    }
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
        "forgotten": forgotten.iter().map(|(id, principal, e)| json!({
            "lease_id": id.as_str(), "principal": principal, "revoke_error": error_json(e),
        })).collect::<Vec<_>>(),
        "failed": still_failed.iter().map(|(id, e)| json!({
            "lease_id": id.as_str(), "error": error_json(e),
        })).collect::<Vec<_>>(),
    });
    out.emit(&v, |w| {
        writeln!(w, "revoked {revoked_count} lease(s)")?;
        for (id, principal, e) in &forgotten {
            writeln!(
                w,
                "forgot {id} without revoking it; check that {principal:?} is gone ({})",
                one_line(&e.to_string())
            )?;
        }
        for (id, e) in &still_failed {
            writeln!(w, "FAILED {id}: {}", one_line(&e.to_string()))?;
        }
        Ok(())
    });
    if still_failed.is_empty() {
        Ok(EXIT_OK)
    } else {
        Ok(EXIT_FAILED)
    }
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
    let mut items = Vec::new();
    let mut rows = Vec::new();
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
            items.push(json!({ "secret": name, "skipped": "the provider cannot list its users" }));
            rows.push(vec![
                name,
                "skipped".into(),
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
                    "applied": apply,
                    "found": r.found,
                    "orphans": principals(&r.orphans),
                    "removed": principals(&r.removed),
                    "errors": r.errors.iter().map(|(c, e)| json!({
                        "principal": c.external.id, "error": error_json(e),
                    })).collect::<Vec<_>>(),
                    "prefix_not_guaranteed": r.prefix_not_guaranteed,
                }));
                rows.push(vec![
                    name,
                    if apply { "applied" } else { "dry run" }.into(),
                    r.found.to_string(),
                    r.orphans.len().to_string(),
                    principals(&r.orphans).join(" "),
                ]);
            }
            Err(e) => {
                failed = true;
                rows.push(vec![
                    name.clone(),
                    "FAILED".into(),
                    "-".into(),
                    "-".into(),
                    one_line(&e.to_string()),
                ]);
                items.push(json!({ "secret": name, "error": error_json(&e) }));
            }
        }
    }
    out.emit(&Value::Array(items), |w| {
        output::write_table(w, &["SECRET", "MODE", "FOUND", "ORPHANS", "DETAIL"], &rows)?;
        if !apply {
            writeln!(w, "\n(dry run: --apply removes the orphans)")?;
        }
        Ok(())
    });
    Ok(if failed { EXIT_FAILED } else { EXIT_OK })
}

/// Sends audit events to the printer task without blocking the manager.
#[derive(Debug)]
struct ChannelSink(mpsc::UnboundedSender<AuditEvent>);

impl AuditSink for ChannelSink {
    fn record(&self, event: &AuditEvent) {
        let _ = self.0.send(event.clone());
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

/// Resolves on SIGINT or SIGTERM. The handlers are installed when this is called, so a signal
/// that arrives after it returns is never the default (fatal) one.
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = &'static str>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        Ok(async move {
            tokio::select! {
                _ = int.recv() => "SIGINT",
                _ = term.recv() => "SIGTERM",
            }
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async {
            let _ = tokio::signal::ctrl_c().await;
            "Ctrl-C"
        })
    }
}

async fn run_worker(path: &Path, config: &Config, out: &Out) -> Result<u8, Fail> {
    let (tx, mut rx) = mpsc::unbounded_channel::<AuditEvent>();
    let m = build::manager(config, Mode::Worker, Some(Arc::new(ChannelSink(tx))))
        .await
        .map_err(|e| build_fail(path, e))?;
    let json = out.json;
    let printer = tokio::spawn(async move {
        while let Some(e) = rx.recv().await {
            let mut stdout = std::io::stdout().lock();
            let _ = if json {
                writeln!(stdout, "{}", event_json(&e))
            } else {
                writeln!(
                    stdout,
                    "{}  {:<12}  {}  {}{}",
                    time(e.at),
                    e.action.as_str(),
                    e.lease_id.as_ref().map(|l| l.as_str()).unwrap_or(&e.secret),
                    e.principal.as_deref().unwrap_or("-"),
                    e.error.map(|k| format!("  error: {k}")).unwrap_or_default()
                )
            };
            let _ = stdout.flush();
        }
    });
    let stop = shutdown_signal().map_err(|e| Fail {
        code: EXIT_FAILED,
        line: format!("cannot install the signal handlers: {e}"),
    })?;
    eprintln!(
        "leasehold: expiry worker running (instance {}, {} secret(s)); SIGINT or SIGTERM stops it",
        m.instance_id(),
        m.secrets().len()
    );
    let signal = stop.await;
    eprintln!("leasehold: {signal} received, stopping the worker");
    m.shutdown().await;
    // Dropping the manager drops the sink's sender; the printer then drains and ends.
    drop(m);
    let _ = tokio::time::timeout(Duration::from_secs(5), printer).await;
    eprintln!("leasehold: stopped; leases stay in the store for the next start");
    Ok(EXIT_OK)
}
