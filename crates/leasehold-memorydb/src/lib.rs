//! leasehold-memorydb
