//! xvs userspace: the table model, the schedulers, the BPF loader and map writer, the kernel
//! IPVS netlink client, and the pieces the `xvsd` daemon and `xvsadm` CLI are built from.

pub mod bpf_object;
pub mod ctl;
pub mod daemon;
pub mod fastpath;
pub mod ipvs_nl;
pub mod ipvsadm;
pub mod metrics;
pub mod model;
pub mod sched;
pub mod snapshot;
