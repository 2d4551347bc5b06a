//! Rendering: JSON for programs, aligned tables for people.

use std::io::{self, Write};

use chrono::{DateTime, SecondsFormat, Utc};
use leasehold_core::{Credentials, DamagedLease, Error, IssuedLease, LeaseRecord};
use secrecy::ExposeSecret;
use serde_json::{json, Map, Value};

/// Whether `c` changes how text around it is shown without being visible itself: a control
/// character (`Cc`), a format character (`Cf`: bidi overrides and isolates, zero-width
/// characters, the BOM, tag characters), or a line or paragraph separator.
pub fn is_invisible(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{00AD}'
                | '\u{0600}'..='\u{0605}'
                | '\u{061C}'
                | '\u{06DD}'
                | '\u{070F}'
                | '\u{0890}'..='\u{0891}'
                | '\u{08E2}'
                | '\u{180E}'
                | '\u{200B}'..='\u{200F}'
                | '\u{2028}'..='\u{202E}'
                | '\u{2060}'..='\u{2064}'
                | '\u{2066}'..='\u{206F}'
                | '\u{FEFF}'
                | '\u{FFF9}'..='\u{FFFB}'
                | '\u{110BD}'
                | '\u{110CD}'
                | '\u{13430}'..='\u{1343F}'
                | '\u{1BCA0}'..='\u{1BCA3}'
                | '\u{1D173}'..='\u{1D17A}'
                | '\u{E0001}'
                | '\u{E0020}'..='\u{E007F}'
        )
}

/// `s` with every [invisible](is_invisible) character written as `\u{..}`, so that text from
/// the store (an identity set by another program, a damaged row) cannot reorder, hide or
/// recolour what a terminal shows.
pub fn escape(s: &str) -> String {
    if !s.chars().any(is_invisible) {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if is_invisible(c) {
            out.push_str(&format!("\\u{{{:x}}}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

/// RFC 3339, whole seconds, `Z`.
pub fn time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// An error as JSON: kind, message, context.
pub fn error_json(e: &Error) -> Value {
    let ctx: Map<String, Value> = e
        .context_pairs()
        .map(|(k, v)| (k.to_string(), Value::String(v.to_string())))
        .collect();
    json!({ "kind": e.kind().as_str(), "message": e.message(), "context": ctx })
}

/// A lease record as JSON. Records hold no secret material.
pub fn record_json(l: &LeaseRecord) -> Value {
    json!({
        "lease_id": l.id.as_str(),
        "secret": &*l.secret,
        "type": &*l.provider_kind,
        "state": l.state.as_str(),
        "principal": l.external.id,
        "identity": l.identity.as_deref(),
        "issued_at": time(l.issued_at),
        "expires_at": time(l.expires_at),
        "max_expires_at": time(l.max_expires_at),
        "renewable": l.renewable,
        "revoke_attempts": l.revoke_attempts,
        "last_error": l.last_error,
        "external": { "id": l.external.id, "attrs": l.external.attrs },
    })
}

/// The credentials of a new lease: the only output that ever carries secret material.
fn credentials_json(c: &Credentials) -> Value {
    match c {
        Credentials::UsernamePassword { username, password } => json!({
            "username": username,
            "password": password.expose_secret(),
        }),
        Credentials::AwsKeys {
            access_key_id,
            secret_access_key,
            session_token,
        } => json!({
            "access_key_id": access_key_id,
            "secret_access_key": secret_access_key.expose_secret(),
            "session_token": session_token.as_ref().map(|t| t.expose_secret()),
        }),
        // `Credentials` is non-exhaustive: a future variant shows its principal only.
        other => json!({ "principal": other.principal() }),
    }
}

/// An issued lease as JSON, credentials included.
pub fn issued_json(l: &IssuedLease) -> Value {
    json!({
        "lease_id": l.lease_id.as_str(),
        "secret": l.secret,
        "issued_at": time(l.issued_at),
        "expires_at": time(l.expires_at),
        "max_expires_at": time(l.max_expires_at),
        "renewable": l.renewable,
        "live": l.live(),
        "credentials": credentials_json(&l.credentials),
    })
}

/// Key/value rows of an issued lease, for a terminal.
pub fn issued_rows(l: &IssuedLease) -> Vec<(String, String)> {
    let mut rows = vec![
        ("lease_id".to_string(), l.lease_id.to_string()),
        ("secret".into(), l.secret.clone()),
        ("expires_at".into(), time(l.expires_at)),
        ("max_expires_at".into(), time(l.max_expires_at)),
        ("renewable".into(), l.renewable.to_string()),
        ("live".into(), l.live().to_string()),
    ];
    if let Value::Object(c) = credentials_json(&l.credentials) {
        for (k, v) in c {
            match v {
                Value::String(s) => rows.push((k, s)),
                Value::Null => {}
                other => rows.push((k, other.to_string())),
            }
        }
    }
    rows
}

/// Key/value rows of a lease record, for a terminal.
pub fn record_rows(l: &LeaseRecord) -> Vec<(String, String)> {
    let mut rows = vec![
        ("lease_id".to_string(), l.id.to_string()),
        ("secret".into(), l.secret.to_string()),
        ("type".into(), l.provider_kind.to_string()),
        ("state".into(), l.state.to_string()),
        ("principal".into(), l.external.id.clone()),
        (
            "identity".into(),
            l.identity.as_deref().unwrap_or("-").to_string(),
        ),
        ("issued_at".into(), time(l.issued_at)),
        ("expires_at".into(), time(l.expires_at)),
        ("max_expires_at".into(), time(l.max_expires_at)),
        ("renewable".into(), l.renewable.to_string()),
    ];
    for (k, v) in &l.external.attrs {
        rows.push((format!("external.{k}"), v.clone()));
    }
    if l.revoke_attempts > 0 {
        rows.push(("revoke_attempts".into(), l.revoke_attempts.to_string()));
    }
    if let Some(e) = &l.last_error {
        rows.push(("last_error".into(), e.clone()));
    }
    rows
}

/// A row the store cannot decode, as an element of `list`: `state` is `damaged`.
pub fn damaged_json(d: &DamagedLease) -> Value {
    json!({
        "lease_id": d.id,
        "state": "damaged",
        "damaged": true,
        "reason": d.reason,
        "secret": d.secret,
        "principal": d.principal,
    })
}

/// Writes `rows` as `key   value` lines, [escaped](escape).
pub fn write_kv(out: &mut dyn Write, rows: &[(String, String)]) -> io::Result<()> {
    let w = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (k, v) in rows {
        writeln!(out, "{k:<w$}  {}", escape(v))?;
    }
    Ok(())
}

/// Writes an aligned table with a header row; cells are [escaped](escape).
pub fn write_table(out: &mut dyn Write, header: &[&str], rows: &[Vec<String>]) -> io::Result<()> {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| r.iter().map(|c| escape(c)).collect())
        .collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(c.chars().count());
            }
        }
    }
    let line = |out: &mut dyn Write, cells: &[String]| -> io::Result<()> {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                let pad = widths[i].saturating_sub(c.chars().count());
                s.push_str(c);
                s.push_str(&" ".repeat(pad + 2));
            }
        }
        writeln!(out, "{}", s.trim_end())
    };
    let head: Vec<String> = header.iter().map(|h| h.to_string()).collect();
    line(out, &head)?;
    for r in &rows {
        line(out, r)?;
    }
    Ok(())
}

