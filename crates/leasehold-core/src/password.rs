//! Password policies: length, alphabet, required character classes, and the target's own rule;
//! generated from the OS-seeded CSPRNG with unbiased sampling.
//!
//! Every character is an index drawn with [`rand::distr::Uniform`] (Lemire's widening multiply
//! with rejection, exactly uniform) from [`rand::rng`] (ChaCha, seeded and periodically reseeded
//! from the operating system). Passwords that miss a required class are rejected and drawn
//! again, so a password is uniform over every password the policy accepts. A policy that cannot
//! be met, or whose required classes are so unlikely at its length that rejection would spin, is
//! refused when it is built.

use rand::distr::{Distribution, Uniform};
use secrecy::SecretString;

use crate::error::{Error, ErrorKind, Result};

const LOWER: &str = "abcdefghijklmnopqrstuvwxyz";
const UPPER: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZ";
const DIGITS: &str = "0123456789";

/// The non-alphanumeric characters of the default ElastiCache / MemoryDB alphabet.
///
/// The current rule for RBAC user passwords allows more (see [`PasswordRule::AwsCache`]); these
/// eight are the ones every documented ElastiCache password rule accepts (the `AUTH` token rule
/// and the earlier RBAC rule allowed exactly these), so the default works on every engine
/// version. Hosts that put a password into a URL must percent-encode it (`#`, `&`).
pub const AWS_CACHE_SPECIALS: &str = "!&#$^<>-";

/// Characters ElastiCache and MemoryDB refuse in user passwords: `,` `"` `/` `@` (ElastiCache
/// user guide, "Role-Based Access Control (RBAC)"; MemoryDB developer guide, "Authenticating
/// users with Access Control Lists (ACLs)").
pub const AWS_CACHE_FORBIDDEN: &str = ",\"/@";

/// The longest password any policy may produce.
pub const MAX_PASSWORD_LEN: usize = 4096;

/// The most required classes a policy may have (the satisfiability check is exponential in it).
pub const MAX_REQUIRED_CLASSES: usize = 8;

/// The least probability that a uniformly drawn password meets every required class. Below it
/// the policy is refused: rejection sampling would need more than 100 draws on average.
const MIN_ACCEPT_PROBABILITY: f64 = 0.01;

/// Draws before [`PasswordPolicy::generate`] gives up. With an acceptance probability of at
/// least 1 %, running out happens with probability below 0.99^4096 ≈ 1e-18.
const MAX_DRAWS: usize = 4096;

/// What a target system accepts as a password, whatever alphabet a policy picks.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PasswordRule {
    /// ElastiCache (Valkey / Redis OSS RBAC) and MemoryDB user passwords: 16 to 128 printable
    /// characters, not `,` `"` `/` `@` (ElastiCache user guide, "Role-Based Access Control
    /// (RBAC)"; MemoryDB developer guide, "Authenticating users with Access Control Lists").
    /// leasehold reads "printable" as printable ASCII without the space.
    AwsCache,
    /// Redis / Valkey ACL passwords (`ACL SETUSER u >password`): the server takes any bytes;
    /// leasehold keeps to printable ASCII without spaces, at most 4096 characters, so a password
    /// can be typed, quoted in a config file and passed to `redis-cli`.
    RedisAcl,
    /// Anything without control characters, 1 to 4096 characters.
    Any,
}

impl PasswordRule {
    /// A short human name of the rule, used in error messages.
    pub fn describe(self) -> &'static str {
        match self {
            PasswordRule::AwsCache => "ElastiCache/MemoryDB password",
            PasswordRule::RedisAcl => "Redis ACL password",
            PasswordRule::Any => "password",
        }
    }

    /// The shortest password the target accepts.
    pub fn min_len(self) -> usize {
        match self {
            PasswordRule::AwsCache => 16,
            PasswordRule::RedisAcl | PasswordRule::Any => 1,
        }
    }

    /// The longest password the target accepts.
    pub fn max_len(self) -> usize {
        match self {
            PasswordRule::AwsCache => 128,
            PasswordRule::RedisAcl | PasswordRule::Any => MAX_PASSWORD_LEN,
        }
    }

    /// Whether the target accepts `c` in a password.
    pub fn allows(self, c: char) -> bool {
        match self {
            PasswordRule::AwsCache => c.is_ascii_graphic() && !AWS_CACHE_FORBIDDEN.contains(c),
            PasswordRule::RedisAcl => c.is_ascii_graphic(),
            PasswordRule::Any => !c.is_control(),
        }
    }
}

