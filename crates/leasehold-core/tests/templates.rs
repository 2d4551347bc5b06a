//! Username and statement templates: the documented examples render as documented, unknown
//! names are refused at parse time, nothing is HTML-escaped, and no value can break a JSON
//! statement or show up in an error.

use chrono::{TimeZone, Utc};
use leasehold_core::template::{HELPERS, STATEMENT_VARIABLES, USERNAME_VARIABLES};
use leasehold_core::{ErrorKind, StatementTemplate, StatementVars, TemplateVars, UsernameTemplate};
use proptest::prelude::*;
use secrecy::SecretString;
use serde_json::json;

fn vars(identity: Option<&str>) -> TemplateVars<'_> {
    TemplateVars {
        secret_name: "orders-cache",
        secret_type: "aws-elasticache",
        identity,
        prefix: "lh-",
    }
}

fn render(src: &str, identity: Option<&str>) -> String {
    UsernameTemplate::parse(src)
        .unwrap()
        .render(&vars(identity))
        .unwrap()
}

#[test]
fn documented_examples_render_as_documented() {
    // The two examples of the template documentation.
    assert_eq!(
        render("{{truncate identity.name 4}}", Some("testuser")),
        "test"
    );
    assert_eq!(
        render(
            "{{replace identity.name 'user' 'replace'}}",
            Some("testuser")
        ),
        "testreplace"
    );
    // Every variable.
    assert_eq!(render("{{identity.name}}", Some("svc")), "svc");
    assert_eq!(render("{{dynamicSecret.name}}", None), "orders-cache");
    assert_eq!(render("{{dynamicSecret.type}}", None), "aws-elasticache");
    let ts: i64 = render("{{unixTimestamp}}", None).parse().unwrap();
    assert!((ts - Utc::now().timestamp()).abs() <= 2);
    let r = render("{{randomUsername}}", None);
    assert!(r.starts_with("lh-") && r.len() == 23, "{r}");
    assert_eq!(render("{{randomUsername}}", None).len(), 23);
    // Every helper, both random spellings.
    assert_eq!(render("{{uppercase identity.name}}", Some("svc")), "SVC");
    assert_eq!(render("{{lowercase identity.name}}", Some("SVC")), "svc");
    for src in ["{{random 12}}", "{{random-12}}"] {
        let r = render(src, None);
        assert_eq!(r.len(), 12);
        assert!(r
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()));
    }
    // Two random parts differ (36^8 values).
    let r = render("{{random 8}}-{{random 8}}", None);
    assert_ne!(r[..8], r[9..]);
    // Composed, as the issue's examples would be used.
    assert_eq!(
        render(
            "{{dynamicSecret.name}}-{{truncate (replace identity.name '.' '-') 6}}",
            Some("a.b.c.d.e")
        ),
        "orders-cache-a-b-c-"
    );
}

#[test]
fn unknown_names_are_errors_at_parse_time_not_empty_strings() {
    for src in [
        "{{identity.email}}",
        "{{dynamicSecret}}",
        "{{secret.name}}",
        "{{Identity.name}}",
        "{{shout identity.name}}",
        "{{random}}",
        "{{truncate identity.name}}",
        "{{with identity}}{{name}}{{/with}}",
    ] {
        let e = UsernameTemplate::parse(src).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidTemplate, "{src}");
    }
    let e = UsernameTemplate::parse("{{identity.email}}").unwrap_err();
    assert!(e.to_string().contains("identity.email"), "{e}");
    assert!(
        e.to_string().contains("identity.name"),
        "{e}: lists the known ones"
    );
    // The public lists say what is known.
    assert!(USERNAME_VARIABLES.contains(&"identity.name"));
    assert!(STATEMENT_VARIABLES.contains(&"password"));
    assert_eq!(HELPERS.len(), 5);
}

#[test]
fn nothing_is_html_escaped_in_usernames() {
    let hostile = r#"<a href="x">&amp;'"#;
    assert_eq!(render("{{identity.name}}", Some(hostile)), hostile);
    assert_eq!(render("{{{identity.name}}}", Some(hostile)), hostile);
    assert_eq!(
        render("{{lowercase identity.name}}", Some(hostile)),
        hostile.to_lowercase()
    );
}

