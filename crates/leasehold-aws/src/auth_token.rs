//! IAM authentication tokens for ElastiCache and MemoryDB (Valkey / Redis OSS).
//!
//! An IAM-enabled cache user has no password: the client sends, as the password, a SigV4
//! presigned request `GET http://<cache-name>/?Action=connect&User=<user-id>` (plus
//! `ResourceType=ServerlessCache` for an ElastiCache serverless cache) with the scheme
//! stripped. ElastiCache signs for service `elasticache`, MemoryDB for service `memorydb`
//! (with the cluster name and the user name); the token is valid for at most 15 minutes.
//!
//! The query is laid out as AWS's own SDKs lay it out (the operation parameters first, then the
//! `X-Amz-*` parameters), so a token built here equals the one botocore's request signer
//! builds for the same credentials and clock.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    sign, SignableBody, SignableRequest, SignatureLocation, SigningSettings,
};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use leasehold_core::{Error, ErrorKind, Result};

use crate::CacheService;
use leasehold_core::settings::shorten;
use secrecy::SecretString;

/// The longest validity AWS accepts for an IAM authentication token, and the default: 15 min.
pub const AUTH_TOKEN_MAX_EXPIRY: Duration = Duration::from_secs(900);

/// Where "now" comes from when a token is signed: the system clock, or a fixed or scripted
/// clock in tests.
#[derive(Clone)]
pub struct AuthTokenClock(Arc<dyn Fn() -> SystemTime + Send + Sync>);

impl AuthTokenClock {
    /// The system clock.
    pub fn system() -> Self {
        AuthTokenClock(Arc::new(SystemTime::now))
    }

    /// A clock that always reads `at`.
    pub fn fixed(at: SystemTime) -> Self {
        AuthTokenClock(Arc::new(move || at))
    }

    /// A clock that reads `f()`.
    pub fn from_fn(f: impl Fn() -> SystemTime + Send + Sync + 'static) -> Self {
        AuthTokenClock(Arc::new(f))
    }

    /// The current time of this clock.
    pub fn now(&self) -> SystemTime {
        (self.0)()
    }
}

impl Default for AuthTokenClock {
    fn default() -> Self {
        AuthTokenClock::system()
    }
}

impl fmt::Debug for AuthTokenClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AuthTokenClock")
    }
}

/// A signed IAM authentication token. `Debug` shows when it was signed and when it expires,
/// never the token.
#[derive(Clone)]
pub struct AuthToken {
    token: SecretString,
    signed_at: SystemTime,
    expires_at: SystemTime,
}

impl AuthToken {
    /// The token: the password to send with `AUTH <user> <token>` or `HELLO 3 AUTH ...`.
    pub fn token(&self) -> &SecretString {
        &self.token
    }

    /// Consumes the token into its secret string.
    pub fn into_secret(self) -> SecretString {
        self.token
    }

    /// The signing time (the token's `X-Amz-Date`).
    pub fn signed_at(&self) -> SystemTime {
        self.signed_at
    }

    /// When AWS stops accepting the token for new connections.
    pub fn expires_at(&self) -> SystemTime {
        self.expires_at
    }
}

impl fmt::Debug for AuthToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthToken")
            .field("token", &"[REDACTED]")
            .field("signed_at", &self.signed_at)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// Builds IAM authentication tokens for one cache or cluster and one user.
///
/// It holds no credentials: [`sign`](Self::sign) takes them (with the session token of an
/// assumed role, which is then part of the token), and [`generate`](Self::generate) resolves
/// them from a credentials provider (the SDK's, so assumed roles refresh by themselves).
///
/// # Examples
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// use aws_credential_types::Credentials;
/// use leasehold_aws::{AuthTokenBuilder, AuthTokenClock};
/// use secrecy::ExposeSecret;
///
/// let builder = AuthTokenBuilder::elasticache("us-east-1", "orders-cache", "orders-app")
///     .clock(AuthTokenClock::fixed(UNIX_EPOCH + Duration::from_secs(1_700_000_000)));
/// let creds = Credentials::new("AKIDEXAMPLE", "secret", None, None, "example");
/// let token = builder.sign(&creds).unwrap();
/// assert!(token
///     .token()
///     .expose_secret()
///     .starts_with("orders-cache/?Action=connect&User=orders-app&X-Amz-Algorithm=AWS4-HMAC-SHA256"));
/// ```
#[derive(Debug, Clone)]
pub struct AuthTokenBuilder {
    service: CacheService,
    region: String,
    resource: String,
    user: String,
    serverless: bool,
    expires_in: Duration,
    clock: AuthTokenClock,
}

