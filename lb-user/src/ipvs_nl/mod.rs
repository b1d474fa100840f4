//! Kernel IPVS generic netlink client (being written).
