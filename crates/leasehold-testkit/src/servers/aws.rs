//! The AWS emulator (moto + the leasehold extension in `tests/aws-emulator/`), one per test
//! process, and typed access to its control endpoint.
//!
//! Over 700 lines because it is one typed client per emulator extension operation, next to the
//! process it talks to; splitting by service would separate each call from its lifecycle.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::sync::OnceCell;

use super::{free_port, http, skip_or_panic};

/// The AWS emulator: moto run as a server on a loopback port with leasehold's extension
/// (ElastiCache user groups, MemoryDB ACLs, lasting `modifying` states, a Redis per cache,
/// fault injection). One instance is shared by all tests of a process; tests keep apart by
/// using unique resource names and scoping faults and counters to their own resources.
///
/// The Python interpreter is `LEASEHOLD_PYTHON`, else `.venv/bin/python` at the workspace root
/// (`scripts/test` creates it). `LEASEHOLD_AWS_EMULATOR_URL=http://127.0.0.1:PORT` uses an
/// emulator that is already running instead. The emulator exits by itself when the test process
/// does. The control API is documented in `tests/aws-emulator/README.md`.
///
/// # Examples
///
/// ```no_run
/// # async fn t() {
/// use leasehold_testkit::servers::{AwsEmulator, FaultSpec};
/// let Some(aws) = AwsEmulator::shared("doc_example").await else { return };
/// let config = aws.sdk_config().await;
/// # let _ = config;
/// // The next ModifyUserGroup call on "my-group" is throttled.
/// aws.inject_fault(FaultSpec::throttle("ModifyUserGroup").resource("my-group")).await;
/// let calls = aws.call_count("ModifyUserGroup", Some("my-group")).await;
/// # let _ = calls;
/// # }
/// ```
pub struct AwsEmulator {
    port: u16,
    // Kept so the process is not reaped early; the emulator stops itself when we exit.
    _child: Mutex<Option<Child>>,
}

impl std::fmt::Debug for AwsEmulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsEmulator")
            .field("endpoint_url", &self.endpoint_url())
            .finish_non_exhaustive()
    }
}

static SHARED: OnceCell<Result<Arc<AwsEmulator>, String>> = OnceCell::const_new();

/// The region every emulator client uses.
pub const EMULATOR_REGION: &str = "us-east-1";

impl AwsEmulator {
    /// The emulator shared by this test process, started on first use. `None` (after
    /// [`skip_or_panic`]) when no Python with moto is available or it does not come up.
    pub async fn shared(test: &str) -> Option<Arc<AwsEmulator>> {
        let result = SHARED
            .get_or_init(|| async { Self::start().await.map(Arc::new) })
            .await;
        match result {
            Ok(emulator) => Some(emulator.clone()),
            Err(reason) => {
                skip_or_panic(test, reason);
                None
            }
        }
    }

