//! Username and statement templates (handlebars), compiled once per secret, rendered per issue.
//!
//! Username templates may use `randomUsername`, `unixTimestamp` (seconds), `identity.name`,
//! `dynamicSecret.name` and `dynamicSecret.type`. Statement templates (JSON creation and
//! revocation statements) may use `username`, `password`, `expiration` (RFC 3339),
//! `randomUsername` (the rendered username) and `unixTimestamp`.
//!
//! Helpers: `random N` (also spelled `random-N`; `N` random `[a-z0-9]`, 1 to 256), `truncate s
//! N`, `replace s 'from' 'to'`, `uppercase s`, `lowercase s`; helpers nest as subexpressions:
//! `{{truncate (lowercase identity.name) 8}}`.
//!
//! A template is checked when it is parsed, not when it first renders: an unknown variable or
//! helper, a wrong number of arguments, a block (`{{#if}}`), a partial, a decorator, or a
//! `random` length outside its range is an [`ErrorKind::InvalidTemplate`](crate::ErrorKind::InvalidTemplate). Username output is
//! never HTML-escaped. Statement output is JSON-escaped, helper results included, and the raw
//! `{{{ }}}` form is refused there, so no password can break out of its JSON string.
//!
//! Errors never carry a rendered value: parse errors quote the template source, render errors
//! name only the template position and the variable or helper involved.

use rand::distr::{Distribution, Uniform};

mod check;
mod helpers;
mod statement;
#[cfg(test)]
mod tests;
mod username;

pub use statement::{RenderedStatement, StatementTemplate, StatementVars};
pub use username::{TemplateVars, UsernameTemplate};

/// The default username template.
pub const DEFAULT_USERNAME_TEMPLATE: &str = "{{randomUsername}}";

/// Length of the random part of `randomUsername`.
pub const RANDOM_USERNAME_LEN: usize = 20;

/// Longest output of the `random` helper.
const MAX_RANDOM_LEN: u64 = 256;

/// Longest template source accepted.
pub const MAX_TEMPLATE_LEN: usize = 16 * 1024;

/// Deepest nesting of brackets (`(`, `[`, `{`, counting each brace of `{{`) accepted.
const MAX_NESTING: usize = 48;

/// Deepest nesting of helper calls accepted in a template.
const MAX_HELPER_DEPTH: usize = 8;

const RANDOM_CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";

/// Variables of username templates.
pub const USERNAME_VARIABLES: &[&str] = &[
    "randomUsername",
    "unixTimestamp",
    "identity.name",
    "dynamicSecret.name",
    "dynamicSecret.type",
];

/// Variables of statement templates.
pub const STATEMENT_VARIABLES: &[&str] = &[
    "username",
    "password",
    "expiration",
    "randomUsername",
    "unixTimestamp",
];

/// The helpers of both template kinds.
pub const HELPERS: &[&str] = &["random", "truncate", "replace", "uppercase", "lowercase"];

/// `len` characters from `[a-z0-9]`, uniformly, from the OS-seeded CSPRNG.
pub fn random_lowercase(len: usize) -> String {
    let index = Uniform::new(0, RANDOM_CHARS.len()).expect("non-empty range");
    let mut rng = rand::rng();
    (0..len)
        .map(|_| RANDOM_CHARS[index.sample(&mut rng)] as char)
        .collect()
}

/// The value of `randomUsername`: the prefix and 20 random lower-case letters and digits.
pub fn random_username(prefix: &str) -> String {
    let mut s = String::with_capacity(prefix.len() + RANDOM_USERNAME_LEN);
    s.push_str(prefix);
    s.push_str(&random_lowercase(RANDOM_USERNAME_LEN));
    s
}
