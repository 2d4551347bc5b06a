//! [`ElastiCacheUserTarget`]: an existing ElastiCache user as the target of a fleet-wide
//! static role; the steps are [`StaticUserTarget`]'s, the calls `DescribeUsers` and
//! `ModifyUser`.

use leasehold_aws::StaticUserTarget;

use crate::users::ElastiCacheUsers;

/// An existing ElastiCache user as the target of a fleet-wide static role
/// ([`StaticRoleRotator`](leasehold_core::static_role::StaticRoleRotator)): `ModifyUser` with
/// two passwords (`AuthenticationMode` `password`, never touching the access string), then one;
/// a test by `AUTH` on a readiness endpoint when configured, otherwise by the user being
/// `active`. See [`StaticUserTarget`] for the steps.
///
/// IAM: `elasticache:DescribeUsers` and `elasticache:ModifyUser` on the user.
///
/// # Examples
///
/// ```no_run
/// # async fn f() -> leasehold_core::Result<()> {
/// use leasehold_aws::AwsConfig;
/// use leasehold_elasticache::ElastiCacheUserTarget;
/// let sdk = AwsConfig::new().region("eu-west-1").load().await?;
/// let target = ElastiCacheUserTarget::new(&sdk, "app-writer")?
///     .readiness_endpoint("rediss://my-cache.xxxxxx.use1.cache.amazonaws.com:6379", None)?;
/// # Ok(()) }
/// ```
pub type ElastiCacheUserTarget = StaticUserTarget<ElastiCacheUsers>;
