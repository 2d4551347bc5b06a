#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod alerts;
mod build;
mod commands;
mod config;
mod output;
mod serve;
mod static_roles;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Exit code of success.
const EXIT_OK: u8 = 0;
/// Exit code of a failed operation.
const EXIT_FAILED: u8 = 1;
/// Exit code of bad usage or configuration: bad arguments (a malformed lease id, an unknown
/// secret, a bad duration or identity) and bad configuration files.
const EXIT_USAGE: u8 = 2;

/// Issue, renew, revoke and list dynamic-secret leases; run the expiry worker.
#[derive(Debug, Parser)]
#[command(name = "leasehold", version, about, long_about = None)]
struct Cli {
    /// The configuration file [env: LEASEHOLD_CONFIG] [default: leasehold.toml].
    // Read by hand rather than with clap's `env`: an empty LEASEHOLD_CONFIG must count as unset,
    // not as an empty --config that fails even when --config is given.
    #[arg(long, short = 'c', global = true)]
    config: Option<PathBuf>,
    /// Print JSON even on a terminal (it is the default when stdout is not a terminal).
    #[arg(long, global = true, conflicts_with = "table")]
    json: bool,
    /// Print tables even when stdout is not a terminal (`leasehold list --table | less`).
    #[arg(long, global = true)]
    table: bool,
    /// More log output on stderr (-v info, -vv debug); RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// List the configured secrets.
    Secrets,
    /// Check configuration and reachability of the named secrets and static roles (default:
    /// all).
    Validate {
        /// Secret or static role names.
        names: Vec<String>,
    },
    /// Issue a credential under a new lease; prints the credential once.
    ///
    /// A store that lives only as long as this process (`memory`, `sqlite::memory:`) would
    /// forget the lease at exit while the credential lives on: such an issue is refused unless
    /// --ephemeral is given.
    Issue {
        /// The secret.
        name: String,
        /// The lease's TTL (default: the secret's default_ttl), e.g. 15m, 1h30m.
        #[arg(long)]
        ttl: Option<String>,
        /// Who asks (recorded on the lease; `identity.name` in templates).
        #[arg(long)]
        identity: Option<String>,
        /// Return without waiting until the credential is confirmed live.
        #[arg(long)]
        no_wait: bool,
        /// Keep the credential only while this command runs: after printing it, wait for
        /// SIGINT, SIGTERM or SIGHUP, for stdin to reach end of file (Ctrl-D; a closed pipe
        /// when the parent process dies; `< /dev/null` revokes at once), or for the lease to
        /// expire, then revoke it and exit. The lease is not renewed: --ttl bounds its life.
        #[arg(long)]
        ephemeral: bool,
    },
    /// Extend a lease (up to its max TTL).
    Renew {
        /// The lease id.
        lease_id: String,
        /// New TTL from now (default: the secret's default_ttl).
        #[arg(long)]
        increment: Option<String>,
    },
    /// Revoke leases now, or every lease of a secret.
    Revoke {
        /// Lease ids.
        #[arg(required_unless_present = "secret", conflicts_with = "secret")]
        lease_ids: Vec<String>,
        /// Revoke every lease of this secret.
        #[arg(long)]
        secret: Option<String>,
        /// Forget a lease whose revocation fails (the credential may survive: check by hand).
        #[arg(long)]
        force: bool,
    },
    /// Show one lease (never its credential).
    Lookup {
        /// The lease id.
        lease_id: String,
    },
    /// List leases.
    List {
        /// Only leases of this secret.
        #[arg(long)]
        secret: Option<String>,
        /// Only leases in this state (pending, active, revoking, revoked, irrevocable).
        #[arg(long)]
        state: Option<String>,
    },
    /// Run the expiry worker in the foreground until SIGINT or SIGTERM, and rotate every
    /// configured static role on its schedule (one rotator per role across all `run`
    /// processes sharing the store).
    ///
    /// Prints one line per audit event, written and flushed before the change it reports is
    /// acknowledged. With a stable `[manager] instance_id`, a restarted worker takes back the
    /// claims its previous run held (their leases are due at once) instead of waiting for
    /// them to lapse after `claim_hold`. Alerts (an irrevocable lease, repeated revoke
    /// failures, a quota refusal) print one `ALERT ...` line each on stderr and go to the
    /// `[alerts] webhook` if one is configured.
    Run {
        /// Serve Prometheus metrics on `/metrics` and a health check on `/healthz` at this
        /// address, e.g. 127.0.0.1:9464 (overrides `[metrics] listen`).
        #[arg(long, value_name = "ADDR")]
        metrics_listen: Option<std::net::SocketAddr>,
    },
    /// Rotate a static role's password now: the rotator holding the role's claim (a `run`
    /// process) carries it out, or this process when it takes the claim.
    Rotate {
        /// The static role.
        name: String,
        /// How long to wait for the holder to carry out the rotation, e.g. 5m.
        #[arg(long, default_value = "5m")]
        wait: String,
    },
    /// Print a static role's current username and password, as published (like `issue`,
    /// the only output that carries a password).
    Read {
        /// The static role.
        name: String,
    },
    /// Find (and with --apply remove) provider users that no lease points at.
    Reconcile {
        /// Remove the orphans (default: dry run).
        #[arg(long)]
        apply: bool,
        /// Only this secret (default: all).
        #[arg(long)]
        secret: Option<String>,
    },
}

fn init_tracing(verbose: u8) {
    let level = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.verbose);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("leasehold: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_FAILED);
        }
    };
    let json = cli.json || (!cli.table && !std::io::stdout().is_terminal());
    let config = cli
        .config
        .or_else(|| {
            std::env::var_os("LEASEHOLD_CONFIG")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        })
        .unwrap_or_else(|| PathBuf::from("leasehold.toml"));
    let code = runtime.block_on(commands::run(config, json, cli.command));
    // Do not wait for lingering connection tasks (a pool's keep-alive) at exit.
    runtime.shutdown_background();
    ExitCode::from(code)
}
