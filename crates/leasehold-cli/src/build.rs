//! From checked configuration to a store, providers, secrets and a [`LeaseManager`].
//!
//! Wiring a new provider type: a variant in [`ProviderConfig`],
//! its keys in `config.rs`, and one arm in [`provider`].

use std::sync::Arc;

use leasehold_aws::{AwsConfig, AwsCredentials};
use leasehold_core::{
    DynamicSecret, DynamicSecretProvider, Error, LeaseManager, LeaseStore, ManagerConfig,
    MemoryStore, Result, RetryPolicy,
};
use leasehold_iam::{
    AssumedRole, FederationToken, IamUserConfig, IamUserProvider, StsConfig, StsCredentialType,
    StsProvider,
};
use leasehold_store_sql::{PostgresStore, SqliteStore};

use std::time::Duration;

use leasehold_core::StatementTemplate;
use leasehold_elasticache::{ElastiCacheConfig, ElastiCacheProvider, Engine, Target};
use leasehold_memorydb::{MemoryDbConfig, MemoryDbProvider};
use leasehold_redis::{RedisAclProvider, RedisConfig};

use crate::config::{
    AwsSection, Config, DurationText, ElastiCacheSection, IamSection, MemoryDbSection,
    ProviderConfig, RedisSection, SecretConfig,
};

/// Opens the store named by `store.url`.
pub async fn store(url: &str) -> Result<Arc<dyn LeaseStore>> {
    if url == "memory" {
        return Ok(Arc::new(MemoryStore::new()));
    }
    if url.starts_with("sqlite:") {
        return Ok(Arc::new(SqliteStore::open(url).await?));
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok(Arc::new(PostgresStore::connect(url).await?));
    }
    Err(Error::invalid_config(
        "store.url: must be \"memory\", a sqlite:// URL or a postgres:// URL",
    ))
}

/// The AWS settings of a secret.
pub(crate) fn aws_config(a: &AwsSection) -> Result<AwsConfig> {
    let mut cfg = AwsConfig::new();
    if let Some(r) = &a.region {
        cfg = cfg.region(r);
    }
    if let Some(u) = &a.endpoint_url {
        cfg = cfg.endpoint_url(u);
    }
    if let Some(n) = a.max_attempts {
        cfg = cfg.max_attempts(n);
    }
    let base = match (&a.access_key_id, &a.secret_access_key) {
        (Some(id), Some(key)) => AwsCredentials::Static {
            access_key_id: id.clone(),
            secret_access_key: key.clone(),
            session_token: a.session_token.clone(),
        },
        (None, None) if a.session_token.is_none() => AwsCredentials::DefaultChain,
        (None, _) => {
            return Err(Error::invalid_config(
                "access_key_id: missing (secret_access_key or session_token is set without it)",
            ))
        }
        (Some(_), None) => {
            return Err(Error::invalid_config(
                "secret_access_key: missing (access_key_id is set without it)",
            ))
        }
    };
    let creds = match &a.assume_role_arn {
        Some(role_arn) => AwsCredentials::AssumeRole {
            role_arn: role_arn.clone(),
            external_id: a.assume_role_external_id.clone(),
            session_name: None,
            source: Box::new(base),
        },
        None if a.assume_role_external_id.is_some() => {
            return Err(Error::invalid_config(
                "assume_role_external_id: set without assume_role_arn",
            ))
        }
        None => base,
    };
    let cfg = cfg.credentials(creds);
    cfg.validate()?;
    Ok(cfg)
}

/// Refuses keys that the credential type does not use, naming the first one.
fn refuse(credential_type: &str, set: &[(&str, bool)]) -> Result<()> {
    match set.iter().find(|(_, is_set)| *is_set) {
        Some((key, _)) => Err(Error::invalid_config(format!(
            "{key}: not used by credential_type {credential_type:?}"
        ))),
        None => Ok(()),
    }
}

