//! The optional readiness check: authenticate with the new credential on the cluster endpoint,
//! by the AUTH probe the AWS providers share ([`leasehold_aws::AuthProbe`]).

pub(crate) use leasehold_aws::AuthProbe;
