//! The one public error type of leasehold.
//!
//! Every crate maps its own failures into [`Error`], which carries an [`ErrorKind`] callers can
//! branch on, a retry status (temporary, permanent or persistent) the retry logic reads, a
//! message that tells the user what to do, and context (secret, lease id, operation). No message or context value ever holds a
//! password or secret key.

use std::fmt;

/// What went wrong, in terms a caller can act on.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// A configuration value is invalid (the message names the field).
    InvalidConfig,
    /// A username or statement template does not parse or renders something invalid.
    InvalidTemplate,
    /// A request argument is invalid (a lease id that cannot be one, a zero increment, ...).
    InvalidInput,
    /// The requested TTL is above the secret's (or the backend's) maximum.
    TtlExceedsMax,
    /// No secret of that name is registered with the manager.
    SecretNotFound,
    /// No lease with that id exists.
    LeaseNotFound,
    /// The lease has expired.
    LeaseExpired,
    /// The lease was revoked (or is being revoked).
    LeaseRevoked,
    /// The lease (or its provider) cannot be renewed.
    NotRenewable,
    /// The lease already lasts until its max TTL; renewing cannot extend it.
    RenewLimitReached,
    /// The secret already has its maximum number of active leases, or the backend's own quota
    /// (for example 100 users in an ElastiCache user group) is reached.
    QuotaExceeded,
    /// A concurrent change won: a compare-and-set found another version, or the backend refused a
    /// change while another is in flight.
    Conflict,
    /// An object that must be unique exists already.
    AlreadyExists,
    /// The backend throttled the request.
    Throttled,
    /// The backend could not be reached or answered with a server error.
    ProviderUnavailable,
    /// The backend refused the request for lack of permissions.
    PermissionDenied,
    /// The backend object (user, group, ACL, cluster) was not found.
    NotFound,
    /// The operation did not finish in time.
    Timeout,
    /// Revocation kept failing; the lease is kept as irrevocable for an operator.
    Irrevocable,
    /// The operation is not supported by this provider or store.
    Unsupported,
    /// The lease store failed.
    Store,
    /// The manager is shutting down.
    Shutdown,
    /// Anything else.
    Unexpected,
}

