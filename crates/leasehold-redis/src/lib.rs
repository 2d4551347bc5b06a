//! leasehold-redis