async fn iam_provider(
    iam: &IamSection,
    aws: &AwsSection,
) -> Result<Arc<dyn DynamicSecretProvider>> {
    let aws = aws_config(aws)?;
    let ready = iam
        .ready_timeout
        .as_ref()
        .map(|d| d.parse("ready_timeout"))
        .transpose()
        .map_err(Error::invalid_config)?;
    let user_keys = [
        ("path", iam.path.is_some()),
        ("permissions_boundary", iam.permissions_boundary.is_some()),
        ("groups", !iam.groups.is_empty()),
        ("tags", !iam.tags.is_empty()),
        ("inline_policy_name", iam.inline_policy_name.is_some()),
        ("consistency_window", iam.consistency_window.is_some()),
        (
            "sweep_service_specific_credentials",
            iam.sweep_service_specific_credentials.is_some(),
        ),
    ];
    let role_keys = [
        ("role_arn", iam.role_arn.is_some()),
        ("external_id", iam.external_id.is_some()),
        ("max_session_duration", iam.max_session_duration.is_some()),
    ];
    let ct = iam.credential_type.as_str();
    match ct {
        "iam_user" => {
            refuse(ct, &role_keys)?;
            let mut c = IamUserConfig::new().aws(aws.clone());
            if let Some(p) = &iam.path {
                c = c.path(p);
            }
            if let Some(b) = &iam.permissions_boundary {
                c = c.permissions_boundary(b);
            }
            for (k, v) in &iam.tags {
                c = c.tag(k, v);
            }
            for g in &iam.groups {
                c = c.group(g);
            }
            for a in &iam.policy_arns {
                c = c.policy_arn(a);
            }
            if let Some(doc) = &iam.policy_document {
                c = c.inline_policy(doc);
            }
            if let Some(n) = &iam.inline_policy_name {
                c = c.inline_policy_name(n);
            }
            if let Some(d) = ready {
                c = c.ready_timeout(d);
            }
            if let Some(w) = &iam.consistency_window {
                c = c.consistency_window(
                    w.parse("consistency_window")
                        .map_err(Error::invalid_config)?,
                );
            }
            if let Some(yes) = iam.sweep_service_specific_credentials {
                c = c.sweep_service_specific_credentials(yes);
            }
            c.validate()
                .map_err(|e| e.with_context("credential_type", ct))?;
            Ok(Arc::new(IamUserProvider::new(c).await?))
        }
        "assumed_role" => {
            refuse(ct, &user_keys)?;
            let arn = iam.role_arn.as_ref().ok_or_else(|| {
                Error::invalid_config("role_arn: required by credential_type \"assumed_role\"")
            })?;
            let mut r = AssumedRole::new(arn);
            if let Some(doc) = &iam.policy_document {
                r = r.session_policy(doc);
            }
            for a in &iam.policy_arns {
                r = r.policy_arn(a);
            }
            if let Some(id) = &iam.external_id {
                r = r.external_id(id);
            }
            if let Some(d) = &iam.max_session_duration {
                r = r.max_session_duration(
                    d.parse("max_session_duration")
                        .map_err(Error::invalid_config)?,
                );
            }
            let c = StsConfig::new(StsCredentialType::AssumedRole(r)).aws(aws);
            let c = match ready {
                Some(d) => c.ready_timeout(d),
                None => c,
            };
            c.validate()?;
            Ok(Arc::new(StsProvider::new(c).await?))
        }
        "federation_token" => {
            refuse(ct, &user_keys)?;
            refuse(ct, &role_keys)?;
            let mut t = FederationToken::default();
            t.policy = iam.policy_document.clone();
            for a in &iam.policy_arns {
                t = t.policy_arn(a);
            }
            let c = StsConfig::new(StsCredentialType::FederationToken(t)).aws(aws);
            let c = match ready {
                Some(d) => c.ready_timeout(d),
                None => c,
            };
            c.validate()?;
            Ok(Arc::new(StsProvider::new(c).await?))
        }
        "session_token" => {
            refuse(ct, &user_keys)?;
            refuse(ct, &role_keys)?;
            refuse(
                ct,
                &[
                    ("policy_document", iam.policy_document.is_some()),
                    ("policy_arns", !iam.policy_arns.is_empty()),
                ],
            )?;
            let c = StsConfig::new(StsCredentialType::SessionToken).aws(aws);
            let c = match ready {
                Some(d) => c.ready_timeout(d),
                None => c,
            };
            c.validate()?;
            Ok(Arc::new(StsProvider::new(c).await?))
        }
        other => Err(Error::invalid_config(format!(
            "credential_type: unknown credential type {other:?}; expected one of iam_user, assumed_role, federation_token, session_token"
        ))),
    }
}

fn duration(field: &'static str, d: &Option<DurationText>) -> Result<Option<Duration>> {
    d.as_ref()
        .map(|d| d.parse(field))
        .transpose()
        .map_err(Error::invalid_config)
}

fn statement(field: &'static str, s: &Option<String>) -> Result<Option<StatementTemplate>> {
    s.as_deref()
        .map(|s| {
            StatementTemplate::parse(s).map_err(|e| {
                let msg = e.message().to_string();
                Error::new(e.kind(), format!("{field}: {msg}"))
            })
        })
        .transpose()
}

