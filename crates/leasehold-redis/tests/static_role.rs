//! The static-role target against a real TLS `redis-server`: a rotation dialed through
//! leasehold's own connector (the provider's), with the CA from the config, and no TLS crypto
//! provider installed process-wide. The user is set up with `redis-cli`, so that nothing in this
//! test binary builds a rustls configuration the default way.
#![cfg(feature = "tls")]

use std::path::Path;

use leasehold_core::static_role::StaticRoleTarget;
use leasehold_core::ErrorKind;
use leasehold_redis::{RedisConfig, RedisUserTarget};
use leasehold_testkit::servers::{RedisOptions, RedisServer};
use secrecy::SecretString;

const USER: &str = "app-writer";
const FIRST: &str = "First-static-password-0123456789";
const SECOND: &str = "Second-static-password-0123456789";

fn redis_cli(server: &RedisServer, ca: &Path, args: &[&str]) -> String {
    let out = std::process::Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &server.port().to_string(), "--tls"])
        .arg("--cacert")
        .arg(ca)
        .args(args)
        .output()
        .expect("redis-cli runs");
    assert!(out.status.success(), "redis-cli {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[tokio::test]
async fn rotates_on_a_tls_node_with_the_configured_ca_and_installs_no_crypto_provider() {
    let opts = RedisOptions {
        tls: true,
        ..Default::default()
    };
    let Some(server) = RedisServer::start_with("static_role_tls", opts).await else {
        return;
    };
    let ca = server
        .ca_cert_path()
        .expect("a TLS server has a CA")
        .to_path_buf();
    let set = [
        "ACL",
        "SETUSER",
        USER,
        "on",
        &format!(">{FIRST}"),
        "~*",
        "+@all",
    ];
    assert_eq!(redis_cli(&server, &ca, &set), "OK");

    let target =
        RedisUserTarget::from_config(USER, &RedisConfig::new(server.url()).ca_cert(&ca)).unwrap();
    let (first, second) = (SecretString::from(FIRST), SecretString::from(SECOND));
    target.validate().await.expect("validate over TLS");
    target.set_passwords(Some(&first), &second).await.unwrap();
    target
        .test(USER, &second)
        .await
        .expect("the new password works");
    target
        .test(USER, &first)
        .await
        .expect("the old one too, in the grace");
    target.drop_password(&first, &second).await.unwrap();
    target.test(USER, &second).await.unwrap();
    let e = target.test(USER, &first).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{e}");
    assert!(
        !format!("{e} {e:?} {target:?}").contains("static-password"),
        "{e}"
    );
    assert!(
        rustls::crypto::CryptoProvider::get_default().is_none(),
        "a rotation over TLS installs no process-wide crypto provider"
    );

    // Without the CA the node's certificate is not trusted: a typed error, not a panic.
    let untrusted = RedisUserTarget::new(USER, [server.url()]).unwrap();
    let e = untrusted.validate().await.unwrap_err();
    assert!(
        matches!(
            e.kind(),
            ErrorKind::InvalidConfig | ErrorKind::ProviderUnavailable
        ),
        "{e}"
    );
}

#[test]
fn bad_node_lists_are_refused_before_any_connection() {
    for (nodes, key) in [
        (vec![], "urls"),
        (vec!["http://cache:6379"], "urls[0]"),
        (vec!["redis://a:6379", "redis://a:6379"], "urls[1]"),
        (vec!["sentinel://10.0.0.1:26379/orders"], "urls[0]"),
    ] {
        let e = RedisUserTarget::new(USER, nodes.clone()).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidConfig, "{nodes:?}: {e}");
        assert!(e.message().starts_with(key), "{nodes:?}: {e}");
    }
    let e = RedisUserTarget::new("app writer", ["redis://a:6379"]).unwrap_err();
    assert!(e.message().starts_with("username:"), "{e}");
}
