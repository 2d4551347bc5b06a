//! Template unit tests.

use secrecy::SecretString;

use super::*;
use crate::error::{ErrorKind, Result};

fn vars(identity: Option<&str>) -> TemplateVars<'_> {
    TemplateVars {
        secret_name: "orders",
        secret_type: "redis",
        identity,
        prefix: "lh-",
    }
}

#[test]
fn documented_examples_render() {
    let t = UsernameTemplate::parse("{{truncate identity.name 4}}").unwrap();
    assert_eq!(t.render(&vars(Some("testuser"))).unwrap(), "test");
    let t = UsernameTemplate::parse("{{replace identity.name 'user' 'replace'}}").unwrap();
    assert_eq!(t.render(&vars(Some("testuser"))).unwrap(), "testreplace");
    let t = UsernameTemplate::parse("{{uppercase dynamicSecret.name}}-{{lowercase 'AB'}}").unwrap();
    assert_eq!(t.render(&vars(None)).unwrap(), "ORDERS-ab");
}

#[test]
fn a_rendered_name_holds_no_more_memory_than_it_needs() {
    let t = UsernameTemplate::parse(DEFAULT_USERNAME_TEMPLATE).unwrap();
    let name = t.render(&vars(None)).unwrap();
    assert!(
        name.capacity() < 2 * name.len().max(16),
        "{}",
        name.capacity()
    );
}

#[test]
fn random_both_spellings() {
    for src in ["x{{random 8}}", "x{{random-8}}"] {
        let t = UsernameTemplate::parse(src).unwrap();
        let s = t.render(&vars(None)).unwrap();
        assert_eq!(s.len(), 9, "{src}");
    }
}

#[test]
fn default_template_keeps_prefix() {
    let t = UsernameTemplate::parse(DEFAULT_USERNAME_TEMPLATE).unwrap();
    assert!(t.keeps_prefix());
    let s = t.render(&vars(None)).unwrap();
    assert!(s.starts_with("lh-") && s.len() == 23);
}

#[test]
fn unknown_variables_and_helpers_are_refused() {
    assert_eq!(
        UsernameTemplate::parse("{{nope}}").unwrap_err().kind(),
        ErrorKind::InvalidTemplate
    );
    assert_eq!(
        UsernameTemplate::parse("{{shout 'x'}}").unwrap_err().kind(),
        ErrorKind::InvalidTemplate
    );
    assert_eq!(
        UsernameTemplate::parse("{{#if}}").unwrap_err().kind(),
        ErrorKind::InvalidTemplate
    );
    assert!(UsernameTemplate::parse("{{random 0}}").is_err());
    assert!(UsernameTemplate::parse("{{random 100000}}").is_err());
}

