//! Password policies: properties over random policies, and chi-square tests that the generator
//! has no per-character bias.
//!
//! The chi-square tests draw from the real OS-seeded generator, which cannot (and should not) be
//! seeded, so they are statistical tests that can fail by chance. Each compares its statistic
//! with the critical value at p = 1e-6 for its degrees of freedom: a correct generator fails one
//! of them about once in a million runs, while a biased one (see `the_test_detects_a_biased_sampler`)
//! fails by hundreds of orders of magnitude. The p = 0.001 critical value is printed alongside for
//! reference.

use std::collections::HashMap;

use leasehold_core::password::{PasswordRule, AWS_CACHE_FORBIDDEN, AWS_CACHE_SPECIALS};
use leasehold_core::{ErrorKind, PasswordPolicy};
use proptest::prelude::*;
use rand::Rng;
use secrecy::ExposeSecret;

const LOWER: &str = "abcdefghijklmnopqrstuvwxyz";
const UPPER: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZ";
const DIGITS: &str = "0123456789";

const DRAWS: usize = 100_000;
const FALSE_FAILURE_P: f64 = 1e-6;

// ---- chi-square distribution --------------------------------------------------------------

/// ln Γ(x), Lanczos approximation (g = 7, n = 9), relative error below 1e-13 for x > 0.
fn ln_gamma(x: f64) -> f64 {
    const C: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    let x = x - 1.0;
    let mut a = C[0];
    let t = x + 7.5;
    for (i, c) in C.iter().enumerate().skip(1) {
        a += c / (x + i as f64);
    }
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + a.ln()
}

/// The regularized upper incomplete gamma function Q(a, x): series below a + 1, Lentz's
/// continued fraction above.
fn gamma_q(a: f64, x: f64) -> f64 {
    if x <= 0.0 {
        return 1.0;
    }
    let ln_pre = a * x.ln() - x - ln_gamma(a);
    if x < a + 1.0 {
        let (mut sum, mut term, mut n) = (1.0 / a, 1.0 / a, a);
        for _ in 0..10_000 {
            n += 1.0;
            term *= x / n;
            sum += term;
            if term.abs() < sum.abs() * 1e-16 {
                break;
            }
        }
        1.0 - sum * ln_pre.exp()
    } else {
        let tiny = 1e-300;
        let mut b = x + 1.0 - a;
        let mut c = 1.0 / tiny;
        let mut d = 1.0 / b;
        let mut h = d;
        for i in 1..10_000 {
            let an = -(i as f64) * (i as f64 - a);
            b += 2.0;
            d = an * d + b;
            if d.abs() < tiny {
                d = tiny;
            }
            c = b + an / c;
            if c.abs() < tiny {
                c = tiny;
            }
            d = 1.0 / d;
            let delta = d * c;
            h *= delta;
            if (delta - 1.0).abs() < 1e-16 {
                break;
            }
        }
        ln_pre.exp() * h
    }
}

/// P(X > x) for X ~ chi-square with `df` degrees of freedom.
fn chi_square_sf(x: f64, df: usize) -> f64 {
    gamma_q(df as f64 / 2.0, x / 2.0)
}

