//! Schedulers (being written).