    async fn start() -> Result<AwsEmulator, String> {
        if let Ok(url) = std::env::var("LEASEHOLD_AWS_EMULATOR_URL") {
            let port = url
                .rsplit(':')
                .next()
                .and_then(|p| p.trim_end_matches('/').parse().ok())
                .ok_or_else(|| format!("LEASEHOLD_AWS_EMULATOR_URL {url:?} has no port"))?;
            let emulator = AwsEmulator {
                port,
                _child: Mutex::new(None),
            };
            emulator.health().await?;
            return Ok(emulator);
        }
        let root = workspace_root();
        let python = python(&root)?;
        let script = root.join("tests/aws-emulator/server.py");
        if !script.is_file() {
            return Err(format!("{} not found", script.display()));
        }
        let mut last_error = String::new();
        for _ in 0..3 {
            let port = free_port().map_err(|e| format!("no free port: {e}"))?;
            let log_path = std::env::temp_dir().join(format!(
                "leasehold-emulator-{}-{port}.log",
                std::process::id()
            ));
            let log = std::fs::File::create(&log_path)
                .map_err(|e| format!("cannot create {}: {e}", log_path.display()))?;
            let log2 = log
                .try_clone()
                .map_err(|e| format!("cannot clone log handle: {e}"))?;
            let mut child = Command::new(&python)
                .arg(&script)
                .args(["--port", &port.to_string()])
                .stdin(Stdio::null())
                .stdout(log)
                .stderr(log2)
                .spawn()
                .map_err(|e| format!("cannot run {}: {e}", python.display()))?;
            let outcome = wait_ready(&mut child, port, Duration::from_secs(60)).await;
            let log_text = std::fs::read_to_string(&log_path).unwrap_or_default();
            // The child keeps its open handle; the name is not needed any more.
            let _ = std::fs::remove_file(&log_path);
            match outcome {
                Ok(()) => {
                    return Ok(AwsEmulator {
                        port,
                        _child: Mutex::new(Some(child)),
                    })
                }
                Err(e) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    let tail: Vec<&str> = log_text.lines().rev().take(5).collect();
                    last_error = format!(
                        "AWS emulator ({} {}) did not come up: {e}; log: {}",
                        python.display(),
                        script.display(),
                        tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
                    );
                }
            }
        }
        Err(last_error)
    }

    /// `http://127.0.0.1:PORT`: the endpoint URL for every AWS client.
    pub fn endpoint_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The loopback port the emulator listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// An SDK config for the emulator: region `us-east-1`, static test credentials, the
    /// emulator's endpoint URL. Build a fresh one per test (SDK clients are bound to the
    /// runtime that first uses them).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn t() {
    /// # let aws = leasehold_testkit::servers::AwsEmulator::shared("doc").await.unwrap();
    /// let config = aws.sdk_config().await;
    /// assert_eq!(config.region().unwrap().as_ref(), "us-east-1");
    /// # }
    /// ```
    pub async fn sdk_config(&self) -> aws_config::SdkConfig {
        aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new(EMULATOR_REGION))
            .endpoint_url(self.endpoint_url())
            .credentials_provider(aws_credential_types::Credentials::new(
                "testing",
                "testing",
                None,
                None,
                "leasehold-emulator",
            ))
            .load()
            .await
    }

    async fn control(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        match http::request(self.port, method, path, body.as_ref()).await {
            Ok((200, value)) => value,
            Ok((status, value)) => panic!("emulator control {method} {path}: {status} {value}"),
            Err(e) => panic!("emulator control {method} {path}: {e}"),
        }
    }

    async fn health(&self) -> Result<Value, String> {
        match http::request(self.port, "GET", "/_leasehold/health", None).await {
            Ok((200, value)) => Ok(value),
            Ok((status, value)) => Err(format!("health answered {status}: {value}")),
            Err(e) => Err(e),
        }
    }

    /// Whether caches get a Redis mirror (false when the emulator found no `redis-server`).
    ///
    /// # Panics
    ///
    /// When the control endpoint does not answer.
    pub async fn has_mirror(&self) -> bool {
        self.control("GET", "/_leasehold/health", None).await["mirror"] == json!(true)
    }

    /// Inject a fault; returns its id. See [`FaultSpec`].
    ///
    /// # Panics
    ///
    /// When the emulator refuses the spec or does not answer.
    pub async fn inject_fault(&self, spec: FaultSpec) -> u64 {
        let v = self
            .control("POST", "/_leasehold/faults", Some(spec.to_json()))
            .await;
        v["id"].as_u64().unwrap_or_default()
    }

    /// Like [`AwsEmulator::inject_fault`], but a spec the emulator refuses is an `Err` with its
    /// message (e.g. `probability must be > 0 and <= 1, not 0.0`) instead of a panic.
    ///
    /// # Panics
    ///
    /// When the control endpoint does not answer.
    pub async fn try_inject_fault(&self, spec: FaultSpec) -> Result<u64, String> {
        let path = "/_leasehold/faults";
        match http::request(self.port, "POST", path, Some(&spec.to_json())).await {
            Ok((200, v)) => Ok(v["id"].as_u64().unwrap_or_default()),
            Ok((_, v)) => Err(v["error"].as_str().unwrap_or_default().to_string()),
            Err(e) => panic!("emulator control POST {path}: {e}"),
        }
    }

    /// Remove the pending faults of `operation` (all operations when `None`), optionally only
    /// those scoped to `resource`. Returns how many were removed.
    ///
    /// # Panics
    ///
    /// When the control endpoint does not answer.
    pub async fn clear_faults(&self, operation: Option<&str>, resource: Option<&str>) -> u64 {
        let path = with_query(
            "/_leasehold/faults",
            &[("operation", operation), ("resource", resource)],
        );
        self.control("DELETE", &path, None).await["cleared"]
            .as_u64()
            .unwrap_or_default()
    }

    /// Removes the pending faults that match every given filter (all of them when each is
    /// `None`) and returns them as the emulator reports them, with their final `matched` and
    /// `fired` counters: how a test learns how often an armed fault fired.
    ///
    /// # Panics
    ///
    /// When the control endpoint does not answer.
    pub async fn take_faults(
        &self,
        service: Option<&str>,
        operation: Option<&str>,
        resource: Option<&str>,
    ) -> Vec<Value> {
        let path = with_query(
            "/_leasehold/faults",
            &[
                ("operation", operation),
                ("resource", resource),
                ("service", service),
            ],
        );
        match self.control("DELETE", &path, None).await["faults"].take() {
            Value::Array(faults) => faults,
            _ => Vec::new(),
        }
    }

    /// The faults still pending, as the emulator reports them (`operation`, `resource`,
    /// `remaining`, `matched`, `fired`, ...).
    ///
    /// # Panics
    ///
    /// When the control endpoint does not answer.
    pub async fn pending_faults(&self) -> Vec<Value> {
        match self.control("GET", "/_leasehold/faults", None).await["faults"].take() {
            Value::Array(faults) => faults,
            _ => Vec::new(),
        }
    }

    /// How many calls of `operation` (e.g. `"ModifyUserGroup"`) the emulator has seen, in all
    /// or only for `resource` (the call's `UserGroupId`, `ACLName`, `UserId`, `UserName`, ...,
    /// case-insensitive). Faulted calls count too.
    ///
    /// # Panics
    ///
    /// When the control endpoint does not answer.
    pub async fn call_count(&self, operation: &str, resource: Option<&str>) -> u64 {
        self.call_count_in(None, operation, resource).await
    }

    /// How many calls of `operation` for `resource` succeeded (`ModifyUserGroup` calls a group
    /// took, say), as opposed to [`refused_calls`](Self::refused_calls).
    ///
    /// # Panics
    ///
    /// When the control endpoint does not answer.
    pub async fn accepted_calls(&self, operation: &str, resource: Option<&str>) -> u64 {
        let op = format!("{operation}:accepted");
        self.call_count_in(None, &op, resource).await
    }

    /// How many calls of `operation` for `resource` answered an AWS error (injected or not).
    ///
    /// # Panics
    ///
    /// When the control endpoint does not answer.
    pub async fn refused_calls(&self, operation: &str, resource: Option<&str>) -> u64 {
        let op = format!("{operation}:refused");
        self.call_count_in(None, &op, resource).await
    }

    /// [`AwsEmulator::call_count`] limited to one service (`"elasticache"`, `"memorydb"`,
    /// `"iam"`, `"sts"`).
    ///
    /// # Panics
    ///
    /// When the control endpoint does not answer.
    pub async fn call_count_in(
        &self,
        service: Option<&str>,
        operation: &str,
        resource: Option<&str>,
    ) -> u64 {
        let path = with_query(
            "/_leasehold/calls",
            &[
                ("operation", Some(operation)),
                ("resource", resource),
                ("service", service),
            ],
        );
        self.control("GET", &path, None).await["count"]
            .as_u64()
            .unwrap_or_default()
    }

    /// How long a `kind` stays `creating` / `modifying` / `deleting` after a change: for one
    /// resource id, or the default for all when `id` is `None`. Takes effect for the next change.
    ///
    /// # Panics
    ///
    /// When the control endpoint does not answer.
    pub async fn set_modifying(&self, kind: TransitionKind, id: Option<&str>, duration: Duration) {
        let body = json!({ "kind": kind.as_str(), "id": id, "seconds": duration.as_secs_f64() });
        self.control("POST", "/_leasehold/timing", Some(body)).await;
    }

    /// The Redis that stands for a cache (its users follow the attached user group / ACL), or
    /// `None` if the cache is unknown or has no mirror.
    ///
    /// # Panics
    ///
    /// When the control endpoint does not answer.
    pub async fn mirror(&self, kind: MirrorKind, id: &str) -> Option<MirrorEndpoint> {
        let path = with_query(
            "/_leasehold/mirror",
            &[("kind", Some(kind.as_str())), ("id", Some(id))],
        );
        match http::request(self.port, "GET", &path, None).await {
            Ok((200, v)) => Some(MirrorEndpoint {
                port: v["port"].as_u64().and_then(|p| u16::try_from(p).ok())?,
                admin_user: v["admin_user"].as_str()?.to_string(),
                admin_password: v["admin_password"].as_str()?.to_string(),
            }),
            Ok(_) => None,
            Err(e) => panic!("emulator control GET {path}: {e}"),
        }
    }

    /// Clear every fault, counter and timing. The emulator is shared by the tests of a
    /// process: only a test that runs alone may call this.
    ///
    /// # Panics
    ///
    /// When the control endpoint does not answer.
    pub async fn reset(&self) {
        self.control("POST", "/_leasehold/reset", None).await;
    }
}