async fn elasticache_provider(
    ec: &ElastiCacheSection,
    aws: &AwsSection,
) -> Result<Arc<dyn DynamicSecretProvider>> {
    let target = match (&ec.replication_group_id, &ec.serverless_cache_name) {
        (Some(id), None) => Target::ReplicationGroup(id.clone()),
        (None, Some(name)) => Target::ServerlessCache(name.clone()),
        (Some(_), Some(_)) => {
            return Err(Error::invalid_config(
                "serverless_cache_name: set either replication_group_id or serverless_cache_name, not both",
            ))
        }
        (None, None) => {
            return Err(Error::invalid_config(
                "replication_group_id: missing (or set serverless_cache_name)",
            ))
        }
    };
    let mut c = ElastiCacheConfig::new(target, &ec.user_group_id).aws(aws_config(aws)?);
    c = match ec.engine.as_deref() {
        None | Some("redis") => c.engine(Engine::Redis),
        Some("valkey") => c.engine(Engine::Valkey),
        Some(other) => {
            return Err(Error::invalid_config(format!(
                "engine: {other:?} is not one of \"redis\", \"valkey\""
            )))
        }
    };
    if let Some(t) = statement("creation_statement", &ec.creation_statement)? {
        c = c.creation_statement(t);
    }
    if let Some(t) = statement("revocation_statement", &ec.revocation_statement)? {
        c = c.revocation_statement(t);
    }
    for (k, v) in &ec.tags {
        c = c.tag(k, v);
    }
    if let Some(url) = &ec.readiness_endpoint {
        c = c.readiness_endpoint(url, ec.readiness_ca_pem.clone());
    } else if ec.readiness_ca_pem.is_some() {
        return Err(Error::invalid_config(
            "readiness_ca_pem: set without readiness_endpoint",
        ));
    }
    if let Some(d) = duration("ready_timeout", &ec.ready_timeout)? {
        c = c.ready_timeout(d);
    }
    if let Some(yes) = ec.allow_open_default_user {
        c = c.allow_open_default_user(yes);
    }
    c.validate()?;
    Ok(Arc::new(ElastiCacheProvider::new(c).await?))
}

async fn memorydb_provider(
    db: &MemoryDbSection,
    aws: &AwsSection,
) -> Result<Arc<dyn DynamicSecretProvider>> {
    let mut c = MemoryDbConfig::new(&db.cluster_name).aws(aws_config(aws)?);
    if let Some(acl) = &db.acl_name {
        c = c.acl_name(acl);
    }
    if let Some(t) = statement("creation_statement", &db.creation_statement)? {
        c = c.creation_statement(t);
    }
    if let Some(t) = statement("revocation_statement", &db.revocation_statement)? {
        c = c.revocation_statement(t);
    }
    for (k, v) in &db.tags {
        c = c.tag(k, v);
    }
    if let Some(url) = &db.readiness_endpoint {
        c = c.readiness_endpoint(url, db.readiness_ca_pem.clone());
    } else if db.readiness_ca_pem.is_some() {
        return Err(Error::invalid_config(
            "readiness_ca_pem: set without readiness_endpoint",
        ));
    }
    if let Some(d) = duration("ready_timeout", &db.ready_timeout)? {
        c = c.ready_timeout(d);
    }
    if let Some(d) = duration("revoke_timeout", &db.revoke_timeout)? {
        c = c.revoke_timeout(d);
    }
    c.validate()?;
    Ok(Arc::new(MemoryDbProvider::new(c).await?))
}

