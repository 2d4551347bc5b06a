use std::sync::Mutex;

use async_trait::async_trait;
use secrecy::SecretString;

use super::*;
use crate::coordination::MemoryCoordination;
use crate::password::PasswordPolicy;
use crate::static_role::{MemoryPublisher, StaticUser};

/// A user that holds at most two passwords, like ElastiCache.
#[derive(Debug, Default)]
struct FakeUser {
    passwords: Mutex<Vec<String>>,
    sets: Mutex<u32>,
    fail_sets: Mutex<u32>,
}

impl FakeUser {
    fn accepts(&self, p: &str) -> bool {
        self.passwords.lock().unwrap().iter().any(|x| x == p)
    }
    fn sets(&self) -> u32 {
        *self.sets.lock().unwrap()
    }
}

#[async_trait]
impl StaticRoleTarget for FakeUser {
    fn kind(&self) -> &'static str {
        "fake"
    }
    fn password_policy(&self) -> PasswordPolicy {
        PasswordPolicy::redis()
    }
    async fn validate(&self) -> Result<()> {
        Ok(())
    }
    async fn user(&self) -> Result<StaticUser> {
        Ok(StaticUser::new("app", None))
    }
    async fn set_passwords(&self, old: Option<&SecretString>, new: &SecretString) -> Result<()> {
        {
            let mut f = self.fail_sets.lock().unwrap();
            if *f > 0 {
                *f -= 1;
                return Err(Error::new(ErrorKind::ProviderUnavailable, "injected").temporary());
            }
        }
        *self.sets.lock().unwrap() += 1;
        let mut v: Vec<String> = old
            .map(|o| o.expose_secret().to_string())
            .into_iter()
            .collect();
        v.push(new.expose_secret().to_string());
        *self.passwords.lock().unwrap() = v;
        Ok(())
    }
    async fn drop_password(&self, old: &SecretString, _current: &SecretString) -> Result<()> {
        self.passwords
            .lock()
            .unwrap()
            .retain(|p| p != old.expose_secret());
        Ok(())
    }
    async fn test(&self, _username: &str, password: &SecretString) -> Result<()> {
        if self.accepts(password.expose_secret()) {
            Ok(())
        } else {
            Err(Error::new(ErrorKind::PermissionDenied, "AUTH refused"))
        }
    }
}

fn options(period_ms: u64, grace_ms: u64) -> StaticRoleOptions {
    StaticRoleOptions::new(RotationSchedule::every(Duration::from_millis(period_ms)))
        .grace(Duration::from_millis(grace_ms))
        .claim_hold(Duration::from_millis(600))
        .poll(Duration::from_millis(50))
        .test_timeout(Duration::from_millis(500))
}

struct Fleet {
    user: Arc<FakeUser>,
    publisher: MemoryPublisher,
    coordination: Arc<MemoryCoordination>,
}

impl Fleet {
    fn new() -> Self {
        Fleet {
            user: Arc::new(FakeUser::default()),
            publisher: MemoryPublisher::new("t"),
            coordination: Arc::new(MemoryCoordination::new()),
        }
    }
    fn rotator(&self, owner: &str, o: StaticRoleOptions) -> Arc<StaticRoleRotator> {
        Arc::new(
            StaticRoleRotator::new(
                "t",
                self.user.clone(),
                Arc::new(self.publisher.clone()),
                self.coordination.clone(),
                owner,
                o,
            )
            .unwrap(),
        )
    }
    async fn current(&self) -> String {
        self.publisher
            .get(Stage::Current)
            .await
            .unwrap()
            .unwrap()
            .credential
            .password
            .expose_secret()
            .to_string()
    }
}