/// The table of `list`: leases, then damaged rows (state `DAMAGED`) with their reasons below.
pub fn write_records(
    out: &mut dyn Write,
    leases: &[LeaseRecord],
    damaged: &[DamagedLease],
) -> io::Result<()> {
    let mut rows: Vec<Vec<String>> = leases
        .iter()
        .map(|l| {
            vec![
                l.id.to_string(),
                l.state.to_string(),
                l.external.id.clone(),
                time(l.expires_at),
                l.identity.as_deref().unwrap_or("-").to_string(),
            ]
        })
        .collect();
    for d in damaged {
        rows.push(vec![
            d.id.clone(),
            "DAMAGED".into(),
            d.principal.clone().unwrap_or_else(|| "?".into()),
            "-".into(),
            "-".into(),
        ]);
    }
    write_table(
        out,
        &["LEASE ID", "STATE", "PRINCIPAL", "EXPIRES AT", "IDENTITY"],
        &rows,
    )?;
    if leases.is_empty() && damaged.is_empty() {
        writeln!(out, "(no leases)")?;
    }
    for d in damaged {
        writeln!(
            out,
            "damaged {}: {} (`revoke --force` removes the row; check the principal by hand)",
            escape(&d.id),
            escape(&d.reason)
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_columns() {
        let mut out = Vec::new();
        write_table(
            &mut out,
            &["A", "LONGER"],
            &[
                vec!["xxxx".into(), "1".into()],
                vec!["y".into(), "2".into()],
            ],
        )
        .unwrap();
        let s = String::from_utf8(out).unwrap();
        assert_eq!(s, "A     LONGER\nxxxx  1\ny     2\n");
    }

    #[test]
    fn invisible_characters_are_escaped_in_tables() {
        let mut out = Vec::new();
        write_table(
            &mut out,
            &["A", "B"],
            &[vec!["x\u{202e}y".into(), "\u{1b}[31m\u{200b}".into()]],
        )
        .unwrap();
        let s = String::from_utf8(out).unwrap();
        assert_eq!(s, "A           B\nx\\u{202e}y  \\u{1b}[31m\\u{200b}\n");
        for c in [
            '\u{2066}',
            '\u{2069}',
            '\u{200f}',
            '\u{feff}',
            '\u{e0041}',
            '\u{ad}',
        ] {
            assert!(is_invisible(c), "{:x}", c as u32);
        }
        for c in ['a', 'é', '中', ' ', '-'] {
            assert!(!is_invisible(c));
        }
    }

    #[test]
    fn damaged_rows_are_listed_with_their_reason() {
        let d = DamagedLease::new("cache/\u{202e}abc", "expires_at: not a timestamp")
            .with_principal(Some("lh-x".into()));
        let mut out = Vec::new();
        write_records(&mut out, &[], std::slice::from_ref(&d)).unwrap();
        let s = String::from_utf8(out).unwrap();
        assert!(s.contains("cache/\\u{202e}abc  DAMAGED  lh-x"), "{s}");
        assert!(
            s.contains("damaged cache/\\u{202e}abc: expires_at: not a timestamp"),
            "{s}"
        );
        assert!(!s.contains('\u{202e}'));
        let v = damaged_json(&d);
        assert_eq!(v["state"], "damaged");
        assert_eq!(v["damaged"], true);
        assert_eq!(v["reason"], "expires_at: not a timestamp");
    }

    #[test]
    fn kv_aligns_keys() {
        let mut out = Vec::new();
        write_kv(
            &mut out,
            &[("a".into(), "1".into()), ("abc".into(), "2".into())],
        )
        .unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "a    1\nabc  2\n");
    }
}
