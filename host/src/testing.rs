//! Test kit for code that needs real outside services, compiled only for tests or with the
//! `testing` feature (the end-to-end suite turns it on).
//!
//! [`postgres`] starts throwaway PostgreSQL servers, for the PostgreSQL backend of call records.

pub mod postgres;

pub use postgres::{Cluster, ClusterError};
