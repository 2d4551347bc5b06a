//! The per-issue cost of a credential's name and password: render a username template, check it
//! against the target's name rule, and generate a password, against a baseline of a plain
//! `format!` and `rand` measured in the same run. Goal: under 5 µs per issue.
//!
//! Criterion reports each variant; a final pass times both in one process and prints the ratio
//! on a `RESULT|` line (collected by `scripts/bench`). `LEASEHOLD_BENCH_QUICK=1` shortens it.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, Criterion};
use leasehold_core::{NameRule, PasswordPolicy, TemplateVars, UsernameTemplate};
use rand::distr::{Distribution, Uniform};
use secrecy::SecretString;

fn quick() -> bool {
    std::env::var("LEASEHOLD_BENCH_QUICK").is_ok_and(|v| v == "1")
}

const VARS: TemplateVars<'static> = TemplateVars {
    secret_name: "orders-cache",
    secret_type: "aws-elasticache",
    identity: Some("checkout-service"),
    prefix: "lh-",
};

const LOWER_DIGITS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
const PASSWORD_CHARS: &[u8] =
    b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!&#$^<>-";

/// What leasehold does per issue.
fn leasehold_issue(t: &UsernameTemplate, p: &PasswordPolicy) -> (String, SecretString) {
    let name = t.render_for(&VARS, NameRule::ElastiCacheUserId).unwrap();
    (name, p.generate().unwrap())
}

/// The least a hand-written version would do: `format!` a prefixed random name, draw 64
/// password characters, no template, no rule, no required classes.
fn baseline_issue() -> (String, SecretString) {
    let mut rng = rand::rng();
    let name_idx = Uniform::new(0, LOWER_DIGITS.len()).unwrap();
    let pw_idx = Uniform::new(0, PASSWORD_CHARS.len()).unwrap();
    let random: String = (0..20)
        .map(|_| LOWER_DIGITS[name_idx.sample(&mut rng)] as char)
        .collect();
    let name = format!("lh-{random}");
    let pw: String = (0..64)
        .map(|_| PASSWORD_CHARS[pw_idx.sample(&mut rng)] as char)
        .collect();
    (name, SecretString::from(pw))
}

fn per_issue(c: &mut Criterion) {
    let default_t = UsernameTemplate::parse("{{randomUsername}}").unwrap();
    let identity_t =
        UsernameTemplate::parse("{{randomUsername}}-{{truncate (lowercase identity.name) 8}}")
            .unwrap();
    let policy = PasswordPolicy::elasticache();
    let mut g = c.benchmark_group("per_issue");
    g.bench_function("leasehold_default_template", |b| {
        b.iter(|| black_box(leasehold_issue(&default_t, &policy)))
    });
    g.bench_function("leasehold_identity_template", |b| {
        b.iter(|| black_box(leasehold_issue(&identity_t, &policy)))
    });
    g.bench_function("baseline_format_rand", |b| {
        b.iter(|| black_box(baseline_issue()))
    });
    g.finish();
}

fn time_per_call(iters: u32, mut f: impl FnMut()) -> Duration {
    for _ in 0..iters / 10 {
        f();
    }
    let start = Instant::now();
    for _ in 0..iters {
        f();
    }
    start.elapsed() / iters
}

fn ratio() {
    let iters = if quick() { 20_000 } else { 200_000 };
    let policy = PasswordPolicy::elasticache();
    for (label, src) in [
        ("default template", "{{randomUsername}}"),
        (
            "identity template",
            "{{randomUsername}}-{{truncate (lowercase identity.name) 8}}",
        ),
    ] {
        let t = UsernameTemplate::parse(src).unwrap();
        // Alternate short batches of the two and take each one's median, so other load on
        // the machine (builds, tests) hits both alike and outliers do not count.
        let batches = 21;
        let (mut ours, mut base) = (Vec::new(), Vec::new());
        for _ in 0..batches {
            ours.push(time_per_call(iters / batches, || {
                black_box(leasehold_issue(&t, &policy));
            }));
            base.push(time_per_call(iters / batches, || {
                black_box(baseline_issue());
            }));
        }
        ours.sort();
        base.sort();
        let (ours, base) = (ours[batches as usize / 2], base[batches as usize / 2]);
        let us = ours.as_secs_f64() * 1e6;
        println!(
            "RESULT|render + check + password per issue ({label})|{us:.2} µs ({:.1}x a format!+rand baseline at {:.2} µs)|< 5 µs|{}",
            ours.as_secs_f64() / base.as_secs_f64(),
            base.as_secs_f64() * 1e6,
            if us < 5.0 { "met" } else { "MISSED" }
        );
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(30)
        .measurement_time(Duration::from_secs(if quick() { 1 } else { 3 }))
        .warm_up_time(Duration::from_secs(1));
    targets = per_issue
}

fn main() {
    // `cargo test --benches` runs bench binaries with `--test`: keep that a quick smoke check.
    if std::env::args().any(|a| a == "--test" || a == "--list") {
        let t = UsernameTemplate::parse("{{randomUsername}}").unwrap();
        let (name, _) = leasehold_issue(&t, &PasswordPolicy::elasticache());
        assert!(name.starts_with("lh-"));
        return;
    }
    benches();
    ratio();
    Criterion::default().configure_from_args().final_summary();
}
