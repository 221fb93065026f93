//! Storage node library (in progress).
