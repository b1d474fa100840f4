//! Helpers for the integration tests: packets built independently of the product (with their
//! own checksum routine), network namespaces that clean up after themselves, tiny servers.
pub mod bench;
pub mod crash;
pub mod daemon;
pub mod expect;
pub mod fixture;
pub mod netns;
pub mod packet;
pub mod servers;