/// A fault for [`AwsEmulator::inject_fault`]: what to match and what to do.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use leasehold_testkit::servers::FaultSpec;
/// // Fail the next two DeleteUser calls for "u-1" with HTTP 500.
/// let spec = FaultSpec::fail("DeleteUser", "InternalFailure").status(500).resource("u-1").times(2);
/// // Delay every UpdateACL by 300 ms until cleared.
/// let slow = FaultSpec::latency("UpdateACL", Duration::from_millis(300)).always();
/// // Throttle about 10 % of all IAM calls, the same calls on every run.
/// let some = FaultSpec::throttle("*").service("iam").always().probability(0.1).seed(42);
/// # let _ = (spec, slow, some);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct FaultSpec {
    /// The AWS operation name, e.g. `"ModifyUserGroup"`; `"*"`: every operation of `service`.
    pub operation: String,
    /// Only calls to this service (`"elasticache"`, `"memorydb"`, `"iam"`, `"sts"`).
    pub service: Option<String>,
    /// Only calls about this resource (case-insensitive; see [`AwsEmulator::call_count`]).
    pub resource: Option<String>,
    /// How many matching calls it applies to; `None`: every one until cleared.
    pub count: Option<u32>,
    /// The AWS error code to answer with; `None` with `throttle` false: latency only.
    pub error_code: Option<String>,
    /// Answer with the service's throttling code (`Throttling` / `ThrottlingException`).
    pub throttle: bool,
    /// The HTTP status of the error answer.
    pub status: u16,
    /// The error message (a default names the code).
    pub message: Option<String>,
    /// Delay before answering (or before passing the call on).
    pub latency: Duration,
    /// Fire on this share of the matching calls (`0 < p <= 1`) instead of on every one; the
    /// emulator refuses other values.
    pub probability: Option<f64>,
    /// Seed of the `probability` draws, for a reproducible run (needs `probability`).
    pub seed: Option<u64>,
}

