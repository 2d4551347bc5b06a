//! Publishers without AWS: [`MemoryPublisher`] (one process) and [`FilePublisher`] (processes
//! sharing a file system). Both keep versions and labels exactly as Secrets Manager does.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{PublishedVersion, Stage, StaticCredential, StaticRolePublisher};
use crate::error::{Error, ErrorKind, Result};

/// The labelled versions of one secret; the same rules as Secrets Manager.
#[derive(Default, Serialize, Deserialize)]
struct Versions {
    versions: BTreeMap<String, StoredVersion>,
}

#[derive(Serialize, Deserialize, Clone)]
struct StoredVersion {
    secret: String,
    stages: Vec<String>,
    created_at: DateTime<Utc>,
}

impl Versions {
    fn get(&self, stage: Stage) -> Result<Option<PublishedVersion>> {
        for (id, v) in &self.versions {
            if v.stages.iter().any(|s| s == stage.as_str()) {
                return Ok(Some(PublishedVersion {
                    version_id: id.clone(),
                    credential: StaticCredential::from_json(&v.secret)?,
                    created_at: Some(v.created_at),
                }));
            }
        }
        Ok(None)
    }

    fn take_label(&mut self, label: &str) {
        for v in self.versions.values_mut() {
            v.stages.retain(|s| s != label);
        }
    }

    fn put_pending(&mut self, version_id: &str, credential: &StaticCredential) -> Result<()> {
        let secret = credential.to_json();
        if let Some(v) = self.versions.get(version_id) {
            if v.secret != secret {
                return Err(Error::new(
                    ErrorKind::Conflict,
                    format!("version {version_id:?} exists with another value"),
                ));
            }
        }
        let first = self.versions.is_empty();
        self.take_label(Stage::Pending.as_str());
        let v = self
            .versions
            .entry(version_id.to_string())
            .or_insert_with(|| StoredVersion {
                secret,
                stages: Vec::new(),
                created_at: Utc::now(),
            });
        v.stages.push(Stage::Pending.as_str().to_string());
        if first {
            v.stages.push(Stage::Current.as_str().to_string());
        }
        Ok(())
    }

    fn promote(&mut self, version_id: &str) -> Result<()> {
        if !self.versions.contains_key(version_id) {
            return Err(Error::new(
                ErrorKind::NotFound,
                format!("no version {version_id:?} to promote"),
            ));
        }
        let current = self
            .versions
            .iter()
            .find(|(_, v)| v.stages.iter().any(|s| s == Stage::Current.as_str()))
            .map(|(id, _)| id.clone());
        if current.as_deref() != Some(version_id) {
            self.take_label(Stage::Previous.as_str());
            self.take_label(Stage::Current.as_str());
            if let Some(old) = current.and_then(|id| self.versions.get_mut(&id)) {
                old.stages.push(Stage::Previous.as_str().to_string());
            }
            if let Some(v) = self.versions.get_mut(version_id) {
                v.stages.push(Stage::Current.as_str().to_string());
            }
        }
        if let Some(v) = self.versions.get_mut(version_id) {
            v.stages.retain(|s| s != Stage::Pending.as_str());
        }
        // Versions without a label are never read again; keep no stale passwords around.
        self.versions.retain(|_, v| !v.stages.is_empty());
        Ok(())
    }
}

/// A publisher in this process's memory: for tests and single-process hosts. Clones share
/// the same secret.
///
/// ```
/// use leasehold_core::static_role::MemoryPublisher;
/// let publisher = MemoryPublisher::new("orders-cache");
/// ```
#[derive(Clone)]
pub struct MemoryPublisher {
    name: String,
    inner: Arc<Mutex<Versions>>,
}

