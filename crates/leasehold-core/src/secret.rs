//! [`DynamicSecret`]: a named, configured source of leases.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::duration::format_duration;
use crate::error::{Error, ErrorKind, Result};
use crate::names::DEFAULT_USERNAME_PREFIX;
use crate::password::PasswordPolicy;
use crate::provider::{DynamicSecretProvider, IntoProvider};
use crate::template::{TemplateVars, UsernameTemplate, DEFAULT_USERNAME_TEMPLATE};

/// The default limit on active leases per secret.
pub const DEFAULT_MAX_ACTIVE_LEASES: u64 = 10_000;

/// An installation id of the generated length, for sample renders.
const SAMPLE_INSTALLATION: &str = "a0000000";

/// The prefix `{{randomUsername}}` gets in `installation`: `<prefix><installation>-`.
pub fn installation_prefix(prefix: &str, installation: &str) -> String {
    format!("{prefix}{installation}-")
}

/// What to do when a request asks for a TTL above the max TTL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TtlOverMax {
    /// Refuse with [`ErrorKind::TtlExceedsMax`] (the default).
    #[default]
    Error,
    /// Issue with the max TTL instead.
    Clamp,
}

/// A dynamic secret: a name, a provider, TTLs, and how usernames and passwords are made.
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use leasehold_core::DynamicSecret;
/// # use leasehold_core::{DynamicSecretProvider, Capabilities, CreateRequest, Created, ExternalRef, Result};
/// # #[derive(Debug)] struct P;
/// # #[async_trait::async_trait] impl DynamicSecretProvider for P {
/// #   fn kind(&self) -> &'static str { "p" }
/// #   fn capabilities(&self) -> Capabilities { Capabilities::new() }
/// #   async fn validate(&self) -> Result<()> { Ok(()) }
/// #   async fn create(&self, _: &CreateRequest) -> Result<Created> { unreachable!() }
/// #   async fn revoke(&self, _: &ExternalRef) -> Result<()> { Ok(()) }
/// # }
///
/// let secret = DynamicSecret::builder("orders-cache", Arc::new(P))
///     .default_ttl(Duration::from_secs(3600))
///     .max_ttl(Duration::from_secs(24 * 3600))
///     .build()
///     .unwrap();
/// assert_eq!(secret.name(), "orders-cache");
/// ```
#[derive(Clone)]
pub struct DynamicSecret {
    name: Arc<str>,
    provider: Arc<dyn DynamicSecretProvider>,
    default_ttl: Duration,
    max_ttl: Duration,
    username_template: UsernameTemplate,
    username_prefix: String,
    password_policy: PasswordPolicy,
    max_active_leases: u64,
    ttl_over_max: TtlOverMax,
}

impl DynamicSecret {
    /// Starts a definition for `name` backed by `provider`.
    pub fn builder(name: impl Into<String>, provider: impl IntoProvider) -> DynamicSecretBuilder {
        DynamicSecretBuilder {
            name: name.into(),
            password_policy: None,
            provider: provider.into_provider(),
            default_ttl: Duration::from_secs(3600),
            max_ttl: Duration::from_secs(24 * 3600),
            username_template: DEFAULT_USERNAME_TEMPLATE.to_string(),
            username_prefix: DEFAULT_USERNAME_PREFIX.to_string(),
            max_active_leases: DEFAULT_MAX_ACTIVE_LEASES,
            ttl_over_max: TtlOverMax::Error,
        }
    }

    /// The secret's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The name as a shared string.
    pub fn name_arc(&self) -> &Arc<str> {
        &self.name
    }

    /// The provider.
    pub fn provider(&self) -> &Arc<dyn DynamicSecretProvider> {
        &self.provider
    }

    /// TTL when the request names none.
    pub fn default_ttl(&self) -> Duration {
        self.default_ttl
    }

    /// Longest lifetime of a lease, renewals included.
    pub fn max_ttl(&self) -> Duration {
        self.max_ttl
    }

    /// The username template.
    pub fn username_template(&self) -> &UsernameTemplate {
        &self.username_template
    }

    /// The prefix of `randomUsername` (reconcile looks for it).
    pub fn username_prefix(&self) -> &str {
        &self.username_prefix
    }

