//! On a kernel without IPVS (like the development machines' own kernel), the client must say
//! so plainly. On a kernel with IPVS it must at least read the version.

use lb_user::ipvs_nl::{IpvsClient, IpvsError};

fn kernel_has_ipvs() -> bool {
    std::path::Path::new("/proc/net/ip_vs").exists()
}

#[test]
fn client_reports_a_kernel_without_ipvs() {
    match IpvsClient::new() {
        Err(e @ IpvsError::NoIpvs) => {
            let msg = e.to_string();
            assert_eq!(
                msg,
                "this kernel has no IPVS (module ip_vs not loaded/built; `modprobe ip_vs`)"
            );
            assert_eq!(e.errno(), Some(libc::ENOENT));
            assert!(
                !kernel_has_ipvs(),
                "ip_vs is loaded but the family did not resolve"
            );
        }
        Ok(client) => {
            // This kernel has IPVS (or loaded it on demand): the client must work.
            eprintln!("note: this kernel has IPVS; checking GET_INFO instead");
            match client.info() {
                Ok(info) => assert_eq!(info.version_string(), "1.2.1"),
                Err(IpvsError::PermissionDenied { .. }) => {}
                Err(e) => panic!("GET_INFO failed: {e}"),
            }
        }
        Err(e) => panic!("expected IpvsError::NoIpvs, got {e:?} ({e})"),
    }
}