impl AuthTokenBuilder {
    /// Tokens for `user` on `resource` (cache or cluster name) in `region`, signed for
    /// `service`; 15 minutes of validity, system clock, not serverless.
    pub fn new(
        service: CacheService,
        region: impl Into<String>,
        resource: impl Into<String>,
        user: impl Into<String>,
    ) -> Self {
        AuthTokenBuilder {
            service,
            region: region.into(),
            resource: resource.into(),
            user: user.into(),
            serverless: false,
            expires_in: AUTH_TOKEN_MAX_EXPIRY,
            clock: AuthTokenClock::system(),
        }
    }

    /// ElastiCache tokens for `user_id` on the replication group (or, with
    /// [`serverless`](Self::serverless), serverless cache) `cache_name`.
    pub fn elasticache(
        region: impl Into<String>,
        cache_name: impl Into<String>,
        user_id: impl Into<String>,
    ) -> Self {
        Self::new(CacheService::ElastiCache, region, cache_name, user_id)
    }

    /// MemoryDB tokens for `user_name` on the cluster `cluster_name`.
    pub fn memorydb(
        region: impl Into<String>,
        cluster_name: impl Into<String>,
        user_name: impl Into<String>,
    ) -> Self {
        Self::new(CacheService::MemoryDb, region, cluster_name, user_name)
    }

    /// Whether the cache is an ElastiCache serverless cache (adds
    /// `ResourceType=ServerlessCache`).
    #[must_use]
    pub fn serverless(mut self, yes: bool) -> Self {
        self.serverless = yes;
        self
    }

    /// How long a token stays valid (default and at most 15 minutes; shorter for tests or to
    /// narrow the window a leaked token is good for).
    #[must_use]
    pub fn expires_in(mut self, d: Duration) -> Self {
        self.expires_in = d;
        self
    }

    /// The clock that dates each token.
    #[must_use]
    pub fn clock(mut self, clock: AuthTokenClock) -> Self {
        self.clock = clock;
        self
    }

    /// The service signed for.
    pub fn service(&self) -> CacheService {
        self.service
    }

    /// The region.
    pub fn region(&self) -> &str {
        &self.region
    }

    /// The cache or cluster name.
    pub fn resource(&self) -> &str {
        &self.resource
    }

    /// The user id (ElastiCache) or user name (MemoryDB).
    pub fn user(&self) -> &str {
        &self.user
    }

    /// Whether the cache is serverless.
    pub fn is_serverless(&self) -> bool {
        self.serverless
    }

    /// The validity of each token.
    pub fn expiry(&self) -> Duration {
        self.expires_in
    }

    /// Checks the settings without a network call.
    pub fn validate(&self) -> Result<()> {
        crate::config::check_region(&self.region)?;
        let what = match self.service {
            CacheService::ElastiCache if self.serverless => "serverless cache name",
            CacheService::ElastiCache => "replication group id",
            CacheService::MemoryDb => "cluster name",
        };
        check_identifier(what, &self.resource)?;
        let user_field = match self.service {
            CacheService::ElastiCache => "user id",
            CacheService::MemoryDb => "user name",
        };
        check_identifier(user_field, &self.user)?;
        if self.serverless && self.service == CacheService::MemoryDb {
            return Err(Error::invalid_config(
                "serverless: MemoryDB has no serverless caches; only ElastiCache tokens carry ResourceType=ServerlessCache",
            ));
        }
        if self.expires_in.is_zero()
            || self.expires_in > AUTH_TOKEN_MAX_EXPIRY
            || self.expires_in.subsec_nanos() != 0
        {
            return Err(Error::invalid_config(format!(
                "token expiry: {}s is not a whole number of seconds from 1 to {} (AWS accepts tokens for at most 15 minutes)",
                self.expires_in.as_secs_f64(),
                AUTH_TOKEN_MAX_EXPIRY.as_secs()
            )));
        }
        Ok(())
    }

    /// Signs a token with `credentials` at the clock's current time.
    pub fn sign(&self, credentials: &Credentials) -> Result<AuthToken> {
        self.sign_at(credentials, self.clock.now())
    }