fn redis_provider(r: &RedisSection) -> Result<Arc<dyn DynamicSecretProvider>> {
    let Some((first, rest)) = r.urls.split_first() else {
        return Err(Error::invalid_config("urls: list at least one node"));
    };
    let mut c = RedisConfig::new(first);
    for u in rest {
        c = c.node(u);
    }
    if let Some(rules) = &r.acl_rules {
        c = c.acl_rules(rules);
    }
    match (&r.username, &r.password) {
        (Some(u), Some(p)) => {
            c = c.admin_password(p.clone());
            c.username = Some(u.clone());
        }
        (Some(u), None) => c.username = Some(u.clone()),
        (None, Some(p)) => c = c.admin_password(p.clone()),
        (None, None) => {}
    }
    if let Some(ca) = &r.ca_cert {
        c = c.ca_cert(ca);
    }
    match (&r.client_cert, &r.client_key) {
        (Some(cert), Some(key)) => c = c.client_cert(cert, key),
        (None, None) => {}
        (Some(_), None) => {
            return Err(Error::invalid_config(
                "client_key: missing (client_cert is set without it)",
            ))
        }
        (None, Some(_)) => {
            return Err(Error::invalid_config(
                "client_cert: missing (client_key is set without it)",
            ))
        }
    }
    if let Some(yes) = r.acl_save {
        c = c.acl_save(yes);
    }
    if let Some(d) = duration("connect_timeout", &r.connect_timeout)? {
        c = c.connect_timeout(d);
    }
    if let Some(d) = duration("command_timeout", &r.command_timeout)? {
        c = c.command_timeout(d);
    }
    if let Some(n) = r.attempts {
        c = c.attempts(n);
    }
    if let Some(yes) = r.discover {
        c = c.discover(yes);
    }
    if let Some(d) = duration("refresh_interval", &r.refresh_interval)? {
        c = c.refresh_interval(d);
    }
    if let Some(d) = duration("retry_delay", &r.retry_delay)? {
        c = c.retry_delay(d);
    }
    // The library names the nodes `nodes[i]`; this file calls them `urls`.
    let in_file_terms = |e: Error| match e.message().strip_prefix("nodes") {
        Some(rest) if rest.starts_with(['[', ':']) => Error::new(
            e.kind(),
            format!("urls{}", rest.replace("(also nodes[", "(also urls[")),
        ),
        _ => e,
    };
    c.validate().map_err(in_file_terms)?;
    Ok(Arc::new(RedisAclProvider::new(c).map_err(in_file_terms)?))
}

/// The provider of one secret.
pub async fn provider(p: &ProviderConfig) -> Result<Arc<dyn DynamicSecretProvider>> {
    match p {
        ProviderConfig::AwsIam(iam, aws) => iam_provider(iam, aws).await,
        ProviderConfig::AwsElastiCache(ec, aws) => elasticache_provider(ec, aws).await,
        ProviderConfig::AwsMemoryDb(db, aws) => memorydb_provider(db, aws).await,
        ProviderConfig::Redis(r) => redis_provider(r),
    }
}

/// The secret definition (provider included), checked offline.
pub async fn secret(s: &SecretConfig) -> Result<DynamicSecret> {
    let provider = provider(&s.provider).await?;
    let mut b = DynamicSecret::builder(&s.name, provider)
        .default_ttl(s.default_ttl)
        .max_ttl(s.max_ttl)
        .ttl_over_max(s.ttl_over_max);
    if let Some(t) = &s.username_template {
        b = b.username_template(t);
    }
    if let Some(p) = &s.username_prefix {
        b = b.username_prefix(p);
    }
    if let Some(n) = s.max_active_leases {
        b = b.max_active_leases(n);
    }
    b.build()
}

/// How a command wants its manager.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// One-shot commands: no worker.
    OneShot,
    /// `run`: the expiry worker.
    Worker,
}

/// Builds every secret of `config` (errors carry the secret's name) and the manager.
pub async fn manager(
    config: &Config,
    mode: Mode,
    audit: Option<Arc<dyn leasehold_core::AuditSink>>,
) -> Result<LeaseManager> {
    let mut secrets = Vec::with_capacity(config.secrets.len());
    for s in &config.secrets {
        secrets.push(
            secret(s)
                .await
                .map_err(|e| e.with_context("secret", &s.name))?,
        );
    }
    let store = store(&config.store.url).await?;
    let m = &config.manager;
    let mut mc = ManagerConfig::default();
    if let Some(d) = m.max_idle {
        mc.max_idle = d;
    }
    if let Some(n) = m.revoke_concurrency {
        mc.revoke_concurrency = n;
    }
    if let Some(d) = m.issue_timeout {
        mc.issue_timeout = d;
    }
    if let Some(d) = m.revoke_timeout {
        mc.revoke_timeout = d;
    }
    if let Some(d) = m.create_grace {
        mc.create_grace = d;
    }
    if let Some(d) = m.claim_hold {
        mc.claim_hold = d;
    }
    if let Some(d) = config.metrics.interval {
        mc.metrics_interval = d;
    }
    let mut retry = RetryPolicy::default();
    if let Some(d) = m.retry_initial_delay {
        retry = RetryPolicy::new(d, retry.max_attempts).max_delay(retry.max_delay.max(d));
    }
    if let Some(n) = m.retry_max_attempts {
        retry.max_attempts = n;
    }
    mc.retry = retry;
    let mut b = LeaseManager::builder(store)
        .config(mc)
        .skip_validation()
        .run_worker(mode == Mode::Worker);
    if mode == Mode::Worker {
        if let Some(id) = &m.instance_id {
            b = b.instance_id(id);
        }
    }
    if let Some(sink) = audit {
        b = b.audit_sink(sink);
    }
    for s in secrets {
        b = b.secret(s);
    }
    b.build().await
}
