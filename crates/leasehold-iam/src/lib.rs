//! leasehold-iam