/// The x with P(X > x) = p, by bisection.
fn chi_square_critical(p: f64, df: usize) -> f64 {
    let (mut lo, mut hi) = (0.0, df as f64 * 20.0 + 200.0);
    for _ in 0..200 {
        let mid = (lo + hi) / 2.0;
        if chi_square_sf(mid, df) > p {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    (lo + hi) / 2.0
}

fn chi_square(observed: &[u64], expected: &[f64]) -> f64 {
    observed
        .iter()
        .zip(expected)
        .map(|(&o, &e)| (o as f64 - e).powi(2) / e)
        .sum()
}

/// Fails (with the numbers) when the statistic exceeds the p = 1e-6 critical value.
fn assert_no_bias(what: &str, observed: &[u64], expected: &[f64]) {
    let df = observed.len() - 1;
    let stat = chi_square(observed, expected);
    let crit_1e3 = chi_square_critical(0.001, df);
    let crit = chi_square_critical(FALSE_FAILURE_P, df);
    let p = chi_square_sf(stat, df);
    eprintln!(
        "{what}: chi-square {stat:.1}, df {df}, p {p:.3e} (critical {crit_1e3:.1} at p=0.001, {crit:.1} at p=1e-6)"
    );
    assert!(
        stat < crit,
        "{what}: chi-square {stat:.1} >= {crit:.1} (df {df}, p {p:.3e}): the generator is biased"
    );
}

#[test]
fn the_chi_square_functions_match_published_tables() {
    // Upper 0.001 critical values (NIST/SEMATECH e-Handbook, table 1.3.6.7.4).
    for (df, x) in [(1, 10.828), (10, 29.588), (69, 111.055), (100, 149.449)] {
        let p = chi_square_sf(x, df);
        assert!((p - 0.001).abs() < 2e-5, "df {df}: sf({x}) = {p}");
        let crit = chi_square_critical(0.001, df);
        assert!(
            (crit - x).abs() < 0.01 * x / 100.0 + 0.01,
            "df {df}: {crit} vs {x}"
        );
    }
    assert!((chi_square_sf(2.0, 2) - (-1.0f64).exp()).abs() < 1e-12);
}

// ---- chi-square tests of the generator ----------------------------------------------------

fn aws_alphabet() -> String {
    format!("{LOWER}{UPPER}{DIGITS}{AWS_CACHE_SPECIALS}")
}

fn counts(policy: &PasswordPolicy, draws: usize) -> (Vec<char>, Vec<u64>, Vec<u64>) {
    let alphabet = policy.alphabet().to_vec();
    let index: HashMap<char, usize> = alphabet.iter().enumerate().map(|(i, c)| (*c, i)).collect();
    let (mut all, mut first) = (vec![0u64; alphabet.len()], vec![0u64; alphabet.len()]);
    for _ in 0..draws {
        let pw = policy.generate().unwrap();
        let pw = pw.expose_secret();
        for (pos, c) in pw.chars().enumerate() {
            all[index[&c]] += 1;
            if pos == 0 {
                first[index[&c]] += 1;
            }
        }
    }
    (alphabet, all, first)
}

#[test]
fn characters_are_uniform_without_required_classes() {
    let policy = PasswordPolicy::new(16, &aws_alphabet()).unwrap();
    let (alphabet, all, first) = counts(&policy, DRAWS);
    let n = alphabet.len() as f64;
    let total: u64 = all.iter().sum();
    assert_eq!(total, (DRAWS * 16) as u64);
    assert_no_bias(
        "all positions",
        &all,
        &vec![total as f64 / n; alphabet.len()],
    );
    assert_no_bias(
        "first position",
        &first,
        &vec![DRAWS as f64 / n; alphabet.len()],
    );
}

/// P(a uniform password of `len` characters hits every class in `classes`), by
/// inclusion–exclusion; written here independently of the crate's own check.
fn hit_all(n: usize, classes: &[usize], len: usize) -> f64 {
    let k = classes.len();
    (0..1u32 << k)
        .map(|mask| {
            let missed: usize = (0..k)
                .filter(|i| mask & (1 << i) != 0)
                .map(|i| classes[i])
                .sum();
            let sign = if mask.count_ones() % 2 == 0 {
                1.0
            } else {
                -1.0
            };
            sign * ((n - missed) as f64 / n as f64).powi(len as i32)
        })
        .sum()
}

#[test]
fn characters_follow_the_exact_distribution_with_required_classes() {
    // Rejecting passwords that miss a class makes digits (10 of 70) slightly more frequent than
    // letters at length 16. The expected frequency of each character is exact:
    // P(c) = (1/n) * P(the other 15 hit every class c is not in) / P(16 hit every class).
    let len = 16;
    let policy = PasswordPolicy::elasticache().with_length(len).unwrap();
    let n = policy.alphabet().len();
    let (alphabet, all, _) = counts(&policy, DRAWS);
    let classes = [LOWER, UPPER, DIGITS];
    let p_accept = hit_all(n, &[26, 26, 10], len);
    let total = (DRAWS * len) as f64;
    let expected: Vec<f64> = alphabet
        .iter()
        .map(|c| {
            let rest: Vec<usize> = classes
                .iter()
                .filter(|class| !class.contains(*c))
                .map(|class| class.len())
                .collect();
            total * hit_all(n, &rest, len - 1) / (n as f64 * p_accept)
        })
        .collect();
    assert!((expected.iter().sum::<f64>() - total).abs() < 1e-6 * total);
    assert_no_bias("ElastiCache policy at length 16", &all, &expected);
}

#[test]
fn the_test_detects_a_biased_sampler() {
    // A byte modulo 70: 46 characters come up 4/256 of the time, 24 only 3/256.
    let mut rng = rand::rng();
    let mut observed = [0u64; 70];
    for _ in 0..DRAWS * 16 {
        observed[(rng.random::<u8>() % 70) as usize] += 1;
    }
    let expected = vec![(DRAWS * 16) as f64 / 70.0; 70];
    let stat = chi_square(&observed, &expected);
    assert!(chi_square_sf(stat, 69) < FALSE_FAILURE_P, "{stat}");
}

// ---- properties ---------------------------------------------------------------------------

fn printable() -> Vec<char> {
    (0x21u8..=0x7e).map(char::from).collect()
}

prop_compose! {
    fn alphabet()(chars in proptest::sample::subsequence(printable(), 1..=94)) -> String {
        chars.into_iter().collect()
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn generated_passwords_meet_their_policy(
        alphabet in alphabet(),
        length in 1usize..200,
        classes in proptest::collection::vec("[!-~]{1,12}", 0..4),
        aws in any::<bool>(),
    ) {
        let rule = if aws { PasswordRule::AwsCache } else { PasswordRule::Any };
        let built = classes.iter().try_fold(
            PasswordPolicy::for_rule(rule, length, &alphabet),
            |p, class| Ok::<_, ()>(p.and_then(|p| p.require(class))),
        ).unwrap();
        match built {
            Ok(policy) => {
                for _ in 0..5 {
                    let pw = policy.generate().unwrap();
                    let pw = pw.expose_secret();
                    prop_assert_eq!(pw.chars().count(), length);
                    prop_assert!(pw.chars().all(|c| alphabet.contains(c)));
                    prop_assert!(pw.chars().all(|c| rule.allows(c)));
                    for class in &classes {
                        prop_assert!(pw.chars().any(|c| class.contains(c)), "class {:?}", class);
                    }
                }
                if aws {
                    prop_assert!((16..=128).contains(&length));
                    prop_assert!(!alphabet.chars().any(|c| AWS_CACHE_FORBIDDEN.contains(c)));
                }
            }
            Err(e) => {
                prop_assert_eq!(e.kind(), ErrorKind::InvalidConfig);
                let no_overlap = classes.iter().any(|c| !c.chars().any(|c| alphabet.contains(c)));
                let bad_char = aws && alphabet.chars().any(|c| AWS_CACHE_FORBIDDEN.contains(c));
                let bad_len = aws && !(16..=128).contains(&length);
                let rare = e.to_string().contains("probability");
                prop_assert!(no_overlap || bad_char || bad_len || rare || classes.len() > length, "{}", e);
            }
        }
    }
}

#[test]
fn provider_defaults_match_their_targets() {
    for (policy, rule, len) in [
        (PasswordPolicy::elasticache(), PasswordRule::AwsCache, 64),
        (PasswordPolicy::memorydb(), PasswordRule::AwsCache, 64),
        (PasswordPolicy::redis(), PasswordRule::RedisAcl, 64),
    ] {
        assert_eq!(policy.rule(), rule);
        for _ in 0..500 {
            let pw = policy.generate().unwrap();
            let pw = pw.expose_secret();
            assert_eq!(pw.len(), len);
            assert!(pw.chars().all(|c| rule.allows(c) && c != ' '), "{rule:?}");
            assert!(pw.chars().any(|c| c.is_ascii_lowercase()));
            assert!(pw.chars().any(|c| c.is_ascii_uppercase()));
            assert!(pw.chars().any(|c| c.is_ascii_digit()));
        }
    }
    for c in AWS_CACHE_FORBIDDEN.chars().chain([' ']) {
        assert!(!PasswordRule::AwsCache.allows(c), "{c:?}");
    }
}

#[test]
fn debug_output_of_a_generated_password_is_redacted() {
    let pw = PasswordPolicy::elasticache().generate().unwrap();
    assert!(!format!("{pw:?}").contains(pw.expose_secret()));
}