impl FaultSpec {
    fn new(operation: &str) -> FaultSpec {
        FaultSpec {
            operation: operation.to_string(),
            service: None,
            resource: None,
            count: Some(1),
            error_code: None,
            throttle: false,
            status: 400,
            message: None,
            latency: Duration::ZERO,
            probability: None,
            seed: None,
        }
    }

    /// Fail the next call of `operation` with the AWS error `error_code` (HTTP 400).
    pub fn fail(operation: &str, error_code: &str) -> FaultSpec {
        FaultSpec {
            error_code: Some(error_code.to_string()),
            ..Self::new(operation)
        }
    }

    /// Throttle the next call of `operation` (HTTP 400 with the service's throttling code).
    pub fn throttle(operation: &str) -> FaultSpec {
        FaultSpec {
            throttle: true,
            ..Self::new(operation)
        }
    }

    /// Delay the next call of `operation` by `latency`, then let it through.
    pub fn latency(operation: &str, latency: Duration) -> FaultSpec {
        FaultSpec {
            latency,
            ..Self::new(operation)
        }
    }

    /// Only for calls about `resource`.
    pub fn resource(mut self, resource: &str) -> FaultSpec {
        self.resource = Some(resource.to_string());
        self
    }

    /// Only for calls to `service`.
    pub fn service(mut self, service: &str) -> FaultSpec {
        self.service = Some(service.to_string());
        self
    }