#[tokio::test]
async fn rotation_keeps_both_passwords_for_the_grace_then_drops_the_old() {
    let f = Fleet::new();
    let r = f.rotator("a", options(60_000, 200));
    assert!(matches!(
        r.tick().await.unwrap(),
        RotationOutcome::Rotated { resumed: false, .. }
    ));
    let first = f.current().await;
    assert!(f.user.accepts(&first));
    assert!(matches!(
        r.tick().await.unwrap(),
        RotationOutcome::Idle { .. }
    ));
    assert!(matches!(
        r.rotate_now(Duration::ZERO).await.unwrap(),
        RotationOutcome::Rotated { .. }
    ));
    let second = f.current().await;
    assert_ne!(first, second);
    assert!(f.user.accepts(&first) && f.user.accepts(&second));
    assert_eq!(
        f.publisher
            .get(Stage::Previous)
            .await
            .unwrap()
            .unwrap()
            .credential
            .password
            .expose_secret(),
        first
    );
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(r.tick().await.unwrap(), RotationOutcome::DroppedPrevious);
    assert!(!f.user.accepts(&first) && f.user.accepts(&second));
}

#[tokio::test]
async fn three_instances_rotate_once_per_period() {
    let f = Fleet::new();
    let tasks: Vec<_> = ["a", "b", "c"]
        .iter()
        .map(|o| f.rotator(o, options(1000, 200)).start())
        .collect();
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let sets = f.user.sets();
    // At 0, 1, 2 and 3 s: four rotations, not twelve.
    assert_eq!(sets, 4, "{sets} rotations");
    for t in tasks {
        t.stop().await;
    }
}

#[tokio::test]
async fn an_interrupted_rotation_is_finished_by_the_next_holder() {
    let f = Fleet::new();
    let a = f.rotator("a", options(60_000, 100));
    a.tick().await.unwrap();
    let first = f.current().await;
    // The holder stores a pending version, then fails to set it (as if it died there).
    *f.user.fail_sets.lock().unwrap() = 1;
    assert!(a.rotate_now(Duration::ZERO).await.is_err());
    let pending = f.publisher.get(Stage::Pending).await.unwrap().unwrap();
    assert_eq!(
        f.current().await,
        first,
        "readers still get a working password"
    );
    assert!(f.user.accepts(&first));
    // Another instance cannot act while the claim is held, and takes over once it lapses.
    let b = f.rotator("b", options(60_000, 100));
    assert!(
        matches!(b.tick().await.unwrap(), RotationOutcome::NotHolder { holder: Some(h) } if h == "a")
    );
    tokio::time::sleep(Duration::from_millis(650)).await;
    match b.tick().await.unwrap() {
        RotationOutcome::Rotated {
            version_id,
            resumed,
        } => {
            assert!(resumed);
            assert_eq!(version_id, pending.version_id);
        }
        other => panic!("{other:?}"),
    }
    assert!(f.user.accepts(&first) && f.user.accepts(&f.current().await));
}

#[tokio::test]
async fn rotate_now_from_a_non_holder_is_carried_out_by_the_holder() {
    let f = Fleet::new();
    let holder = f.rotator("a", options(60_000, 100));
    let task = holder.clone().start();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let first = f.current().await;
    let other = f.rotator("b", options(60_000, 100));
    let out = other.rotate_now(Duration::from_secs(3)).await.unwrap();
    assert!(matches!(out, RotationOutcome::Rotated { .. }), "{out:?}");
    assert_ne!(f.current().await, first);
    task.stop().await;
}

#[test]
fn options_refuse_a_grace_as_long_as_the_period() {
    assert!(options(1000, 1000).validate().is_err());
    assert!(options(1000, 100).validate().is_ok());
    assert!(options(400, 100).validate().is_err());
    assert!(
        StaticRoleOptions::new(RotationSchedule::every(Duration::from_secs(60)))
            .poll(Duration::from_secs(60))
            .validate()
            .is_err()
    );
}

#[test]
fn version_ids_look_like_uuids() {
    let id = new_version_id();
    assert_eq!(id.len(), 36);
    assert_eq!(id.matches('-').count(), 4);
}