    /// Signs a token with `credentials`, dated `at`.
    pub fn sign_at(&self, credentials: &Credentials, at: SystemTime) -> Result<AuthToken> {
        self.validate()?;
        let operation_query = self.operation_query();
        let url = format!("http://{}/?{operation_query}", self.resource);

        let mut settings = SigningSettings::default();
        settings.signature_location = SignatureLocation::QueryParams;
        settings.expires_in = Some(self.expires_in);
        let identity: Identity = credentials.clone().into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name(self.service.signing_name())
            .time(at)
            .settings(settings)
            .build()
            .map_err(|e| Error::unexpected(format!("token signing parameters: {e}")))?
            .into();
        // The signature covers the host header and the (empty) body's hash: botocore's and
        // the Java SDKs' presigners hash the empty body for these tokens, not UNSIGNED-PAYLOAD.
        let request = SignableRequest::new(
            "GET",
            url.as_str(),
            std::iter::empty(),
            SignableBody::Bytes(&[]),
        )
        .map_err(|e| Error::invalid_config(format!("token request: {e}")))?;
        // aws-sigv4 traces the canonical request, whose query holds the session token of
        // temporary credentials; no subscriber may see it.
        let signed =
            tracing::subscriber::with_default(tracing::subscriber::NoSubscriber::new(), || {
                sign(request, &params)
            });
        let (instructions, _signature) = signed
            // The signer's errors name missing parts, never credential values.
            .map_err(|e| Error::unexpected(format!("signing the token failed: {e}")))?
            .into_parts();

        let mut auth: Vec<(&str, &str)> = instructions
            .params()
            .iter()
            .map(|(k, v)| (*k, v.as_ref()))
            .collect();
        // botocore's order: the X-Amz-* parameters in the order they enter the canonical
        // query (security token after the signed headers), the signature last.
        auth.sort_by_key(|(k, _)| auth_param_rank(k));
        let mut token = format!("{}/?{operation_query}", self.resource);
        for (k, v) in auth {
            token.push('&');
            token.push_str(k);
            token.push('=');
            token.push_str(&uri_encode(v));
        }
        Ok(AuthToken {
            token: SecretString::from(token),
            signed_at: at,
            expires_at: at + self.expires_in,
        })
    }

    /// Resolves credentials from `provider` (static keys, the default chain, an assumed role)
    /// and signs a token with them.
    pub async fn generate(&self, provider: &SharedCredentialsProvider) -> Result<AuthToken> {
        self.validate()?;
        let credentials = provider.provide_credentials().await.map_err(|e| {
            Error::new(
                ErrorKind::PermissionDenied,
                format!("no AWS credentials to sign the IAM auth token with: {e}"),
            )
            .temporary()
        })?;
        self.sign(&credentials)
    }

    fn operation_query(&self) -> String {
        let mut q = format!("Action=connect&User={}", uri_encode(&self.user));
        if self.serverless {
            q.push_str("&ResourceType=ServerlessCache");
        }
        q
    }
}

fn auth_param_rank(name: &str) -> u8 {
    match name {
        "X-Amz-Algorithm" => 0,
        "X-Amz-Credential" => 1,
        "X-Amz-Date" => 2,
        "X-Amz-Expires" => 3,
        "X-Amz-SignedHeaders" => 4,
        "X-Amz-Security-Token" => 5,
        "X-Amz-Signature" => 7,
        _ => 6,
    }
}

/// SigV4 URI encoding: everything but `A-Z a-z 0-9 - _ . ~` as `%XX`. (A few lines here
/// rather than a dependency for one function.)
fn uri_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Cache, cluster and user identifiers of ElastiCache and MemoryDB: a letter, then letters,
/// digits and hyphens, at most 40 characters. AWS stores them lower-case and signs the
/// stored form, so the name must be given lower-case.
fn check_identifier(field: &str, value: &str) -> Result<()> {
    let ok = (1..=40).contains(&value.len())
        && value.starts_with(|c: char| c.is_ascii_lowercase())
        && value
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(Error::invalid_config(format!(
            "{field}: {:?} must be 1 to 40 lower-case letters, digits or hyphens, starting with a letter (AWS stores and signs it lower-case)",
            shorten(value)
        )))
    }
}