#[test]
fn missing_identity_is_input_error() {
    let t = UsernameTemplate::parse("{{identity.name}}").unwrap();
    assert_eq!(
        t.render(&vars(None)).unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
}

#[test]
fn no_html_escaping() {
    let t = UsernameTemplate::parse("{{identity.name}}").unwrap();
    assert_eq!(t.render(&vars(Some("a&b<c>"))).unwrap(), "a&b<c>");
}

#[test]
fn statements_escape_hostile_passwords() {
    let t = StatementTemplate::parse(r#"{"U":"{{username}}","P":["{{password}}"]}"#).unwrap();
    for hostile in [
        r#"","AccessString":"on ~* +@all"#,
        "a\\",
        "line\nbreak",
        "\u{0}\u{1f}",
        "ünï",
    ] {
        let pw = SecretString::from(hostile);
        let v = t
            .render(&StatementVars {
                username: "u",
                password: Some(&pw),
                expiration: None,
            })
            .unwrap();
        assert_eq!(v.expose_json()["P"][0], hostile);
        assert_eq!(v.expose_json().as_object().unwrap().len(), 2);
        assert!(!format!("{v:?}").contains(hostile));
    }
}

#[test]
fn statement_must_be_json_object() {
    assert!(StatementTemplate::parse("not json").is_err());
    assert!(StatementTemplate::parse("[1]").is_err());
    assert!(StatementTemplate::parse(r#"{"a": {{password}} }"#).is_err());
}

#[test]
fn helper_results_are_json_escaped_in_statements() {
    // Helpers used to write their output unescaped; a password with a quote could then add
    // keys to the statement.
    let hostile = r#"x","AccessString":"on ~* +@all"#;
    let pw = SecretString::from(hostile);
    for src in [
        r#"{"P":"{{lowercase password}}"}"#,
        r#"{"P":"{{uppercase password}}"}"#,
        r#"{"P":"{{truncate password 100}}"}"#,
        r#"{"P":"{{replace password 'q' 'r'}}"}"#,
        r#"{"P":"{{lowercase (truncate password 100)}}"}"#,
    ] {
        let t = StatementTemplate::parse(src).unwrap();
        let v = t
            .render(&StatementVars {
                username: "u",
                password: Some(&pw),
                expiration: None,
            })
            .unwrap();
        let obj = v.expose_json().as_object().unwrap();
        assert_eq!(obj.len(), 1, "{src}");
        assert!(
            obj["P"]
                .as_str()
                .unwrap()
                .to_lowercase()
                .contains("accessstring"),
            "{src}"
        );
    }
}

#[test]
fn raw_output_is_refused_in_statements_only() {
    let e = StatementTemplate::parse(r#"{"P":"{{{password}}}"}"#).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidTemplate);
    assert!(e.to_string().contains("escaping"), "{e}");
    let t = UsernameTemplate::parse("{{{identity.name}}}").unwrap();
    assert_eq!(t.render(&vars(Some("a&b"))).unwrap(), "a&b");
}

#[test]
fn blocks_partials_and_builtins_are_refused() {
    for src in [
        "{{#if identity.name}}x{{/if}}",
        "{{#each dynamicSecret}}x{{/each}}",
        "{{> other}}",
        "{{log identity.name}}",
        "{{lookup dynamicSecret 'name'}}",
        "{{eq 1 1}}",
        "{{@root.identity.name}}",
        "{{../identity.name}}",
        "{{random}}",
        "{{random 8 9}}",
        "{{random n=8}}",
        "{{random identity.name}}",
        "{{truncate identity.name identity.name}}",
        "{{replace identity.name '' 'x'}}",
        "{{replace identity.name identity.name 'x'}}",
        "{{uppercase true}}",
        "{{uppercase (identity.name)}}",
        "{{password}}",
        "{{username}}",
    ] {
        let e = UsernameTemplate::parse(src).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidTemplate, "{src}");
    }
    for src in [
        r#"{"a":"{{identity.name}}"}"#,
        r#"{"a":"{{#if password}}x{{/if}}"}"#,
    ] {
        assert!(StatementTemplate::parse(src).is_err(), "{src}");
    }
}

#[test]
fn subexpressions_and_spellings() {
    let t = UsernameTemplate::parse("{{truncate (lowercase identity.name) 4}}").unwrap();
    assert_eq!(t.render(&vars(Some("TESTuser"))).unwrap(), "test");
    for src in [
        "{{random-8}}",
        "{{ random-8 }}",
        "{{~random-8~}}",
        "{{random 8}}",
        "{{random '8'}}",
    ] {
        let t = UsernameTemplate::parse(src).unwrap();
        let s = t.render(&vars(None)).unwrap();
        assert_eq!(s.len(), 8, "{src}");
        assert!(s.bytes().all(|b| RANDOM_CHARS.contains(&b)), "{src}");
    }
    // Not the random-N spelling: left to the parser, which refuses it.
    assert!(UsernameTemplate::parse("{{random-x}}").is_err());
    assert!(UsernameTemplate::parse("{{random-0}}").is_err());
    assert!(UsernameTemplate::parse("{{random-257}}").is_err());
}

#[test]
fn prefix_detection_reads_the_template() {
    for (src, keeps) in [
        ("{{randomUsername}}", true),
        ("{{ randomUsername }}", true),
        ("{{!-- note --}}{{randomUsername}}-{{identity.name}}", true),
        ("x{{randomUsername}}", false),
        ("{{identity.name}}{{randomUsername}}", false),
    ] {
        assert_eq!(
            UsernameTemplate::parse(src).unwrap().keeps_prefix(),
            keeps,
            "{src}"
        );
    }
}

#[test]
fn deep_nesting_is_refused_without_recursing() {
    let deep = format!(
        "{{{{uppercase {}identity.name{}}}}}",
        "(lowercase ".repeat(5000),
        ")".repeat(5000)
    );
    assert!(UsernameTemplate::parse(&deep).is_err());
    for opener in ["{{#if a}}", "{{ ~ #if a}}", "{{~\n#if a}}"] {
        assert!(UsernameTemplate::parse(&opener.repeat(5000)).is_err());
    }
    for deep in [
        format!("{{{{uppercase {}}}}}", "[".repeat(8000)),
        format!("{{{{uppercase {}}}}}", "{\"a\":".repeat(4000)),
    ] {
        assert!(UsernameTemplate::parse(&deep).is_err());
        assert!(StatementTemplate::parse(&deep).is_err());
    }
}

#[test]
fn nesting_at_the_limit_parses_without_overflow() {
    // Runs on a test thread (2 MiB stack, debug build): the bound must leave headroom.
    let n = MAX_NESTING - 2;
    for src in [
        format!("{{{{uppercase {}1{}}}}}", "[".repeat(n), "]".repeat(n)),
        format!(
            "{{{{uppercase {}identity.name{}}}}}",
            "(lowercase ".repeat(n),
            ")".repeat(n)
        ),
    ] {
        let _ = UsernameTemplate::parse(&src);
    }
}

#[test]
fn errors_never_contain_the_password() {
    let marker = "PW-MARKER-7f3a";
    let pw = SecretString::from(format!("{marker}\\\\"));
    let render = |src: &str, password: Option<&SecretString>| {
        StatementTemplate::parse(src).and_then(|t| {
            t.render(&StatementVars {
                username: "u",
                password,
                expiration: None,
            })
        })
    };
    // A statement that is JSON only when the value is quoted by the template.
    let cases: Vec<Result<RenderedStatement>> = vec![
        render(r#"{"a": {{password}} }"#, Some(&pw)),
        render(r#"{"a":"{{password}}"}"#, None),
        render(r#"{"a":"{{password}}", "b": {{expiration}} }"#, Some(&pw)),
    ];
    for r in cases {
        let e = r.unwrap_err();
        assert!(!e.to_string().contains(marker), "{e}");
        assert!(!format!("{e:?}").contains(marker), "{e:?}");
    }
    let t = StatementTemplate::parse(r#"{"a":"{{password}}"}"#).unwrap();
    let v = t
        .render(&StatementVars {
            username: "u",
            password: Some(&pw),
            expiration: None,
        })
        .unwrap();
    let e = v.check_shape(&["b"], &["b"]).unwrap_err();
    assert!(!e.to_string().contains(marker), "{e}");
    assert!(!format!("{v:?}").contains(marker));
}

#[test]
fn statement_shape_checks() {
    let t = StatementTemplate::parse(
        r#"{"UserName":"{{username}}","AuthenticationMode":{"Type":"password","Passwords":["{{password}}"]},"Extra":null}"#,
    )
    .unwrap();
    t.check_shape(&["UserName", "AuthenticationMode.Type"], &[])
        .unwrap();
    let e = t.check_shape(&["Extra"], &[]).unwrap_err();
    assert!(e.to_string().contains("Extra"), "{e}");
    let e = t
        .check_shape(&["UserName"], &["UserName", "AuthenticationMode"])
        .unwrap_err();
    assert!(e.to_string().contains("Extra"), "{e}");
    let e = t
        .check_shape(&["AuthenticationMode.Passwords.0"], &[])
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidTemplate);
}
