//! Password policies: length, alphabet, required character classes; generated from the
//! OS-seeded CSPRNG with unbiased sampling.

use rand::Rng;
use secrecy::SecretString;

use crate::error::{Error, ErrorKind, Result};

const LOWER: &str = "abcdefghijklmnopqrstuvwxyz";
const UPPER: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZ";
const DIGITS: &str = "0123456789";
/// The non-alphanumeric characters ElastiCache and MemoryDB accept in passwords and AUTH tokens.
pub const AWS_CACHE_SPECIALS: &str = "!&#$^<>-";

/// The longest password any policy may produce.
pub const MAX_PASSWORD_LEN: usize = 4096;

/// A password policy.
///
/// ```
/// use leasehold_core::PasswordPolicy;
/// use secrecy::ExposeSecret;
///
/// let policy = PasswordPolicy::elasticache();
/// let pw = policy.generate().unwrap();
/// assert_eq!(pw.expose_secret().len(), 64);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswordPolicy {
    length: usize,
    alphabet: Vec<char>,
    required: Vec<Vec<char>>,
    min_length: usize,
    max_length: usize,
}

impl PasswordPolicy {
    /// A policy of `length` characters drawn from `alphabet`, no required classes.
    pub fn new(length: usize, alphabet: &str) -> Result<Self> {
        let mut chars: Vec<char> = alphabet.chars().collect();
        chars.sort_unstable();
        chars.dedup();
        let p = PasswordPolicy {
            length,
            alphabet: chars,
            required: Vec::new(),
            min_length: 1,
            max_length: MAX_PASSWORD_LEN,
        };
        p.validate()?;
        Ok(p)
    }

    /// Requires at least one character from `class` (which must overlap the alphabet).
    pub fn require(mut self, class: &str) -> Result<Self> {
        let class: Vec<char> = class
            .chars()
            .filter(|c| self.alphabet.contains(c))
            .collect();
        if class.is_empty() {
            return Err(Error::new(
                ErrorKind::InvalidConfig,
                "password_policy: a required character class shares no character with the alphabet",
            ));
        }
        self.required.push(class);
        self.validate()?;
        Ok(self)
    }

    /// Sets the length, keeping the target's bounds.
    pub fn with_length(mut self, length: usize) -> Result<Self> {
        self.length = length;
        self.validate()?;
        Ok(self)
    }

    /// Sets the bounds the length must stay within (a target's own rule).
    fn with_bounds(mut self, min: usize, max: usize) -> Self {
        self.min_length = min;
        self.max_length = max;
        self
    }

    /// The password length.
    pub fn length(&self) -> usize {
        self.length
    }

    /// The characters a password may contain.
    pub fn alphabet(&self) -> &[char] {
        &self.alphabet
    }

    /// Checks the policy can be satisfied.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| {
            Err(Error::new(
                ErrorKind::InvalidConfig,
                format!("password_policy: {m}"),
            ))
        };
        if self.alphabet.is_empty() {
            return bad("the alphabet is empty".into());
        }
        if let Some(c) = self.alphabet.iter().find(|c| c.is_control()) {
            return bad(format!("the alphabet contains the control character {c:?}"));
        }
        if self.length < self.min_length || self.length > self.max_length {
            return bad(format!(
                "length {} is outside {}..={}",
                self.length, self.min_length, self.max_length
            ));
        }
        if self.required.len() > self.length {
            return bad(format!(
                "length {} is shorter than the {} required character classes",
                self.length,
                self.required.len()
            ));
        }
        Ok(())
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
        self.validate()?;
        let mut rng = rand::rng();
        // A valid policy is satisfied with positive probability; the bound only guards against
        // pathological policies (many classes, tiny lengths).
        for _ in 0..10_000 {
            let pw: String = (0..self.length)
                .map(|_| self.alphabet[rng.random_range(0..self.alphabet.len())])
                .collect();
            if self.accepts(&pw) {
                return Ok(SecretString::from(pw));
            }
        }
        Err(Error::new(
            ErrorKind::InvalidConfig,
            "password_policy: required classes are too unlikely at this length; lengthen the password",
        ))
    }

    /// ElastiCache RBAC user passwords: 16 to 128 printable characters; default 64 from
    /// letters, digits and `!&#$^<>-`, with a lower-case letter, an upper-case letter and a digit.
    pub fn elasticache() -> Self {
        Self::aws_cache_default()
    }

    /// MemoryDB user passwords: the same rule as ElastiCache.
    pub fn memorydb() -> Self {
        Self::aws_cache_default()
    }

    fn aws_cache_default() -> Self {
        let alphabet = format!("{LOWER}{UPPER}{DIGITS}{AWS_CACHE_SPECIALS}");
        PasswordPolicy::new(64, &alphabet)
            .and_then(|p| p.require(LOWER))
            .and_then(|p| p.require(UPPER))
            .and_then(|p| p.require(DIGITS))
            .map(|p| p.with_bounds(16, 128))
            .expect("built-in policy is valid")
    }

    /// Redis / Valkey ACL passwords: default 64 characters from letters, digits, `-` and `_`
    /// (no spaces, nothing an ACL file would misread).
    pub fn redis() -> Self {
        let alphabet = format!("{LOWER}{UPPER}{DIGITS}-_");
        PasswordPolicy::new(64, &alphabet)
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
            PasswordPolicy::redis(),
        ] {
            for _ in 0..200 {
                let pw = p.generate().unwrap();
                assert!(p.accepts(pw.expose_secret()));
            }
        }
    }

    #[test]
    fn unsatisfiable_policies_are_refused() {
        assert!(PasswordPolicy::new(8, "").is_err());
        assert!(PasswordPolicy::new(0, "abc").is_err());
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
    }
}