/// What signs tokens for an SDK configuration built elsewhere: its credentials provider and its
/// region (`fallback_region` when it has none). Typed errors when either is missing.
pub fn signing_parts(
    sdk: &aws_types::SdkConfig,
    fallback_region: Option<&str>,
) -> Result<(SharedCredentialsProvider, String)> {
    let credentials = sdk.credentials_provider().ok_or_else(|| {
        Error::invalid_config("the AWS configuration has no credentials to sign tokens with")
    })?;
    let region = sdk
        .region()
        .map(|r| r.as_ref().to_string())
        .or_else(|| fallback_region.map(str::to_string))
        .ok_or_else(|| Error::invalid_config("region: no region configured to sign tokens for"))?;
    Ok((credentials, region))
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;
    use std::time::UNIX_EPOCH;

    fn creds(token: Option<&str>) -> Credentials {
        Credentials::new(
            "AKIDEXAMPLE",
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            token.map(str::to_string),
            None,
            "test",
        )
    }

    fn at() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_700_000_000)
    }

    #[test]
    fn layout_of_an_elasticache_token() {
        let t = AuthTokenBuilder::elasticache("us-east-1", "orders", "app-user")
            .sign_at(&creds(None), at())
            .unwrap();
        let s = t.token().expose_secret();
        assert!(s.starts_with("orders/?Action=connect&User=app-user&X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIDEXAMPLE%2F20231114%2Fus-east-1%2Felasticache%2Faws4_request&X-Amz-Date=20231114T221320Z&X-Amz-Expires=900&X-Amz-SignedHeaders=host&X-Amz-Signature="), "{s}");
        assert!(!s.contains("Security-Token"));
        assert_eq!(t.expires_at(), at() + Duration::from_secs(900));
    }

    #[test]
    fn serverless_and_session_token() {
        let t = AuthTokenBuilder::elasticache("eu-west-1", "sc", "u")
            .serverless(true)
            .expires_in(Duration::from_secs(60))
            .clock(AuthTokenClock::fixed(at()))
            .sign(&creds(Some("FwoGZXIvYXdz/Session+Token==")))
            .unwrap();
        let s = t.token().expose_secret();
        assert!(
            s.starts_with(
                "sc/?Action=connect&User=u&ResourceType=ServerlessCache&X-Amz-Algorithm="
            ),
            "{s}"
        );
        assert!(s.contains("&X-Amz-Expires=60&"));
        assert!(s.contains("&X-Amz-SignedHeaders=host&X-Amz-Security-Token=FwoGZXIvYXdz%2FSession%2BToken%3D%3D&X-Amz-Signature="), "{s}");
    }

    #[test]
    fn memorydb_signs_for_memorydb() {
        let t = AuthTokenBuilder::memorydb("us-west-2", "cl", "u")
            .sign_at(&creds(None), at())
            .unwrap();
        assert!(t
            .token()
            .expose_secret()
            .contains("%2Fus-west-2%2Fmemorydb%2Faws4_request"));
    }

    #[test]
    fn signatures_differ_by_clock_and_user() {
        let b = AuthTokenBuilder::elasticache("us-east-1", "c", "u");
        let one = b.sign_at(&creds(None), at()).unwrap();
        let same = b.sign_at(&creds(None), at()).unwrap();
        let later = b
            .sign_at(&creds(None), at() + Duration::from_secs(1))
            .unwrap();
        let other = AuthTokenBuilder::elasticache("us-east-1", "c", "v")
            .sign_at(&creds(None), at())
            .unwrap();
        assert_eq!(one.token().expose_secret(), same.token().expose_secret());
        assert_ne!(one.token().expose_secret(), later.token().expose_secret());
        assert_ne!(one.token().expose_secret(), other.token().expose_secret());
    }

    #[test]
    fn bad_settings_are_refused_offline() {
        let ok = AuthTokenBuilder::elasticache("us-east-1", "c", "u");
        assert!(ok.validate().is_ok());
        let bad = [
            ok.clone().expires_in(Duration::from_secs(901)),
            ok.clone().expires_in(Duration::ZERO),
            ok.clone().expires_in(Duration::from_millis(1500)),
            AuthTokenBuilder::elasticache("US", "c", "u"),
            AuthTokenBuilder::elasticache("us-east-1", "Upper", "u"),
            AuthTokenBuilder::elasticache("us-east-1", "c/evil?x=", "u"),
            AuthTokenBuilder::elasticache("us-east-1", "c", ""),
            AuthTokenBuilder::elasticache("us-east-1", "c", "u&Action=x"),
            AuthTokenBuilder::memorydb("us-east-1", "c", "u").serverless(true),
        ];
        for b in bad {
            let e = b.sign_at(&creds(None), at()).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidConfig, "{b:?}: {e}");
        }
    }

    #[test]
    fn debug_hides_the_token() {
        let c = creds(Some("SESSIONTOKENVALUE"));
        let t = AuthTokenBuilder::elasticache("us-east-1", "c", "u")
            .sign_at(&c, at())
            .unwrap();
        let sig = t
            .token()
            .expose_secret()
            .rsplit_once('=')
            .unwrap()
            .1
            .to_string();
        let d = format!("{t:?}");
        assert!(!d.contains(&sig) && !d.contains("SESSIONTOKENVALUE") && !d.contains("Action"));
        assert!(d.contains("[REDACTED]"));
    }

    #[test]
    fn encodes_like_sigv4() {
        assert_eq!(uri_encode("aZ09-_.~"), "aZ09-_.~");
        assert_eq!(uri_encode("a/b+c=d e"), "a%2Fb%2Bc%3Dd%20e");
    }
}
