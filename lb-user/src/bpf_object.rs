//! The compiled BPF object, embedded at build time (see build.rs).

/// The ELF object with the XDP programs and their maps, 8-byte aligned as the ELF parser wants.
pub fn object() -> &'static [u8] {
    #[repr(C, align(8))]
    struct Aligned<T: ?Sized>(T);
    static OBJ: &Aligned<[u8]> = &Aligned(*include_bytes!(concat!(env!("OUT_DIR"), "/xvs.bpf.o")));
    &OBJ.0
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    /// Map and program names are defined once, in lb-common: the object must have exactly
    /// those (besides aya-log's ring and the compiler's data sections), or the loader would
    /// size, pin or attach the wrong ones.
    #[test]
    fn the_object_has_exactly_the_maps_and_programs_lb_common_names() {
        let obj = super::object();
        if obj.is_empty() {
            // Built with XVS_SKIP_EBPF: no object to check.
            return;
        }
        let o = aya_obj::Object::parse(obj).expect("the embedded object parses");
        let maps: BTreeSet<&str> = o
            .maps
            .keys()
            .map(String::as_str)
            .filter(|n| !n.starts_with('.') && *n != "AYA_LOGS")
            .collect();
        let want: BTreeSet<&str> = lb_common::map_names::ALL.into_iter().collect();
        assert_eq!(maps, want);
        let progs: BTreeSet<&str> = o.programs.keys().map(String::as_str).collect();
        let want: BTreeSet<&str> = lb_common::prog_names::ALL.into_iter().collect();
        assert_eq!(progs, want);
    }
}
