//! Fixtures shared by the emulator tests: a user group with a locked `default` user, attached
//! to a serverless cache whose Redis mirror lets credentials really `AUTH`.

#![allow(dead_code)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_sdk_elasticache::Client;
use leasehold_core::template::random_lowercase;
use leasehold_core::Credentials;
use leasehold_elasticache::{ElastiCacheConfig, ElastiCacheProvider, Engine, Target};
use leasehold_testkit::servers::{
    skip_or_panic, unique_name, AwsEmulator, MirrorKind, TransitionKind,
};
use leasehold_testkit::CredentialProbe;
use secrecy::ExposeSecret;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

pub const PATIENCE: Duration = Duration::from_secs(30);

/// The emulator, when it has Redis mirrors (else the test is skipped, or fails when servers
/// are required).
pub async fn emulator(test: &str) -> Option<Arc<AwsEmulator>> {
    let aws = AwsEmulator::shared(test).await?;
    if !aws.has_mirror().await {
        skip_or_panic(test, "the emulator found no redis-server for cache mirrors");
        return None;
    }
    Some(aws)
}

/// Sends `AUTH user password` and `PING` on one connection and returns both replies. A failed
/// AUTH leaves the connection as `default`, so the AUTH reply itself is what counts.
pub async fn auth_then_ping(port: u16, user: &str, password: &str) -> (String, String) {
    let stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let (read, mut write) = stream.into_split();
    let mut cmd = Vec::new();
    for args in [vec!["AUTH", user, password], vec!["PING"]] {
        cmd.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
        for a in args {
            cmd.extend_from_slice(format!("${}\r\n{a}\r\n", a.len()).as_bytes());
        }
    }
    write.write_all(&cmd).await.unwrap();
    let mut lines = BufReader::new(read).lines();
    let first = lines.next_line().await.unwrap().unwrap_or_default();
    let second = lines.next_line().await.unwrap().unwrap_or_default();
    (first, second)
}

/// `PING` without `AUTH` (as the `default` user); returns the reply.
pub async fn ping_without_auth(port: u16) -> String {
    let stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let (read, mut write) = stream.into_split();
    write.write_all(b"*1\r\n$4\r\nPING\r\n").await.unwrap();
    let mut lines = BufReader::new(read).lines();
    lines.next_line().await.unwrap().unwrap_or_default()
}

/// Whether `user` / `password` authenticate on the mirror at `port` right now.
pub async fn authenticates(port: u16, user: &str, password: &str) -> bool {
    let (auth, ping) = auth_then_ping(port, user, password).await;
    auth == "+OK" && ping == "+PONG"
}

/// Polls `check` every 50 ms until it holds; panics after [`PATIENCE`].
pub async fn wait_for<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + PATIENCE;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub async fn user_status(ec: &Client, id: &str) -> Option<String> {
    match ec.describe_users().user_id(id).send().await {
        Ok(out) => out
            .users()
            .first()
            .map(|u| u.status().unwrap_or_default().to_string()),
        Err(e) if leasehold_aws::error_code(&e) == Some("UserNotFound") => None,
        Err(e) => panic!("DescribeUsers: {e:?}"),
    }
}

pub async fn group_members(ec: &Client, group: &str) -> Vec<String> {
    let out = ec
        .describe_user_groups()
        .user_group_id(group)
        .send()
        .await
        .unwrap();
    out.user_groups()[0].user_ids().to_vec()
}

pub async fn group_status(ec: &Client, group: &str) -> String {
    let out = ec
        .describe_user_groups()
        .user_group_id(group)
        .send()
        .await
        .unwrap();
    out.user_groups()[0]
        .status()
        .unwrap_or_default()
        .to_string()
}

/// A serverless cache with its own user group, whose `default` member has a password and is
/// switched off (so only leased users get in).
pub struct Cache {
    pub aws: Arc<AwsEmulator>,
    pub ec: Client,
    pub group: String,
    pub cache: String,
    pub default_user: String,
    pub port: u16,
}

impl Cache {
    /// Builds the fixture. `window` is how long the group stays `creating` / `modifying`.
    pub async fn new(aws: Arc<AwsEmulator>, name: &str, window: Duration) -> Cache {
        Self::with_default(aws, name, window, false).await
    }