    /// Apply to the next `n` matching calls.
    pub fn times(mut self, n: u32) -> FaultSpec {
        self.count = Some(n.max(1));
        self
    }

    /// Apply to every matching call until cleared.
    pub fn always(mut self) -> FaultSpec {
        self.count = None;
        self
    }

    /// Answer with this HTTP status.
    pub fn status(mut self, status: u16) -> FaultSpec {
        self.status = status;
        self
    }

    /// Answer with this error message.
    pub fn message(mut self, message: &str) -> FaultSpec {
        self.message = Some(message.to_string());
        self
    }

    /// Also wait `latency` before answering.
    pub fn with_latency(mut self, latency: Duration) -> FaultSpec {
        self.latency = latency;
        self
    }

    /// Fire on a random share `p` (`0 < p <= 1`) of the matching calls rather than on every
    /// one. With [`times`](Self::times) it fires on at most that many calls; with
    /// [`always`](Self::always) until cleared. Faults on the same calls are tried in the order
    /// they were injected, and one that does not fire lets the next one try.
    pub fn probability(mut self, p: f64) -> FaultSpec {
        self.probability = Some(p);
        self
    }

    /// Seed the [`probability`](Self::probability) draws: the same seed fires on the same
    /// calls of the same sequence of matching calls.
    pub fn seed(mut self, seed: u64) -> FaultSpec {
        self.seed = Some(seed);
        self
    }

    fn to_json(&self) -> Value {
        json!({
            "operation": self.operation,
            "service": self.service,
            "resource": self.resource,
            "count": self.count.map(i64::from).unwrap_or(0),
            "error_code": self.error_code,
            "throttle": self.throttle,
            "status": self.status,
            "message": self.message,
            "latency_ms": u64::try_from(self.latency.as_millis()).unwrap_or(u64::MAX),
            "probability": self.probability,
            "seed": self.seed,
        })
    }
}

/// What [`AwsEmulator::set_modifying`] sets the transition time of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TransitionKind {
    /// ElastiCache user groups (`creating`, `modifying`, `deleting`; default 1 s).
    UserGroup,
    /// MemoryDB ACLs (`creating`, `modifying`, `deleting`; default 1 s).
    Acl,
    /// ElastiCache and MemoryDB users (`creating`, `modifying`, `deleting`; default 0.2 s).
    User,
    /// Serverless caches (`creating`, `deleting`; default 0 s).
    Cluster,
}

impl TransitionKind {
    fn as_str(self) -> &'static str {
        match self {
            TransitionKind::UserGroup => "user_group",
            TransitionKind::Acl => "acl",
            TransitionKind::User => "user",
            TransitionKind::Cluster => "cluster",
        }
    }
}

/// Which kind of cache [`AwsEmulator::mirror`] looks up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum MirrorKind {
    /// An ElastiCache replication group (by `ReplicationGroupId`).
    ReplicationGroup,
    /// An ElastiCache serverless cache (by `ServerlessCacheName`).
    ServerlessCache,
    /// A MemoryDB cluster (by `ClusterName`).
    MemoryDbCluster,
}

impl MirrorKind {
    fn as_str(self) -> &'static str {
        match self {
            MirrorKind::ReplicationGroup => "replication_group",
            MirrorKind::ServerlessCache => "serverless_cache",
            MirrorKind::MemoryDbCluster => "memorydb_cluster",
        }
    }
}