/// A password policy.
///
/// ```
/// use leasehold_core::PasswordPolicy;
/// use secrecy::ExposeSecret;
///
/// let policy = PasswordPolicy::elasticache();
/// let pw = policy.generate().unwrap();
/// assert_eq!(pw.expose_secret().len(), 64);
/// assert!(policy.accepts(pw.expose_secret()));
///
/// // Policies the target would refuse, or that cannot be met, are refused when built.
/// assert!(PasswordPolicy::elasticache().with_length(12).is_err());
/// assert!(PasswordPolicy::elasticache().with_alphabet("abc@def").is_err());
/// assert!(PasswordPolicy::new(2, "abc").unwrap().require("a").unwrap().require("b").unwrap().require("c").is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswordPolicy {
    length: usize,
    alphabet: Vec<char>,
    /// Each class as given (deduplicated); only its overlap with the alphabet matters.
    required: Vec<Vec<char>>,
    rule: PasswordRule,
    /// For each alphabet index, a bit per required class it belongs to (derived, kept in step
    /// by [`PasswordPolicy::checked`]); generation tracks class hits without searching.
    class_bits: Vec<u8>,
}

fn chars_of(s: &str) -> Vec<char> {
    let mut chars: Vec<char> = s.chars().collect();
    chars.sort_unstable();
    chars.dedup();
    chars
}

impl PasswordPolicy {
    /// A policy of `length` characters drawn from `alphabet`, no required classes, checked
    /// against [`PasswordRule::Any`].
    pub fn new(length: usize, alphabet: &str) -> Result<Self> {
        Self::for_rule(PasswordRule::Any, length, alphabet)
    }

    /// A policy of `length` characters drawn from `alphabet` that `rule` must accept.
    pub fn for_rule(rule: PasswordRule, length: usize, alphabet: &str) -> Result<Self> {
        PasswordPolicy {
            length,
            alphabet: chars_of(alphabet),
            required: Vec::new(),
            rule,
            class_bits: Vec::new(),
        }
        .checked()
    }

    /// Validates the policy and derives the per-character class bits.
    fn checked(mut self) -> Result<Self> {
        self.validate()?;
        self.class_bits = self
            .alphabet
            .iter()
            .map(|c| {
                self.required
                    .iter()
                    .enumerate()
                    .filter(|(_, class)| class.contains(c))
                    .fold(0u8, |bits, (i, _)| bits | (1 << i))
            })
            .collect();
        Ok(self)
    }

    /// Requires at least one character from `class` (which must overlap the alphabet).
    pub fn require(mut self, class: &str) -> Result<Self> {
        self.required.push(chars_of(class));
        self.checked()
    }

    /// Sets the length, keeping the target's rule.
    pub fn with_length(mut self, length: usize) -> Result<Self> {
        self.length = length;
        self.checked()
    }

    /// Replaces the alphabet, keeping the length, the required classes and the target's rule;
    /// every character must be one the target accepts.
    pub fn with_alphabet(mut self, alphabet: &str) -> Result<Self> {
        self.alphabet = chars_of(alphabet);
        self.checked()
    }

    /// The password length.
    pub fn length(&self) -> usize {
        self.length
    }

    /// The characters a password may contain.
    pub fn alphabet(&self) -> &[char] {
        &self.alphabet
    }

    /// The required classes, each as given to [`require`](Self::require).
    pub fn required_classes(&self) -> &[Vec<char>] {
        &self.required
    }

    /// The target's rule the policy is checked against.
    pub fn rule(&self) -> PasswordRule {
        self.rule
    }

