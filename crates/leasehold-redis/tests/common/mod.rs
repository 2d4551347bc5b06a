//! Helpers shared by the integration tests: raw connections and AUTH checks.
#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use leasehold_core::{
    async_trait, Credentials, DynamicSecret, DynamicSecretProvider, LeaseManager, MemoryStore,
};
use leasehold_testkit::servers::RedisServer;
use redis::aio::MultiplexedConnection;
use redis::{Client, IntoConnectionInfo, RedisConnectionInfo};
use secrecy::ExposeSecret;

/// A client for `server`, as `user`/`password` or as the `default` user.
pub fn client(server: &RedisServer, auth: Option<(&str, &str)>) -> Client {
    let mut settings = RedisConnectionInfo::default().set_skip_set_lib_name();
    if let Some((u, p)) = auth {
        settings = settings.set_username(u).set_password(p);
    }
    let info = server
        .url()
        .as_str()
        .into_connection_info()
        .unwrap()
        .set_redis_settings(settings);
    match server.ca_cert_path() {
        Some(ca) => Client::build_with_tls(
            info,
            redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(std::fs::read(ca).unwrap()),
            },
        )
        .unwrap(),
        None => Client::open(info).unwrap(),
    }
}

/// A connection as the `default` (admin) user.
pub async fn admin(server: &RedisServer) -> MultiplexedConnection {
    client(server, None)
        .get_multiplexed_async_connection()
        .await
        .expect("admin connection")
}

/// A connection as the issued user; `None` when AUTH is refused.
pub async fn connect_as(
    server: &RedisServer,
    creds: &Credentials,
) -> Option<MultiplexedConnection> {
    let Credentials::UsernamePassword { username, password } = creds else {
        panic!("expected a username/password credential");
    };
    client(server, Some((username, password.expose_secret())))
        .get_multiplexed_async_connection()
        .await
        .ok()
}

/// Whether `creds` AUTH on `server`.
pub async fn auths(server: &RedisServer, creds: &Credentials) -> bool {
    connect_as(server, creds).await.is_some()
}

/// The ACL users of `server`.
pub async fn acl_users(server: &RedisServer) -> Vec<String> {
    let mut c = admin(server).await;
    redis::cmd("ACL")
        .arg("USERS")
        .query_async(&mut c)
        .await
        .unwrap()
}

/// The users of `server` whose name starts with `lh-` (what leasehold made).
pub async fn leasehold_users(server: &RedisServer) -> Vec<String> {
    acl_users(server)
        .await
        .into_iter()
        .filter(|u| u.starts_with("lh-"))
        .collect()
}

/// Runs `ACL SETUSER` with `args` on `server` as the admin.
pub async fn setuser(server: &RedisServer, args: &[&str]) {
    let mut c = admin(server).await;
    let _: () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg(args)
        .query_async(&mut c)
        .await
        .unwrap();
}

/// A probe that AUTHs on every server.
pub struct AuthProbe<'a>(pub Vec<&'a RedisServer>);

#[async_trait]
impl leasehold_testkit::CredentialProbe for AuthProbe<'_> {
    async fn authenticates(&self, credentials: &Credentials) -> bool {
        for s in &self.0 {
            if !auths(s, credentials).await {
                return false;
            }
        }
        true
    }
}

/// Servers owned by a conformance fixture: its probe AUTHs on every one, and [`Servers::clean`]
/// checks that nothing leasehold made is left on them.
#[derive(Clone)]
pub struct Servers(pub Arc<Vec<RedisServer>>);

impl Servers {
    pub fn new(servers: Vec<RedisServer>) -> Self {
        Servers(Arc::new(servers))
    }

    /// A conformance fixture of `provider` on these servers: AUTH on every server is the probe,
    /// and after each test no `lh-` user is left on any of them.
    pub fn fixture(
        &self,
        provider: impl DynamicSecretProvider,
    ) -> leasehold_testkit::conformance::ProviderFixture {
        let after = self.clone();
        leasehold_testkit::conformance::Fixture::provider(provider)
            .with_probe(self.clone())
            .after(move || async move {
                for s in after.0.iter() {
                    assert_eq!(
                        leasehold_users(s).await,
                        Vec::<String>::new(),
                        "users left on {}",
                        s.url()
                    );
                }
            })
    }
}

#[async_trait]
impl leasehold_testkit::CredentialProbe for Servers {
    async fn authenticates(&self, credentials: &Credentials) -> bool {
        AuthProbe(self.0.iter().collect())
            .authenticates(credentials)
            .await
    }
}

/// A manager on a `MemoryStore` with one secret `name` backed by `provider`.
pub async fn manager(
    name: &str,
    provider: Arc<dyn DynamicSecretProvider>,
    default_ttl: Duration,
    max_ttl: Duration,
) -> LeaseManager {
    let secret = DynamicSecret::builder(name, provider)
        .default_ttl(default_ttl)
        .max_ttl(max_ttl)
        .build()
        .unwrap();
    LeaseManager::builder(Arc::new(MemoryStore::new()))
        .secret(secret)
        .build()
        .await
        .expect("manager builds (validate passes)")
}

/// Polls `f` until it is true, at most `tries` × 50 ms.
pub async fn eventually<F, Fut>(tries: u32, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..tries {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// Reads a text file (an ACL file) or the empty string.
pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}
