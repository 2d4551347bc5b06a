//! The CLI against the AWS emulator's IAM, with a SQLite store: issue, list, lookup, renew,
//! revoke (by id, by secret, forced), reconcile, and `run` revoking an expired lease.

mod support;

use std::time::Duration;

use leasehold_testkit::servers::{AwsEmulator, FaultSpec};
use serde_json::Value;
use support::{signal, suffix, ts, wait_exit, wait_until, Cli};

fn config(endpoint: &str, path: &str, extra_manager: &str) -> String {
    format!(
        r#"
[store]
url = "sqlite://{{dir}}/leasehold.db"

[manager]
max_idle = "1s"
retry_initial_delay = "1s"
{extra_manager}

[[secrets]]
name = "reports"
type = "aws-iam"
default_ttl = "15m"
max_ttl = "1h"
region = "us-east-1"
endpoint_url = "{endpoint}"
access_key_id = "testing"
secret_access_key = "testing"
credential_type = "iam_user"
path = "{path}"
policy_document = '{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow","Action":"s3:GetObject","Resource":"*"}}]}}'
tags = {{ suite = "leasehold-cli" }}
# moto has no service-specific credentials.
sweep_service_specific_credentials = false
"#
    )
}

async fn user_exists(iam: &aws_sdk_iam::Client, user: &str) -> bool {
    match iam.get_user().user_name(user).send().await {
        Ok(_) => true,
        Err(e) => {
            let code = e
                .as_service_error()
                .and_then(|s| aws_sdk_iam::error::ProvideErrorMetadata::code(s))
                .map(str::to_string);
            assert_eq!(code.as_deref(), Some("NoSuchEntity"), "GetUser: {e:?}");
            false
        }
    }
}

