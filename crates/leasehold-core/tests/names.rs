//! Name rules: every rendered name satisfies its target's rule or the call errors, checked
//! against an independent statement of each rule (written from the API references, not from
//! the crate's code).

use leasehold_core::{ErrorKind, NameRule, TemplateVars, UsernameTemplate};
use proptest::prelude::*;

const RULES: [NameRule; 8] = [
    NameRule::ElastiCacheUserId,
    NameRule::ElastiCacheUserName,
    NameRule::MemoryDbUserName,
    NameRule::IamUserName,
    NameRule::StsSessionName,
    NameRule::FederationTokenName,
    NameRule::RedisAclUser,
    NameRule::Any,
];

fn len_in(s: &str, min: usize, max: usize) -> bool {
    (min..=max).contains(&s.chars().count())
}

/// `[a-zA-Z][a-zA-Z0-9\-]*`, no trailing or doubled hyphen: hyphen-separated segments, none
/// empty, of letters and digits, the first starting with a letter.
fn cache_id(s: &str) -> bool {
    let segments: Vec<&str> = s.split('-').collect();
    segments
        .iter()
        .all(|seg| !seg.is_empty() && seg.bytes().all(|b| b.is_ascii_alphanumeric()))
        && s.as_bytes().first().is_some_and(u8::is_ascii_alphabetic)
}

/// `[\w+=,.@-]` with `\w` = `[A-Za-z0-9_]`.
fn iam(s: &str) -> bool {
    s.bytes().all(|b| {
        b.is_ascii_lowercase()
            || b.is_ascii_uppercase()
            || b.is_ascii_digit()
            || b"_+=,.@-".contains(&b)
    })
}

/// Printable ASCII without the space: bytes 0x21 to 0x7e.
fn graphic(s: &str) -> bool {
    s.bytes().all(|b| (0x21..=0x7e).contains(&b))
}

fn oracle(rule: NameRule, s: &str) -> bool {
    match rule {
        NameRule::ElastiCacheUserId | NameRule::MemoryDbUserName => {
            len_in(s, 1, 40) && cache_id(s) && s != "default"
        }
        NameRule::IamUserName => len_in(s, 1, 64) && iam(s),
        NameRule::StsSessionName => len_in(s, 2, 64) && iam(s),
        NameRule::FederationTokenName => len_in(s, 2, 32) && iam(s),
        NameRule::RedisAclUser => len_in(s, 1, 128) && graphic(s) && s != "default",
        NameRule::ElastiCacheUserName => len_in(s, 1, 120) && graphic(s) && s != "default",
        NameRule::Any => {
            len_in(s, 1, 256)
                && s.len() <= 256
                && !s.chars().any(|c| c.is_control() || c.is_whitespace())
        }
        other => panic!("no oracle for {other:?}"),
    }
}

fn piece() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-zA-Z0-9_.@+=,:-]{0,6}",
        Just(" ".to_string()),
        Just("--".to_string()),
        Just("ü".to_string()),
        Just("/".to_string()),
        Just("{{randomUsername}}".to_string()),
        Just("{{identity.name}}".to_string()),
        Just("{{dynamicSecret.name}}".to_string()),
        Just("{{dynamicSecret.type}}".to_string()),
        Just("{{unixTimestamp}}".to_string()),
        (1u32..60).prop_map(|n| format!("{{{{random {n}}}}}")),
        (1u32..60).prop_map(|n| format!("{{{{random-{n}}}}}")),
        (0u32..30).prop_map(|n| format!("{{{{truncate identity.name {n}}}}}")),
        Just("{{uppercase identity.name}}".to_string()),
        Just("{{lowercase dynamicSecret.name}}".to_string()),
        Just("{{replace identity.name '.' '-'}}".to_string()),
        Just("{{truncate (lowercase identity.name) 8}}".to_string()),
    ]
}

fn identity() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-zA-Z0-9._@-]{0,40}",
        "[a-z ]{0,10}",
        ".{0,12}",
        Just("default".to_string()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn rendered_names_satisfy_the_rule_or_the_call_errors(
        pieces in proptest::collection::vec(piece(), 1..5),
        identity in identity(),
        secret in "[a-z0-9-]{1,20}",
        prefix in prop_oneof![Just("lh-"), Just("lh"), Just("app.")],
    ) {
        let template = UsernameTemplate::parse(&pieces.concat()).unwrap();
        let vars = TemplateVars {
            secret_name: &secret,
            secret_type: "aws-elasticache",
            identity: Some(&identity),
            prefix,
        };
        for rule in RULES {
            match template.render_for(&vars, rule) {
                Ok(name) => prop_assert!(oracle(rule, &name), "{:?} accepted {:?}", rule, name),
                Err(e) => prop_assert_eq!(e.kind(), ErrorKind::InvalidTemplate),
            }
            // And the rule agrees with the oracle on whatever the template renders.
            let raw = template.render(&vars).unwrap();
            let name = rule.normalize(&raw);
            prop_assert_eq!(rule.check(&name).is_ok(), oracle(rule, &name), "{:?} on {:?}", rule, name);
        }
    }

    #[test]
    fn the_rules_agree_with_the_oracles_on_arbitrary_names(
        name in prop_oneof![".{0,300}", "[a-zA-Z0-9-]{0,45}", "[!-~]{0,130}", "[a-zA-Z0-9_+=,.@-]{0,70}"],
    ) {
        for rule in RULES {
            prop_assert_eq!(rule.check(&name).is_ok(), oracle(rule, &name), "{:?} on {:?}", rule, name);
        }
    }
}

#[test]
fn default_usernames_fit_every_rule() {
    let t = UsernameTemplate::parse("{{randomUsername}}").unwrap();
    let vars = TemplateVars {
        secret_name: "orders",
        secret_type: "redis",
        identity: None,
        prefix: "lh-",
    };
    for _ in 0..1000 {
        for rule in RULES {
            let name = t.render_for(&vars, rule).unwrap();
            assert!(name.starts_with("lh-") && name.len() == 23, "{name}");
        }
    }
}

#[test]
fn documented_patterns() {
    // ElastiCache / MemoryDB: [a-zA-Z][a-zA-Z0-9\-]*, stored lower-case.
    assert_eq!(
        NameRule::ElastiCacheUserId.normalize("TestUserId"),
        "testuserid"
    );
    assert_eq!(NameRule::MemoryDbUserName.normalize("My-User"), "my-user");
    assert_eq!(NameRule::IamUserName.normalize("Bob"), "Bob");
    for ok in ["my-user", "a", "testuserid"] {
        assert!(NameRule::MemoryDbUserName.check(ok).is_ok(), "{ok}");
    }
    // IAM/STS: [\w+=,.@-].
    assert!(NameRule::IamUserName
        .check("Bob_the+admin=1,2.3@x-y")
        .is_ok());
    assert!(NameRule::FederationTokenName.check("Bob").is_ok());
    let e = NameRule::StsSessionName.check("a b").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidTemplate);
    assert!(e.to_string().contains("STS role session name"), "{e}");
}
