//! Tests of the point-in-time join.