    /// Like [`Cache::new`], but with the emulator's built-in open `default` user (no password,
    /// `on ~* +@all`) when `open` is true.
    pub async fn with_default(
        aws: Arc<AwsEmulator>,
        name: &str,
        window: Duration,
        open: bool,
    ) -> Cache {
        let ec = Client::new(&aws.sdk_config().await);
        let group = unique_name(&format!("{name}-g"));
        let cache = unique_name(&format!("{name}-c"));
        aws.set_modifying(TransitionKind::UserGroup, Some(&group), window)
            .await;
        let default_user = if open {
            "default".to_string()
        } else {
            let id = unique_name(&format!("{name}-def"));
            ec.create_user()
                .user_id(&id)
                .user_name("default")
                .engine("redis")
                .passwords(format!("Dflt-{}", random_lowercase(24)))
                .access_string("off -@all")
                .send()
                .await
                .expect("CreateUser default");
            wait_for("default user active", || async {
                user_status(&ec, &id).await.as_deref() == Some("active")
            })
            .await;
            id
        };
        ec.create_user_group()
            .user_group_id(&group)
            .engine("redis")
            .user_ids(&default_user)
            .send()
            .await
            .expect("CreateUserGroup");
        wait_for("group active", || async {
            group_status(&ec, &group).await == "active"
        })
        .await;
        ec.create_serverless_cache()
            .serverless_cache_name(&cache)
            .engine("redis")
            .user_group_id(&group)
            .send()
            .await
            .expect("CreateServerlessCache");
        let mirror = aws
            .mirror(MirrorKind::ServerlessCache, &cache)
            .await
            .expect("the serverless cache has a mirror");
        Cache {
            aws,
            ec,
            group,
            cache,
            default_user,
            port: mirror.port,
        }
    }

    /// A provider configuration for this cache, with the `AUTH` readiness check on the mirror.
    pub fn config(&self) -> ElastiCacheConfig {
        ElastiCacheConfig::new(Target::ServerlessCache(self.cache.clone()), &self.group)
            .engine(Engine::Redis)
            .readiness_endpoint(format!("redis://127.0.0.1:{}", self.port), None)
            .ready_timeout(Duration::from_secs(30))
    }

    pub async fn provider(&self) -> ElastiCacheProvider {
        self.provider_with(self.config()).await
    }

    pub async fn provider_with(&self, config: ElastiCacheConfig) -> ElastiCacheProvider {
        ElastiCacheProvider::from_sdk_config(config, &self.aws.sdk_config().await)
            .expect("provider")
    }

    /// Removes the cache, the group and the default user (best effort; names are unique).
    pub async fn cleanup(self) {
        let _ = self
            .ec
            .delete_serverless_cache()
            .serverless_cache_name(&self.cache)
            .send()
            .await;
        let ec = &self.ec;
        let cache = &self.cache;
        wait_for("cache gone", || async {
            ec.describe_serverless_caches()
                .serverless_cache_name(cache)
                .send()
                .await
                .is_err()
        })
        .await;
        let group = &self.group;
        wait_for("group deletable", || async {
            match ec.delete_user_group().user_group_id(group).send().await {
                Ok(_) => true,
                Err(e) => leasehold_aws::error_code(&e) == Some("UserGroupNotFound"),
            }
        })
        .await;
        if self.default_user != "default" {
            let id = &self.default_user;
            wait_for("default user deletable", || async {
                match ec.delete_user().user_id(id).send().await {
                    Ok(_) => true,
                    Err(e) => leasehold_aws::error_code(&e) == Some("UserNotFound"),
                }
            })
            .await;
        }
    }
}

/// Checks credentials with one `AUTH` on a mirror: create waits for the `AUTH` check and
/// revoke until the user is gone, so the first answer is the settled one.
pub struct MirrorProbe {
    pub port: u16,
}

#[async_trait]
impl CredentialProbe for MirrorProbe {
    async fn authenticates(&self, credentials: &Credentials) -> bool {
        let Credentials::UsernamePassword { username, password } = credentials else {
            return false;
        };
        authenticates(self.port, username, password.expose_secret()).await
    }
}