/// The Redis that stands for an emulated cache. The emulator manages its users through its own
/// admin user, which tests may use to inspect it (`ACL LIST`).
#[derive(Clone)]
pub struct MirrorEndpoint {
    /// Its loopback port (also reported by the Describe* call as the cache's endpoint).
    pub port: u16,
    /// The emulator's own user on it.
    pub admin_user: String,
    /// That user's password.
    pub admin_password: String,
}

impl MirrorEndpoint {
    /// `redis://127.0.0.1:PORT` (no user: authenticate per connection).
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// `redis://ADMIN:PASSWORD@127.0.0.1:PORT`.
    pub fn admin_url(&self) -> String {
        format!(
            "redis://{}:{}@127.0.0.1:{}",
            self.admin_user, self.admin_password, self.port
        )
    }
}

impl std::fmt::Debug for MirrorEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MirrorEndpoint")
            .field("port", &self.port)
            .field("admin_user", &self.admin_user)
            .finish_non_exhaustive()
    }
}

fn with_query(path: &str, pairs: &[(&str, Option<&str>)]) -> String {
    let query: Vec<String> = pairs
        .iter()
        .filter_map(|(k, v)| v.map(|v| format!("{k}={}", percent_encode(v))))
        .collect();
    if query.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{}", query.join("&"))
    }
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The workspace root: two levels above this crate's manifest.
pub(crate) fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

fn python(root: &Path) -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("LEASEHOLD_PYTHON").filter(|p| !p.is_empty()) {
        let path = PathBuf::from(p);
        return super::which(&path.to_string_lossy())
            .ok_or_else(|| format!("LEASEHOLD_PYTHON={} not found", path.display()));
    }
    let venv = root.join(".venv/bin/python");
    if venv.is_file() {
        return Ok(venv);
    }
    Err(format!(
        "no Python for the AWS emulator: set LEASEHOLD_PYTHON or create {} \
         (scripts/test does: python3 -m venv .venv && .venv/bin/pip install -r tests/aws-emulator/requirements.txt)",
        venv.display()
    ))
}

async fn wait_ready(child: &mut Child, port: u16, timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("exited with {status}"));
        }
        if let Ok((200, _)) = http::request(port, "GET", "/_leasehold/health", None).await {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("no answer on port {port} after {timeout:?}"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_encoded() {
        assert_eq!(
            with_query("/x", &[("a", Some("b c/d")), ("e", None)]),
            "/x?a=b%20c%2Fd"
        );
        assert_eq!(with_query("/x", &[("e", None)]), "/x");
    }

    #[test]
    fn fault_specs_serialise_as_the_control_api_expects() {
        let v = FaultSpec::fail("DeleteUser", "InternalFailure")
            .status(500)
            .resource("u1")
            .times(2)
            .with_latency(Duration::from_millis(5))
            .to_json();
        assert_eq!(v["operation"], "DeleteUser");
        assert_eq!(v["error_code"], "InternalFailure");
        assert_eq!(v["status"], 500);
        assert_eq!(v["resource"], "u1");
        assert_eq!(v["count"], 2);
        assert_eq!(v["latency_ms"], 5);
        let always = FaultSpec::throttle("UpdateACL").always().to_json();
        assert_eq!(always["count"], 0);
        assert_eq!(always["throttle"], true);
        assert_eq!(always["probability"], Value::Null);
        assert_eq!(always["seed"], Value::Null);
        let some = FaultSpec::throttle("*")
            .service("iam")
            .always()
            .probability(0.25)
            .seed(7)
            .to_json();
        assert_eq!(some["operation"], "*");
        assert_eq!(some["probability"], 0.25);
        assert_eq!(some["seed"], 7);
    }

    #[test]
    fn mirror_debug_hides_the_admin_password() {
        let m = MirrorEndpoint {
            port: 1,
            admin_user: "leasehold-mirror".into(),
            admin_password: "hunter2-secret".into(),
        };
        assert!(!format!("{m:?}").contains("hunter2-secret"));
    }
}