    /// Checks the policy can be satisfied and that the target accepts what it produces.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| {
            Err(
                Error::new(ErrorKind::InvalidConfig, format!("password_policy: {m}"))
                    .with_context("field", "password_policy"),
            )
        };
        if self.alphabet.is_empty() {
            return bad("the alphabet is empty".into());
        }
        if let Some(c) = self.alphabet.iter().find(|c| !self.rule.allows(**c)) {
            return bad(format!(
                "the alphabet contains {c:?}, which a {} may not contain",
                self.rule.describe()
            ));
        }
        let (min, max) = (self.rule.min_len(), self.rule.max_len());
        if self.length < min || self.length > max {
            return bad(format!(
                "length {} is outside {min}..={max} for a {}",
                self.length,
                self.rule.describe()
            ));
        }
        if self.required.len() > MAX_REQUIRED_CLASSES {
            return bad(format!(
                "{} required character classes, at most {MAX_REQUIRED_CLASSES} are allowed",
                self.required.len()
            ));
        }
        if self
            .required
            .iter()
            .any(|class| !class.iter().any(|c| self.alphabet.contains(c)))
        {
            return bad("a required character class shares no character with the alphabet".into());
        }
        // One character per class always meets the policy, so this makes it satisfiable.
        if self.required.len() > self.length {
            return bad(format!(
                "length {} is shorter than the {} required character classes",
                self.length,
                self.required.len()
            ));
        }
        let p = self.accept_probability();
        if p < MIN_ACCEPT_PROBABILITY {
            return bad(format!(
                "a random password of length {} meets every required class with probability {p:.2e}; \
                 lengthen the password or drop a class",
                self.length
            ));
        }
        Ok(())
    }

    /// The probability that `length` uniform draws from the alphabet hit every required class,
    /// by inclusion–exclusion over the classes missed.
    fn accept_probability(&self) -> f64 {
        let n = self.alphabet.len() as f64;
        let k = self.required.len();
        let classes: Vec<Vec<char>> = self
            .required
            .iter()
            .map(|c| {
                c.iter()
                    .copied()
                    .filter(|c| self.alphabet.contains(c))
                    .collect()
            })
            .collect();
        let mut p = 0.0;
        for mask in 0u32..(1u32 << k) {
            let mut union: Vec<char> = Vec::new();
            for (i, class) in classes.iter().enumerate() {
                if mask & (1 << i) != 0 {
                    union.extend(class);
                }
            }
            union.sort_unstable();
            union.dedup();
            let miss = (n - union.len() as f64) / n;
            let term = miss.powi(self.length.min(i32::MAX as usize) as i32);
            if mask.count_ones() % 2 == 0 {
                p += term;
            } else {
                p -= term;
            }
        }
        p
    }

    /// Whether `password` satisfies the policy.
    pub fn accepts(&self, password: &str) -> bool {
        password.chars().count() == self.length
            && password.chars().all(|c| self.alphabet.contains(&c))
            && self
                .required
                .iter()
                .all(|class| password.chars().any(|c| class.contains(&c)))
    }

    /// A fresh password. Each character is drawn uniformly from the alphabet; draws that miss a
    /// required class are rejected and drawn again, so the result is uniform over all passwords
    /// the policy accepts.
    pub fn generate(&self) -> Result<SecretString> {
        // Every constructor validated the policy and derived `class_bits`; fields are private.
        let index = Uniform::new(0, self.alphabet.len()).map_err(|_| {
            Error::new(
                ErrorKind::InvalidConfig,
                "password_policy: the alphabet is empty",
            )
        })?;
        let all: u8 = ((1u16 << self.required.len()) - 1) as u8;
        let mut rng = rand::rng();
        let mut pw = String::with_capacity(self.length * 4);
        for _ in 0..MAX_DRAWS {
            pw.clear();
            let mut hit = 0u8;
            for _ in 0..self.length {
                let i = index.sample(&mut rng);
                hit |= self.class_bits[i];
                pw.push(self.alphabet[i]);
            }
            if hit == all {
                return Ok(SecretString::from(pw));
            }
        }
        Err(Error::new(
            ErrorKind::Unexpected,
            "password_policy: no password met the required classes; lengthen the password",
        ))
    }

    /// ElastiCache RBAC user passwords ([`PasswordRule::AwsCache`]: 16 to 128 characters);
    /// default 64 from letters, digits and [`AWS_CACHE_SPECIALS`], with a lower-case letter, an
    /// upper-case letter and a digit.
    pub fn elasticache() -> Self {
        Self::aws_cache_default()
    }

    /// MemoryDB user passwords: the same rule as ElastiCache.
    pub fn memorydb() -> Self {
        Self::aws_cache_default()
    }

    fn aws_cache_default() -> Self {
        let alphabet = format!("{LOWER}{UPPER}{DIGITS}{AWS_CACHE_SPECIALS}");
        PasswordPolicy::for_rule(PasswordRule::AwsCache, 64, &alphabet)
            .and_then(|p| p.require(LOWER))
            .and_then(|p| p.require(UPPER))
            .and_then(|p| p.require(DIGITS))
            .expect("built-in policy is valid")
    }

    /// Redis / Valkey ACL passwords ([`PasswordRule::RedisAcl`]): default 64 characters from
    /// letters, digits, `-` and `_` (no spaces, nothing an ACL file or a URL would misread).
    pub fn redis() -> Self {
        let alphabet = format!("{LOWER}{UPPER}{DIGITS}-_");
        PasswordPolicy::for_rule(PasswordRule::RedisAcl, 64, &alphabet)
            .and_then(|p| p.require(LOWER))
            .and_then(|p| p.require(UPPER))
            .and_then(|p| p.require(DIGITS))
            .expect("built-in policy is valid")
    }
}

