//! leasehold-aws
