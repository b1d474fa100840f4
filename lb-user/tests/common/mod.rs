//! Helpers shared by the integration test binaries; each binary uses a part of them.
#![allow(dead_code)]

pub mod vmnet;