impl Default for PasswordPolicy {
    /// 64 alphanumeric characters with every class.
    fn default() -> Self {
        let alphabet = format!("{LOWER}{UPPER}{DIGITS}");
        PasswordPolicy::new(64, &alphabet)
            .and_then(|p| p.require(LOWER))
            .and_then(|p| p.require(UPPER))
            .and_then(|p| p.require(DIGITS))
            .expect("built-in policy is valid")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    #[test]
    fn generated_passwords_satisfy_policy() {
        for p in [
            PasswordPolicy::default(),
            PasswordPolicy::elasticache(),
            PasswordPolicy::memorydb(),
            PasswordPolicy::redis(),
        ] {
            for _ in 0..200 {
                let pw = p.generate().unwrap();
                assert!(p.accepts(pw.expose_secret()));
                assert!(pw.expose_secret().chars().all(|c| p.rule().allows(c)));
            }
        }
    }

    #[test]
    fn unsatisfiable_policies_are_refused() {
        assert!(PasswordPolicy::new(8, "").is_err());
        assert!(PasswordPolicy::new(0, "abc").is_err());
        assert!(PasswordPolicy::new(8, "ab\u{7}").is_err());
        assert!(PasswordPolicy::new(MAX_PASSWORD_LEN + 1, "ab").is_err());
        assert!(PasswordPolicy::new(1, "ab")
            .unwrap()
            .require("a")
            .unwrap()
            .require("b")
            .is_err());
        assert!(PasswordPolicy::new(8, "ab")
            .unwrap()
            .require("xyz")
            .is_err());
        assert!(PasswordPolicy::elasticache().with_length(15).is_err());
        assert!(PasswordPolicy::elasticache().with_length(129).is_err());
        assert!(PasswordPolicy::elasticache().with_length(16).is_ok());
        assert!(PasswordPolicy::elasticache().with_length(128).is_ok());
        // Satisfiable in principle, but a uniform draw of 4 would hit both rarely (0.3 %).
        let rare = PasswordPolicy::new(4, &format!("{LOWER}{UPPER}{DIGITS}!"))
            .unwrap()
            .require("!")
            .unwrap();
        let e = rare.require("q").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidConfig);
        assert!(e.to_string().contains("probability"), "{e}");
    }

    #[test]
    fn target_rules_bound_the_alphabet() {
        for c in AWS_CACHE_FORBIDDEN.chars().chain([' ', 'é']) {
            let alphabet = format!("{LOWER}{UPPER}{DIGITS}{c}");
            assert!(
                PasswordPolicy::elasticache()
                    .with_alphabet(&alphabet)
                    .is_err(),
                "{c:?}"
            );
        }
        let wide: String = (0x21u8..=0x7e)
            .map(char::from)
            .filter(|c| !AWS_CACHE_FORBIDDEN.contains(*c))
            .collect();
        let p = PasswordPolicy::elasticache().with_alphabet(&wide).unwrap();
        assert_eq!(p.alphabet().len(), 90);
        assert!(PasswordPolicy::redis().with_alphabet("ab cd").is_err());
        // Changing the alphabet re-checks the required classes.
        assert!(PasswordPolicy::elasticache()
            .with_alphabet("abcdefghijklmnop")
            .is_err());
    }

    #[test]
    fn accept_probability_matches_a_hand_count() {
        // Alphabet {a, b}, length 2, require a and b: ab and ba of 4 passwords.
        let p = PasswordPolicy::new(2, "ab")
            .unwrap()
            .require("a")
            .unwrap()
            .require("b")
            .unwrap();
        assert!((p.accept_probability() - 0.5).abs() < 1e-12);
    }
}