#[test]
fn statement_variables_render() {
    let t = StatementTemplate::parse(
        r#"{"UserName":"{{username}}","Passwords":["{{password}}"],"Until":"{{expiration}}","Also":"{{randomUsername}}","At":{{unixTimestamp}}}"#,
    )
    .unwrap();
    let pw = SecretString::from("pw-1");
    let exp = Utc.with_ymd_and_hms(2030, 1, 2, 3, 4, 5).unwrap();
    let v = t
        .render(&StatementVars {
            username: "lh-abc",
            password: Some(&pw),
            expiration: Some(exp),
        })
        .unwrap()
        .into_json();
    assert_eq!(v["UserName"], "lh-abc");
    assert_eq!(v["Passwords"], json!(["pw-1"]));
    assert_eq!(v["Until"], "2030-01-02T03:04:05+00:00");
    assert_eq!(v["Also"], "lh-abc");
    assert!(v["At"].as_i64().unwrap() > 1_700_000_000);
}

#[test]
fn statement_shapes_are_checked_for_providers() {
    // MemoryDB CreateUser: UserName, AuthenticationMode, AccessString (Tags optional).
    let required = ["UserName", "AuthenticationMode.Type", "AccessString"];
    let allowed = ["UserName", "AuthenticationMode", "AccessString", "Tags"];
    let good = StatementTemplate::parse(
        r#"{"UserName":"{{username}}","AuthenticationMode":{"Type":"password","Passwords":["{{password}}"]},"AccessString":"on ~app:* +@read"}"#,
    )
    .unwrap();
    good.check_shape(&required, &allowed).unwrap();
    let typo = StatementTemplate::parse(
        r#"{"Username":"{{username}}","AuthenticationMode":{"Type":"password","Passwords":["{{password}}"]},"AccessString":"on"}"#,
    )
    .unwrap();
    let e = typo.check_shape(&required, &allowed).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidTemplate);
    assert!(e.to_string().contains("UserName"), "{e}");
    let e = typo.check_shape(&[], &allowed).unwrap_err();
    assert!(e.to_string().contains("Username"), "{e}");
}

#[test]
fn a_statement_that_would_need_the_password_unquoted_is_refused_at_parse() {
    // The sample password has a quote and a backslash: a template that puts it outside a
    // JSON string fails when parsed, not when the first credential is issued.
    for src in [
        r#"{"a": {{password}} }"#,
        r#"{"a": "{{password}}" "#,
        r#"{"a": "x"} {{password}}"#,
    ] {
        assert_eq!(
            StatementTemplate::parse(src).unwrap_err().kind(),
            ErrorKind::InvalidTemplate,
            "{src}"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn any_password_round_trips_through_a_statement(password in any::<String>(), username in "[a-z0-9-]{1,20}") {
        let t = StatementTemplate::parse(
            r#"{"U":"{{username}}","P":["{{password}}"],"L":"{{lowercase password}}","T":"{{truncate password 5}}"}"#,
        ).unwrap();
        let pw = SecretString::from(password.clone());
        let v = t.render(&StatementVars { username: &username, password: Some(&pw), expiration: None }).unwrap();
        let v = v.expose_json();
        prop_assert_eq!(v.as_object().unwrap().len(), 4);
        prop_assert_eq!(v["P"].as_array().unwrap().len(), 1);
        prop_assert_eq!(v["P"][0].as_str().unwrap(), password.as_str());
        prop_assert_eq!(v["L"].as_str().unwrap(), password.to_lowercase());
        prop_assert_eq!(v["T"].as_str().unwrap(), password.chars().take(5).collect::<String>());
        prop_assert_eq!(v["U"].as_str().unwrap(), username.as_str());
    }

    #[test]
    fn any_identity_renders_verbatim(identity in any::<String>()) {
        let t = UsernameTemplate::parse("x{{identity.name}}y").unwrap();
        prop_assert_eq!(t.render(&vars(Some(&identity))).unwrap(), format!("x{identity}y"));
    }

    #[test]
    fn errors_and_debug_output_never_contain_the_password(password in "[!-~]{8,40}") {
        let marker = format!("SECRET{password}");
        let pw = SecretString::from(marker.clone());
        let sv = StatementVars { username: "u", password: Some(&pw), expiration: None };
        let shown = format!("{:?}", sv);
        prop_assert!(!shown.contains(&marker));
        for src in [r#"{"P":"{{password}}"}"#, r#"{"P":"{{uppercase password}}","Q":"{{expiration}}"}"#] {
            let t = StatementTemplate::parse(src).unwrap();
            match t.render(&sv) {
                Ok(v) => {
                    let shown = format!("{:?}", v);
                    prop_assert!(!shown.contains(&marker));
                    let e = v.check_shape(&["Missing"], &["Other"]).unwrap_err();
                    prop_assert!(!e.to_string().contains(&marker));
                }
                Err(e) => {
                    prop_assert!(!e.to_string().contains(&marker));
                    let shown = format!("{:?}", e);
                    prop_assert!(!shown.contains(&marker));
                }
            }
        }
    }
}
