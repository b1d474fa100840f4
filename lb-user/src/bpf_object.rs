//! The compiled BPF object, embedded at build time (see build.rs).

/// The ELF object with the XDP programs and their maps, 8-byte aligned as the ELF parser wants.
pub fn object() -> &'static [u8] {
    #[repr(C, align(8))]
    struct Aligned<T: ?Sized>(T);
    static OBJ: &Aligned<[u8]> = &Aligned(*include_bytes!(concat!(env!("OUT_DIR"), "/xvs.bpf.o")));
    &OBJ.0
}