impl ErrorKind {
    /// A short stable name, as used in logs and the CLI's JSON output.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::InvalidConfig => "InvalidConfig",
            ErrorKind::InvalidTemplate => "InvalidTemplate",
            ErrorKind::InvalidInput => "InvalidInput",
            ErrorKind::TtlExceedsMax => "TtlExceedsMax",
            ErrorKind::SecretNotFound => "SecretNotFound",
            ErrorKind::LeaseNotFound => "LeaseNotFound",
            ErrorKind::LeaseExpired => "LeaseExpired",
            ErrorKind::LeaseRevoked => "LeaseRevoked",
            ErrorKind::NotRenewable => "NotRenewable",
            ErrorKind::RenewLimitReached => "RenewLimitReached",
            ErrorKind::QuotaExceeded => "QuotaExceeded",
            ErrorKind::Conflict => "Conflict",
            ErrorKind::AlreadyExists => "AlreadyExists",
            ErrorKind::Throttled => "Throttled",
            ErrorKind::ProviderUnavailable => "ProviderUnavailable",
            ErrorKind::PermissionDenied => "PermissionDenied",
            ErrorKind::NotFound => "NotFound",
            ErrorKind::Timeout => "Timeout",
            ErrorKind::Irrevocable => "Irrevocable",
            ErrorKind::Unsupported => "Unsupported",
            ErrorKind::Store => "Store",
            ErrorKind::Shutdown => "Shutdown",
            ErrorKind::Unexpected => "Unexpected",
        }
    }

    /// Whether an error of this kind is worth retrying by default.
    ///
    /// [`Error::new`] uses this; constructors can override it with [`Error::temporary`] or
    /// [`Error::permanent`].
    pub fn is_temporary_by_default(self) -> bool {
        matches!(
            self,
            ErrorKind::Throttled
                | ErrorKind::ProviderUnavailable
                | ErrorKind::Timeout
                | ErrorKind::Conflict
        )
    }

    /// True for the kinds that are the caller's fault: bad configuration or input, detectable
    /// before any network call.
    pub fn is_invalid_input(self) -> bool {
        matches!(
            self,
            ErrorKind::InvalidConfig
                | ErrorKind::InvalidTemplate
                | ErrorKind::InvalidInput
                | ErrorKind::TtlExceedsMax
        )
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether an error is worth retrying (after OpenDAL's `ErrorStatus`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    /// Retrying will not help.
    Permanent,
    /// Retrying may help.
    Temporary,
    /// Was temporary, but an inner retry loop has already retried it until its bound.
    Persistent,
}

/// The error returned by every leasehold operation.
///
/// # Retry status
///
/// An error is *temporary* (retrying may succeed: throttling, a busy backend), *permanent*
/// (it will not: a refused permission, bad input), or *persistent*: temporary, but an inner
/// retry loop (a provider's own wait on a busy user, say) already retried it until its bound,
/// see [`persist`](Self::persist). A persistent error is not [temporary](Self::is_temporary):
/// no outer loop re-runs the operation at once, which would multiply the inner retries by its
/// own. The lease manager records a persistent revocation failure as a failed attempt and
/// retries it on its [`RetryPolicy`](crate::RetryPolicy) schedule, minutes later, like a
/// temporary one, since the credential must go eventually; it is not made `Irrevocable` at
/// once as a permanent failure is. See [`backoff`](crate::backoff) for the bound on calls.
///
/// ```
/// use leasehold_core::{Error, ErrorKind};
///
/// let err = Error::new(ErrorKind::TtlExceedsMax, "ttl 48h exceeds max_ttl 24h")
///     .with_context("secret", "orders-cache");
/// assert_eq!(err.kind(), ErrorKind::TtlExceedsMax);
/// assert!(!err.is_temporary());
/// assert_eq!(
///     err.to_string(),
///     "TtlExceedsMax: ttl 48h exceeds max_ttl 24h (secret: orders-cache)"
/// );
/// ```
pub struct Error {
    kind: ErrorKind,
    message: String,
    status: Status,
    context: Vec<(&'static str, String)>,
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A new error; temporary or permanent as [`ErrorKind::is_temporary_by_default`] says.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
            status: if kind.is_temporary_by_default() {
                Status::Temporary
            } else {
                Status::Permanent
            },
            context: Vec::new(),
            source: None,
        }
    }

    /// Shorthand for [`ErrorKind::InvalidConfig`].
    pub fn invalid_config(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::InvalidConfig, message)
    }

    /// Shorthand for [`ErrorKind::InvalidInput`].
    pub fn invalid_input(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::InvalidInput, message)
    }

    /// Shorthand for [`ErrorKind::Unexpected`].
    pub fn unexpected(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Unexpected, message)
    }

    /// Marks the error as worth retrying.
    #[must_use]
    pub fn temporary(mut self) -> Self {
        self.status = Status::Temporary;
        self
    }

    /// Marks the error as not worth retrying.
    #[must_use]
    pub fn permanent(mut self) -> Self {
        self.status = Status::Permanent;
        self
    }

    /// Marks that the inner retries of a temporary error are exhausted: the error becomes
    /// persistent, no longer [temporary](Self::is_temporary), so that an outer retry loop does
    /// not re-run the operation at once. A permanent error stays permanent.
    #[must_use]
    pub fn persist(mut self) -> Self {
        if self.status == Status::Temporary {
            self.status = Status::Persistent;
        }
        self
    }

    /// Adds a context pair such as `("secret", "orders-cache")` or `("operation", "revoke")`.
    ///
    /// A key that is present already is replaced.
    #[must_use]
    pub fn with_context(mut self, key: &'static str, value: impl fmt::Display) -> Self {
        let value = value.to_string();
        if let Some(slot) = self.context.iter_mut().find(|(k, _)| *k == key) {
            slot.1 = value;
        } else {
            self.context.push((key, value));
        }
        self
    }

    /// Attaches the underlying cause. The cause must not render secret material.
    #[must_use]
    pub fn set_source(
        mut self,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        self.source = Some(source.into());
        self
    }

    /// What went wrong.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// Whether retrying the same operation may succeed.
    pub fn is_temporary(&self) -> bool {
        self.status == Status::Temporary
    }

    /// Whether the error was temporary and retried already until an inner loop's bound (see
    /// [`persist`](Self::persist)): retry it later on a schedule, not at once.
    pub fn is_persistent(&self) -> bool {
        self.status == Status::Persistent
    }

    /// Whether the condition may pass with time: [temporary](Self::is_temporary) or
    /// [persistent](Self::is_persistent). The manager retries such a revocation on its schedule,
    /// and a provider may skip an optional node (a replica) that fails so.
    pub fn is_retryable(&self) -> bool {
        matches!(self.status, Status::Temporary | Status::Persistent)
    }

    /// The message, without kind or context.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The context value for `key`, if any.
    pub fn context(&self, key: &str) -> Option<&str> {
        self.context
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.as_str())
    }

    /// All context pairs, in the order they were added.
    pub fn context_pairs(&self) -> impl Iterator<Item = (&'static str, &str)> {
        self.context.iter().map(|(k, v)| (*k, v.as_str()))
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)?;
        if !self.context.is_empty() {
            f.write_str(" (")?;
            for (i, (k, v)) in self.context.iter().enumerate() {
                if i > 0 {
                    f.write_str(", ")?;
                }
                write!(f, "{k}: {v}")?;
            }
            f.write_str(")")?;
        }
        if let Some(source) = &self.source {
            write!(f, ": {source}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Error");
        d.field("kind", &self.kind)
            .field("message", &self.message)
            .field("temporary", &self.is_temporary());
        if self.is_persistent() {
            d.field("persistent", &true);
        }
        if !self.context.is_empty() {
            d.field("context", &self.context);
        }
        if let Some(source) = &self.source {
            d.field("source", &format_args!("{source}"));
        }
        d.finish()
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_ref()
            .map(|s| s.as_ref() as &(dyn std::error::Error + 'static))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_kind_message_and_context() {
        let e = Error::new(ErrorKind::LeaseNotFound, "no lease with that id")
            .with_context("lease_id", "orders/abc")
            .with_context("operation", "renew");
        assert_eq!(
            e.to_string(),
            "LeaseNotFound: no lease with that id (lease_id: orders/abc, operation: renew)"
        );
        assert_eq!(e.context("operation"), Some("renew"));
    }

    #[test]
    fn temporary_follows_kind_unless_overridden() {
        assert!(Error::new(ErrorKind::Throttled, "slow down").is_temporary());
        assert!(!Error::new(ErrorKind::PermissionDenied, "no").is_temporary());
        assert!(Error::new(ErrorKind::NotFound, "x")
            .temporary()
            .is_temporary());
        assert!(!Error::new(ErrorKind::Throttled, "x")
            .permanent()
            .is_temporary());
    }

    #[test]
    fn persist_ends_temporary_but_not_permanent() {
        let e = Error::new(ErrorKind::Throttled, "slow down").persist();
        assert!(e.is_persistent() && !e.is_temporary());
        assert!(e.is_retryable(), "persistent: retried later, on a schedule");
        assert!(format!("{e:?}").contains("persistent: true"));
        // A permanent error stays permanent: persisting it says nothing new.
        let e = Error::new(ErrorKind::PermissionDenied, "no").persist();
        assert!(!e.is_persistent() && !e.is_temporary() && !e.is_retryable());
        // Marking it temporary again (a new, outer operation) lifts it.
        assert!(Error::new(ErrorKind::Conflict, "busy")
            .persist()
            .temporary()
            .is_temporary());
    }

    #[test]
    fn context_key_is_replaced_not_repeated() {
        let e = Error::invalid_input("x")
            .with_context("secret", "a")
            .with_context("secret", "b");
        assert_eq!(e.context_pairs().count(), 1);
        assert_eq!(e.context("secret"), Some("b"));
    }
}