impl fmt::Debug for MemoryPublisher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryPublisher")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl MemoryPublisher {
    /// An empty secret called `name`.
    pub fn new(name: impl Into<String>) -> Self {
        MemoryPublisher {
            name: name.into(),
            inner: Arc::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Versions> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl StaticRolePublisher for MemoryPublisher {
    fn location(&self) -> String {
        format!("memory:{}", self.name)
    }

    async fn get(&self, stage: Stage) -> Result<Option<PublishedVersion>> {
        self.lock().get(stage)
    }

    async fn put_pending(&self, version_id: &str, credential: &StaticCredential) -> Result<()> {
        self.lock().put_pending(version_id, credential)
    }

    async fn promote(&self, version_id: &str) -> Result<()> {
        self.lock().promote(version_id)
    }
}

/// A publisher that keeps the secret in a JSON file (mode 0600 on Unix), replaced atomically
/// on each change: for processes on one host, or a file system every instance mounts. Only
/// the elected rotator writes; readers read.
///
/// ```
/// use leasehold_core::static_role::FilePublisher;
/// let publisher = FilePublisher::new("/run/leasehold/orders-cache.json");
/// ```
#[derive(Clone)]
pub struct FilePublisher {
    path: PathBuf,
}

impl fmt::Debug for FilePublisher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FilePublisher")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl FilePublisher {
    /// A publisher writing `path` (created on the first rotation).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        FilePublisher { path: path.into() }
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn io_error(&self, what: &str, e: std::io::Error) -> Error {
        Error::new(
            ErrorKind::Store,
            format!("{what} {}: {e}", self.path.display()),
        )
        .temporary()
    }

    async fn load(&self) -> Result<Versions> {
        match tokio::fs::read(&self.path).await {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                Error::new(
                    ErrorKind::Store,
                    format!(
                        "{} is not a static role file (line {}, column {})",
                        self.path.display(),
                        e.line(),
                        e.column()
                    ),
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Versions::default()),
            Err(e) => Err(self.io_error("reading", e)),
        }
    }

    async fn save(&self, versions: &Versions) -> Result<()> {
        let body = serde_json::to_vec_pretty(versions)
            .map_err(|e| Error::new(ErrorKind::Unexpected, e.to_string()))?;
        let tmp = self.path.with_extension(format!(
            "tmp-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        let mut opts = tokio::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        opts.mode(0o600);
        let write = async {
            use tokio::io::AsyncWriteExt;
            let mut f = opts.open(&tmp).await?;
            f.write_all(&body).await?;
            f.sync_all().await?;
            tokio::fs::rename(&tmp, &self.path).await
        };
        if let Err(e) = write.await {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(self.io_error("writing", e));
        }
        Ok(())
    }
}

#[async_trait]
impl StaticRolePublisher for FilePublisher {
    fn location(&self) -> String {
        format!("file:{}", self.path.display())
    }

    async fn validate(&self) -> Result<()> {
        let dir = self
            .path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        if !tokio::fs::metadata(dir).await.is_ok_and(|m| m.is_dir()) {
            return Err(Error::invalid_config(format!(
                "publish path: directory {} does not exist",
                dir.display()
            )));
        }
        self.load().await.map(|_| ())
    }

    async fn get(&self, stage: Stage) -> Result<Option<PublishedVersion>> {
        self.load().await?.get(stage)
    }

    async fn put_pending(&self, version_id: &str, credential: &StaticCredential) -> Result<()> {
        let mut v = self.load().await?;
        v.put_pending(version_id, credential)?;
        self.save(&v).await
    }

    async fn promote(&self, version_id: &str) -> Result<()> {
        let mut v = self.load().await?;
        v.promote(version_id)?;
        self.save(&v).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::{ExposeSecret, SecretString};

    fn cred(p: &str) -> StaticCredential {
        StaticCredential::new("app", SecretString::from(p.to_string()))
    }

    async fn labels_follow_secrets_manager(p: &dyn StaticRolePublisher) {
        assert!(p.get(Stage::Current).await.unwrap().is_none());
        p.put_pending("v1", &cred("password-one-xxxxxxx"))
            .await
            .unwrap();
        // The first version is current at once, as in Secrets Manager.
        assert_eq!(
            p.get(Stage::Current).await.unwrap().unwrap().version_id,
            "v1"
        );
        p.put_pending("v1", &cred("password-one-xxxxxxx"))
            .await
            .unwrap();
        p.promote("v1").await.unwrap();
        assert!(p.get(Stage::Pending).await.unwrap().is_none());
        p.put_pending("v2", &cred("password-two-xxxxxxx"))
            .await
            .unwrap();
        assert_eq!(
            p.get(Stage::Current).await.unwrap().unwrap().version_id,
            "v1"
        );
        assert_eq!(
            p.get(Stage::Pending).await.unwrap().unwrap().version_id,
            "v2"
        );
        p.promote("v2").await.unwrap();
        p.promote("v2").await.unwrap();
        let cur = p.get(Stage::Current).await.unwrap().unwrap();
        assert_eq!(cur.version_id, "v2");
        assert_eq!(
            cur.credential.password.expose_secret(),
            "password-two-xxxxxxx"
        );
        assert_eq!(
            p.get(Stage::Previous).await.unwrap().unwrap().version_id,
            "v1"
        );
        assert!(p.get(Stage::Pending).await.unwrap().is_none());
        p.put_pending("v3", &cred("password-three-xxxxx"))
            .await
            .unwrap();
        p.promote("v3").await.unwrap();
        assert_eq!(
            p.get(Stage::Previous).await.unwrap().unwrap().version_id,
            "v2"
        );
    }

    #[tokio::test]
    async fn memory_publisher_labels() {
        labels_follow_secrets_manager(&MemoryPublisher::new("t")).await;
    }

    #[tokio::test]
    async fn file_publisher_labels() {
        let dir = std::env::temp_dir().join(format!(
            "leasehold-file-publisher-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let p = FilePublisher::new(dir.join("role.json"));
        p.validate().await.unwrap();
        labels_follow_secrets_manager(&p).await;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(p.path()).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0);
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
