//! Tests of the fake API server through kube-rs.
