//! [`StaticRoleReader`]: every instance's view of a static role's current password.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::{PublishedVersion, Stage, StaticRolePublisher};
use crate::error::{Error, ErrorKind, Result};

/// How a [`StaticRoleReader`] follows the publisher.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ReaderOptions {
    /// How often the published secret is read (default 30 s): the longest a rotation goes
    /// unnoticed. Keep it well below the rotator's grace.
    pub refresh: Duration,
}

impl Default for ReaderOptions {
    fn default() -> Self {
        ReaderOptions {
            refresh: Duration::from_secs(30),
        }
    }
}

crate::setters! {
    ReaderOptions {
        /// Sets the refresh interval.
        refresh: Duration,
    }
}

/// Follows a static role's published secret (`AWSCURRENT`), with the `current()` /
/// `subscribe()` shape of [`CredentialWatch`](crate::CredentialWatch): hand the receiver to a
/// connection pool and it sees each new password within one refresh interval; during the
/// rotator's grace both passwords work, so connections made with the old one keep working.
/// The reader keeps following while it or any receiver from [`subscribe`](Self::subscribe)
/// lives, or until [`close`](Self::close).
///
/// # Examples
///
/// ```no_run
/// # async fn f(publisher: std::sync::Arc<dyn leasehold_core::static_role::StaticRolePublisher>) -> leasehold_core::Result<()> {
/// use std::time::Duration;
/// use leasehold_core::static_role::{ReaderOptions, StaticRoleReader};
/// use secrecy::ExposeSecret;
///
/// let reader = StaticRoleReader::start(publisher, ReaderOptions::default().refresh(Duration::from_secs(10))).await?;
/// let cred = reader.current();
/// println!("AUTH {} ...", cred.credential.username);
/// let mut rx = reader.subscribe();
/// rx.changed().await.ok(); // a rotation
/// # Ok(()) }
/// ```
pub struct StaticRoleReader {
    rx: watch::Receiver<Arc<PublishedVersion>>,
    publisher: Arc<dyn StaticRolePublisher>,
    task: tokio::task::JoinHandle<()>,
}

impl fmt::Debug for StaticRoleReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StaticRoleReader")
            .field("publisher", &self.publisher)
            .field("version_id", &self.rx.borrow().version_id)
            .finish_non_exhaustive()
    }
}

impl StaticRoleReader {
    /// Reads the current version (an error when nothing is published yet) and follows it.
    pub async fn start(
        publisher: Arc<dyn StaticRolePublisher>,
        options: ReaderOptions,
    ) -> Result<Self> {
        if options.refresh.is_zero() {
            return Err(Error::invalid_config("reader refresh: must be positive"));
        }
        let first = Self::read(publisher.as_ref()).await?;
        let (tx, rx) = watch::channel(Arc::new(first));
        let p = publisher.clone();
        let task = tokio::spawn(async move {
            loop {
                tokio::time::sleep(options.refresh).await;
                match Self::read(p.as_ref()).await {
                    Ok(v) => {
                        let changed = tx.borrow().version_id != v.version_id;
                        if changed && tx.send(Arc::new(v)).is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(publisher = %p.location(), error = %e, "reading the static role secret failed; keeping the last one");
                    }
                }
                if tx.is_closed() {
                    return;
                }
            }
        });
        Ok(StaticRoleReader {
            rx,
            publisher,
            task,
        })
    }

    async fn read(publisher: &dyn StaticRolePublisher) -> Result<PublishedVersion> {
        publisher.get(Stage::Current).await?.ok_or_else(|| {
            Error::new(
                ErrorKind::NotFound,
                format!(
                    "{}: no current version published yet (has the rotator run?)",
                    publisher.location()
                ),
            )
        })
    }

    /// The current credential.
    pub fn current(&self) -> Arc<PublishedVersion> {
        self.rx.borrow().clone()
    }

    /// A receiver that sees every new credential.
    pub fn subscribe(&self) -> watch::Receiver<Arc<PublishedVersion>> {
        self.rx.clone()
    }

    /// Stops following.
    pub fn close(self) {
        self.task.abort();
    }
}
