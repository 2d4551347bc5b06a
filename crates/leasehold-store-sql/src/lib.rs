//! leasehold-store-sql