    /// The password policy.
    pub fn password_policy(&self) -> &PasswordPolicy {
        &self.password_policy
    }

    /// Limit on leases that are not yet revoked.
    pub fn max_active_leases(&self) -> u64 {
        self.max_active_leases
    }

    /// What happens to a TTL above the max.
    pub fn ttl_over_max(&self) -> TtlOverMax {
        self.ttl_over_max
    }

    /// The TTL for a request: `requested` or the default, checked against the max TTL, the
    /// provider's limits, and the policy.
    pub fn effective_ttl(&self, requested: Option<Duration>) -> Result<Duration> {
        let ttl = requested.unwrap_or(self.default_ttl);
        if ttl.is_zero() {
            return Err(Error::new(ErrorKind::InvalidInput, "ttl must be positive")
                .with_context("secret", &self.name));
        }
        let caps = self.provider.capabilities();
        if let Some(min) = caps.min_ttl {
            if ttl < min {
                return Err(Error::new(
                    ErrorKind::InvalidInput,
                    format!(
                        "ttl {} is below the {} minimum of {}",
                        format_duration(ttl),
                        self.provider.kind(),
                        format_duration(min)
                    ),
                )
                .with_context("secret", &self.name));
            }
        }
        if ttl > self.max_ttl {
            return match self.ttl_over_max {
                TtlOverMax::Clamp => Ok(self.max_ttl),
                TtlOverMax::Error => Err(Error::new(
                    ErrorKind::TtlExceedsMax,
                    format!(
                        "ttl {} exceeds max_ttl {} for secret {:?}",
                        format_duration(ttl),
                        format_duration(self.max_ttl),
                        &*self.name
                    ),
                )
                .with_context("secret", &self.name)),
            };
        }
        Ok(ttl)
    }

    /// Renders a username for `identity` and checks it against the provider's name rule.
    pub fn render_username(&self, identity: Option<&str>) -> Result<String> {
        self.render_username_in(identity, None)
    }

    /// Renders a username for `identity` in `installation`: `{{randomUsername}}` then starts
    /// with `<prefix><installation>-`, the mark by which reconcile knows this installation's
    /// users on backends without tags. Checked against the provider's name rule.
    pub fn render_username_in(
        &self,
        identity: Option<&str>,
        installation: Option<&str>,
    ) -> Result<String> {
        let rule = self.provider.name_rule();
        let marked;
        let prefix = match installation {
            Some(inst) => {
                marked = installation_prefix(&self.username_prefix, inst);
                marked.as_str()
            }
            None => self.username_prefix.as_str(),
        };
        let raw = self.username_template.render(&TemplateVars {
            secret_name: &self.name,
            secret_type: self.provider.kind(),
            identity,
            prefix,
        })?;
        let name = rule.normalize(&raw);
        rule.check(&name)
            .map_err(|e| e.with_context("secret", &self.name))?;
        Ok(name)
    }
}

impl fmt::Debug for DynamicSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DynamicSecret")
            .field("name", &self.name)
            .field("provider", &self.provider.kind())
            .field("default_ttl", &self.default_ttl)
            .field("max_ttl", &self.max_ttl)
            .field("username_template", &self.username_template.source())
            .field("max_active_leases", &self.max_active_leases)
            .field("ttl_over_max", &self.ttl_over_max)
            .finish_non_exhaustive()
    }
}

/// Builds a [`DynamicSecret`]; [`build`](Self::build) checks everything that can be checked
/// without a network call.
#[derive(Debug)]
pub struct DynamicSecretBuilder {
    name: String,
    provider: Arc<dyn DynamicSecretProvider>,
    default_ttl: Duration,
    max_ttl: Duration,
    username_template: String,
    username_prefix: String,
    password_policy: Option<PasswordPolicy>,
    max_active_leases: u64,
    ttl_over_max: TtlOverMax,
}

impl DynamicSecretBuilder {
    /// TTL when a request names none (default 1 h).
    pub fn default_ttl(mut self, ttl: Duration) -> Self {
        self.default_ttl = ttl;
        self
    }

    /// Longest lifetime of a lease, renewals included (default 24 h).
    pub fn max_ttl(mut self, ttl: Duration) -> Self {
        self.max_ttl = ttl;
        self
    }

