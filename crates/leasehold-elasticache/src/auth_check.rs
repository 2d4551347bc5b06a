//! The optional readiness check: `AUTH` with the new credential on the cache endpoint, by the
//! AUTH probe the AWS providers share ([`leasehold_aws::AuthProbe`]).

pub(crate) use leasehold_aws::{AuthOutcome, AuthProbe as AuthChecker};
