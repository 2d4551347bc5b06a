//! leasehold-elasticache