    /// Username template (default `{{randomUsername}}`).
    pub fn username_template(mut self, template: impl Into<String>) -> Self {
        self.username_template = template.into();
        self
    }

    /// Prefix of `randomUsername` (default `lh-`).
    pub fn username_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.username_prefix = prefix.into();
        self
    }

    /// Password policy (default: the provider's).
    pub fn password_policy(mut self, policy: PasswordPolicy) -> Self {
        self.password_policy = Some(policy);
        self
    }

    /// Limit on leases that are not yet revoked (default 10,000).
    pub fn max_active_leases(mut self, n: u64) -> Self {
        self.max_active_leases = n;
        self
    }

    /// What to do with a TTL above the max (default: error).
    pub fn ttl_over_max(mut self, policy: TtlOverMax) -> Self {
        self.ttl_over_max = policy;
        self
    }

    /// Checks and builds the definition.
    pub fn build(self) -> Result<DynamicSecret> {
        let shown = crate::settings::shorten(&self.name);
        let cfg =
            |m: String| Err(Error::new(ErrorKind::InvalidConfig, m).with_context("secret", &shown));
        if self.name.is_empty()
            || self.name.len() > 128
            || !self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return cfg(format!(
                "name: {:?} must be 1 to 128 characters from letters, digits, '-', '_' and '.'",
                shown
            ));
        }
        if self.default_ttl.is_zero() {
            return cfg("default_ttl: must be positive".into());
        }
        if self.max_ttl.is_zero() {
            return cfg("max_ttl: must be positive".into());
        }
        if self.default_ttl > self.max_ttl {
            return cfg(format!(
                "default_ttl: {} exceeds max_ttl {}",
                format_duration(self.default_ttl),
                format_duration(self.max_ttl)
            ));
        }
        let caps = self.provider.capabilities();
        if let Some(backend_max) = caps.max_ttl {
            if self.max_ttl > backend_max {
                return cfg(format!(
                    "max_ttl: {} exceeds the {} limit of {}",
                    format_duration(self.max_ttl),
                    self.provider.kind(),
                    format_duration(backend_max)
                ));
            }
        }
        if let Some(backend_min) = caps.min_ttl {
            if self.default_ttl < backend_min {
                return cfg(format!(
                    "default_ttl: {} is below the {} minimum of {}",
                    format_duration(self.default_ttl),
                    self.provider.kind(),
                    format_duration(backend_min)
                ));
            }
        }
        if self.max_active_leases == 0 {
            return cfg("max_active_leases: must be at least 1".into());
        }
        let rule = self.provider.name_rule();
        let prefix_ok = self.username_prefix.is_empty()
            || rule
                .check(&rule.normalize(&format!("{}abc", self.username_prefix)))
                .is_ok();
        if !prefix_ok {
            return cfg(format!(
                "username_prefix: {:?} cannot start a valid {}",
                self.username_prefix,
                rule.describe()
            ));
        }
        let username_template = UsernameTemplate::parse(&self.username_template).map_err(|e| {
            e.with_context("secret", &self.name)
                .with_context("field", "username_template")
        })?;
        let password_policy = self
            .password_policy
            .unwrap_or_else(|| self.provider.password_policy());
        password_policy
            .validate()
            .map_err(|e| e.with_context("secret", &self.name))?;
        let secret = DynamicSecret {
            name: self.name.into(),
            provider: self.provider,
            default_ttl: self.default_ttl,
            max_ttl: self.max_ttl,
            username_template,
            username_prefix: self.username_prefix,
            password_policy,
            max_active_leases: self.max_active_leases,
            ttl_over_max: self.ttl_over_max,
        };
        // A template that can render an invalid name is refused now, not at 3 a.m.: render a
        // few samples (random parts vary) with a typical identity.
        for _ in 0..8 {
            secret
                .render_username_in(Some("sample-identity"), Some(SAMPLE_INSTALLATION))
                .map_err(|e| e.with_context("field", "username_template"))?;
        }
        if !secret.username_template.keeps_prefix() {
            tracing::warn!(
                secret = %secret.name,
                "username template does not start with {{{{randomUsername}}}}: reconcile cannot recognise this secret's users by prefix"
            );
        }
        Ok(secret)
    }
}