fn principal(cli: &Cli, lease_id: &str) -> String {
    cli.ok(&["lookup", lease_id])["principal"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn issue_list_renew_revoke_against_iam() {
    let Some(aws) = AwsEmulator::shared("cli_issue_list_renew_revoke_against_iam").await else {
        return;
    };
    let iam = aws_sdk_iam::Client::new(&aws.sdk_config().await);
    let path = format!("/lh-cli-{}/", suffix());
    let cli = Cli::new(&config(&aws.endpoint_url(), &path, ""));

    let v = cli.ok(&["validate"]);
    assert_eq!(v[0]["ok"], true, "{v}");

    // issue: the documented JSON shape, the credentials once.
    let issued = cli.ok(&["issue", "reports", "--ttl", "10m", "--identity", "ci-job"]);
    let lease_id = issued["lease_id"].as_str().unwrap().to_string();
    assert!(lease_id.starts_with("reports/"), "{issued}");
    assert_eq!(issued["secret"], "reports");
    assert_eq!(issued["renewable"], true);
    assert!(issued["live"].is_boolean());
    let creds = &issued["credentials"];
    let key_id = creds["access_key_id"].as_str().unwrap().to_string();
    let secret_key = creds["secret_access_key"].as_str().unwrap().to_string();
    assert!(!key_id.is_empty() && secret_key.len() >= 16, "{creds}");
    let expires = ts(&issued["expires_at"]);
    let max_expires = ts(&issued["max_expires_at"]);
    let now = chrono::Utc::now();
    assert!(
        expires > now + chrono::Duration::minutes(9)
            && expires <= now + chrono::Duration::minutes(11)
    );
    assert!(max_expires > expires);

    // The user exists, under the configured path, with the key.
    let user = principal(&cli, &lease_id);
    assert!(user.starts_with("lh-"), "{user}");
    let got = iam
        .get_user()
        .user_name(&user)
        .send()
        .await
        .expect("GetUser");
    assert_eq!(got.user().unwrap().path(), path);
    let keys = iam
        .list_access_keys()
        .user_name(&user)
        .send()
        .await
        .unwrap();
    assert_eq!(
        keys.access_key_metadata()[0].access_key_id(),
        Some(key_id.as_str())
    );

    // list and lookup: the lease, never its secret.
    let list = cli.ok(&["list"]);
    let listed: Vec<&Value> = list.as_array().unwrap().iter().collect();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["lease_id"], lease_id.as_str());
    assert_eq!(listed[0]["state"], "active");
    assert_eq!(listed[0]["identity"], "ci-job");
    assert_eq!(listed[0]["type"], "aws-iam");
    assert_eq!(
        cli.ok(&["list", "--secret", "reports", "--state", "active"])
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        cli.ok(&["list", "--state", "revoking"])
            .as_array()
            .unwrap()
            .len(),
        0
    );
    // A secret the configuration does not name is a usage error, not an empty list.
    let out = cli.run(&["list", "--secret", "other"]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("no secret named \"other\""), "{out:?}");

    // renew: later expiry, capped by the max.
    let renewed = cli.ok(&["renew", &lease_id, "--increment", "30m"]);
    let new_expires = ts(&renewed["expires_at"]);
    assert!(
        new_expires > expires + chrono::Duration::minutes(15),
        "{renewed}"
    );
    assert_eq!(ts(&renewed["max_expires_at"]), max_expires);
    let capped = cli.ok(&["renew", &lease_id, "--increment", "5h"]);
    assert_eq!(ts(&capped["expires_at"]), max_expires);
    let out = cli.run(&["renew", &lease_id]);
    assert_eq!(out.code, 1, "renewing past the max fails: {out:?}");
    assert!(out.stderr.contains("RenewLimitReached"), "{}", out.stderr);

    // revoke by id: the user is gone, and so is the lease.
    let v = cli.ok(&["revoke", &lease_id]);
    assert_eq!(v["revoked"], 1);
    assert!(!user_exists(&iam, &user).await);
    let out = cli.run(&["lookup", &lease_id]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("LeaseNotFound"));
    // Revoking again is idempotent: it succeeds and says the lease was already gone.
    let out = cli.run(&["revoke", &lease_id]);
    assert_eq!(out.code, 0, "revoking a revoked lease succeeds: {out:?}");
    assert_eq!(out.json()["already_gone"][0], lease_id.as_str());
    assert_eq!(out.json()["revoked"], 0);

    // A TTL above the max is refused before anything is made.
    let out = cli.run(&["issue", "reports", "--ttl", "2h"]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("TtlExceedsMax"), "{}", out.stderr);

    // revoke --secret: every lease of the secret.
    let mut users = Vec::new();
    let mut secrets = vec![secret_key];
    for _ in 0..3 {
        let v = cli.ok(&["issue", "reports", "--no-wait"]);
        secrets.push(
            v["credentials"]["secret_access_key"]
                .as_str()
                .unwrap()
                .to_string(),
        );
        users.push(principal(&cli, v["lease_id"].as_str().unwrap()));
    }
    for u in &users {
        assert!(user_exists(&iam, u).await);
    }
    let v = cli.ok(&["revoke", "--secret", "reports"]);
    assert_eq!(v["revoked"], 3, "{v}");
    assert!(v["failed"].as_array().unwrap().is_empty());
    assert_eq!(cli.ok(&["list"]).as_array().unwrap().len(), 0);
    for u in &users {
        assert!(!user_exists(&iam, u).await, "{u} survived revoke --secret");
    }

    // A revocation that keeps failing: exit 1, the lease stays; --force forgets it, and
    // reconcile finds and removes the user no lease points at any more.
    let v = cli.ok(&["issue", "reports"]);
    secrets.push(
        v["credentials"]["secret_access_key"]
            .as_str()
            .unwrap()
            .to_string(),
    );
    let stuck = v["lease_id"].as_str().unwrap().to_string();
    let stuck_user = principal(&cli, &stuck);
    aws.inject_fault(
        FaultSpec::fail("DeleteUser", "AccessDenied")
            .status(403)
            .service("iam")
            .resource(&stuck_user)
            .always(),
    )
    .await;
    let out = cli.run(&["revoke", &stuck]);
    assert_eq!(out.code, 1, "{out:?}");
    assert_eq!(out.json()["failed"][0]["lease_id"], stuck.as_str());
    let state = cli.ok(&["lookup", &stuck])["state"].clone();
    assert!(state == "irrevocable" || state == "revoking", "{state}");
    let v = cli.ok(&["revoke", "--force", &stuck]);
    assert_eq!(v["forgotten"][0]["lease_id"], stuck.as_str(), "{v}");
    assert_eq!(cli.run(&["lookup", &stuck]).code, 1);
    aws.clear_faults(Some("DeleteUser"), Some(&stuck_user))
        .await;
    assert!(user_exists(&iam, &stuck_user).await);
    let dry = cli.ok(&["reconcile"]);
    assert_eq!(dry[0]["orphans"], serde_json::json!([stuck_user]), "{dry}");
    assert!(
        user_exists(&iam, &stuck_user).await,
        "a dry run removes nothing"
    );
    let applied = cli.ok(&["reconcile", "--apply"]);
    assert_eq!(
        applied[0]["removed"],
        serde_json::json!([stuck_user]),
        "{applied}"
    );
    assert!(!user_exists(&iam, &stuck_user).await);

    for s in &secrets {
        cli.assert_secret_absent(s);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn run_revokes_an_expired_lease_and_stops_on_sigterm() {
    let Some(aws) = AwsEmulator::shared("cli_run_revokes_an_expired_lease").await else {
        return;
    };
    let iam = aws_sdk_iam::Client::new(&aws.sdk_config().await);
    let path = format!("/lh-cli-run-{}/", suffix());
    let cli = Cli::new(&config(
        &aws.endpoint_url(),
        &path,
        "instance_id = \"cli-test-worker\"",
    ));

    // One lease that expires in 2 s, one that lives on.
    let short = cli.ok(&["issue", "reports", "--ttl", "2s"]);
    let short_id = short["lease_id"].as_str().unwrap().to_string();
    let short_user = principal(&cli, &short_id);
    let long = cli.ok(&["issue", "reports", "--ttl", "10m"]);
    let long_id = long["lease_id"].as_str().unwrap().to_string();

    let mut worker = cli.spawn(&["run"]);
    wait_until(
        "the worker to revoke the expired lease",
        Duration::from_secs(60),
        || cli.run(&["lookup", &short_id]).code == 1,
    );
    assert!(!user_exists(&iam, &short_user).await);
    assert_eq!(cli.ok(&["lookup", &long_id])["state"], "active");

    signal(&worker.child, "TERM");
    let code = wait_exit(&mut worker.child, Duration::from_secs(30));
    // The pipes close at exit; give the reader threads a moment to see the end.
    wait_until("the worker's last output", Duration::from_secs(5), || {
        worker.stderr().contains("stopped")
    });
    let (stdout, stderr) = (worker.stdout(), worker.stderr());
    assert_eq!(code, 0, "run exits 0 on SIGTERM: {stderr}");
    assert!(stderr.contains("SIGTERM received"), "{stderr}");
    cli.seen_stderr.lock().unwrap().push_str(&stderr);
    cli.seen_stdout_without_issue
        .lock()
        .unwrap()
        .push_str(&stdout);
    // One JSON line per audit event: the expiry of the short lease.
    let events: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect();
    assert!(
        events.iter().any(|e| e["action"] == "expire"
            && e["lease_id"] == short_id.as_str()
            && e["error"].is_null()),
        "{stdout}"
    );

    // SIGINT stops it as gracefully.
    let mut worker = cli.spawn(&["run"]);
    wait_until("the worker to start", Duration::from_secs(30), || {
        worker.stderr().contains("worker running")
    });
    signal(&worker.child, "INT");
    assert_eq!(wait_exit(&mut worker.child, Duration::from_secs(30)), 0);
    wait_until("the worker's last output", Duration::from_secs(5), || {
        worker.stderr().contains("stopped")
    });
    assert!(worker.stderr().contains("SIGINT received"));
    cli.seen_stderr.lock().unwrap().push_str(&worker.stderr());
    cli.seen_stdout_without_issue
        .lock()
        .unwrap()
        .push_str(&worker.stdout());

    cli.ok(&["revoke", &long_id]);
    for v in [&short, &long] {
        cli.assert_secret_absent(v["credentials"]["secret_access_key"].as_str().unwrap());
    }
}
