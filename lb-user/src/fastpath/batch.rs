//! Reading many entries of a per-CPU array in a few syscalls (BPF_MAP_LOOKUP_BATCH).
//!
//! aya 0.14 has no batch operations, and reading 500,000 destinations' counters one
//! `bpf(BPF_MAP_LOOKUP_ELEM)` at a time costs about half a second per estimator tick. Array maps
//! support BPF_MAP_LOOKUP_BATCH since Linux 5.6; older kernels get the per-entry loop, through
//! the same raw syscall.
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

/// `bpf` commands (include/uapi/linux/bpf.h).
const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
/// The kernel-internal ENOTSUPP a map type without batch operations answers with.
const ENOTSUPP: i32 = 524;

/// Entries per batch syscall: 4096 x 2 CPUs x 40 bytes is a 320 KiB buffer.
const CHUNK: u32 = 4096;

/// `union bpf_attr` as BPF_MAP_LOOKUP_ELEM reads it.
#[repr(C)]
#[derive(Default)]
struct ElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

/// `union bpf_attr` as the BPF_MAP_*_BATCH commands read it.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

fn bpf<A>(cmd: libc::c_long, attr: &mut A) -> io::Result<()> {
    // SAFETY: attr is a live, properly laid out bpf_attr prefix of the size passed; the kernel
    // zero-extends it and writes only through the buffer pointers it holds, which the callers
    // size for the request.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut A as *mut libc::c_void,
            std::mem::size_of::<A>() as libc::c_uint,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Reads entries `0..n` of a per-CPU array whose values are `T`, calling `f(index, per_cpu)`
/// for each with the `ncpus` values of that entry. `T` must be a plain `#[repr(C)]` value whose
/// size is a multiple of 8, which is how the kernel lays per-CPU values out.
pub fn read_percpu_array<T: aya::Pod>(
    fd: BorrowedFd<'_>,
    n: u32,
    ncpus: usize,
    mut f: impl FnMut(u32, &[T]),
) -> io::Result<()> {
    assert!(
        std::mem::size_of::<T>().is_multiple_of(8),
        "per-CPU values are laid out 8-byte aligned"
    );
    let mut keys = vec![0u32; CHUNK as usize];
    let mut values: Vec<T> = Vec::with_capacity(CHUNK as usize * ncpus);
    let mut next = 0u32;
    let mut batch_ok = true;
    while next < n {
        let want = (n - next).min(CHUNK);
        values.clear();
        let got = if batch_ok {
            match lookup_batch(fd, next, want, &mut keys, &mut values, ncpus) {
                Ok(got) => got,
                // Kernels before 5.6 (or without batch support for this map type).
                Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL | ENOTSUPP)) => {
                    batch_ok = false;
                    continue;
                }
                Err(e) => return Err(e),
            }
        } else {
            lookup_one(fd, next, &mut values, ncpus)?;
            keys[0] = next;
            1
        };
        if got == 0 {
            break;
        }
        for (i, k) in keys[..got as usize].iter().enumerate() {
            f(*k, &values[i * ncpus..(i + 1) * ncpus]);
        }
        next += got;
    }
    Ok(())
}

/// One batch from `start`: returns how many entries were read (keys and values filled).
fn lookup_batch<T: aya::Pod>(
    fd: BorrowedFd<'_>,
    start: u32,
    want: u32,
    keys: &mut [u32],
    values: &mut Vec<T>,
    ncpus: usize,
) -> io::Result<u32> {
    let need = want as usize * ncpus;
    values.reserve(need);
    // in_batch names the last key already read (the previous call's out_batch); null starts at
    // the first key.
    let in_batch = start.wrapping_sub(1);
    let mut out_batch = 0u32;
    let mut attr = BatchAttr {
        in_batch: if start == 0 {
            0
        } else {
            &in_batch as *const u32 as u64
        },
        out_batch: &mut out_batch as *mut u32 as u64,
        keys: keys.as_mut_ptr() as u64,
        values: values.as_mut_ptr() as u64,
        count: want,
        map_fd: fd.as_raw_fd() as u32,
        ..Default::default()
    };
    let r = bpf(BPF_MAP_LOOKUP_BATCH, &mut attr);
    // ENOENT: the end of the map was reached; count says how many were filled before it.
    match r {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
        Err(e) => return Err(e),
    }
    let got = attr.count.min(want);
    // SAFETY: the kernel filled `got` entries of `ncpus` values each (reserved above).
    unsafe { values.set_len(got as usize * ncpus) };
    Ok(got)
}

fn lookup_one<T: aya::Pod>(
    fd: BorrowedFd<'_>,
    key: u32,
    values: &mut Vec<T>,
    ncpus: usize,
) -> io::Result<()> {
    values.reserve(ncpus);
    let mut attr = ElemAttr {
        map_fd: fd.as_raw_fd() as u32,
        key: &key as *const u32 as u64,
        value: values.as_mut_ptr() as u64,
        ..Default::default()
    };
    bpf(BPF_MAP_LOOKUP_ELEM, &mut attr)?;
    // SAFETY: the kernel wrote one value per possible CPU.
    unsafe { values.set_len(ncpus) };
    Ok(())
}

const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_MAP_DELETE_ELEM: libc::c_long = 3;
const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;
const BPF_MAP_DELETE_BATCH: libc::c_long = 27;

/// Writes every `(key, value)` of `entries` in one `BPF_MAP_UPDATE_BATCH` syscall (per-entry
/// updates where the kernel has no batch operations). A process is only killed on its way back
/// to userspace, never inside a syscall: a daemon killed (SIGKILL) during a batch leaves either
/// none of it or all of it in the map. (Concurrent readers can still see it half-way for the
/// syscall's few microseconds.)
pub fn update_all<K: aya::Pod, V: aya::Pod>(
    fd: BorrowedFd<'_>,
    entries: &[(K, V)],
) -> io::Result<()> {
    if entries.is_empty() {
        return Ok(());
    }
    let keys: Vec<K> = entries.iter().map(|(k, _)| *k).collect();
    let values: Vec<V> = entries.iter().map(|(_, v)| *v).collect();
    let mut attr = BatchAttr {
        keys: keys.as_ptr() as u64,
        values: values.as_ptr() as u64,
        count: entries.len() as u32,
        map_fd: fd.as_raw_fd() as u32,
        ..Default::default()
    };
    match bpf(BPF_MAP_UPDATE_BATCH, &mut attr) {
        Ok(()) => Ok(()),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL | ENOTSUPP)) => {
            // attr.count says how many went in before the refusal (0 when unsupported).
            let done = (attr.count as usize).min(entries.len());
            for (k, v) in &entries[done..] {
                let mut a = ElemAttr {
                    map_fd: fd.as_raw_fd() as u32,
                    key: k as *const K as u64,
                    value: v as *const V as u64,
                    ..Default::default()
                };
                bpf(BPF_MAP_UPDATE_ELEM, &mut a)?;
            }
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// Deletes every key of `keys` in one `BPF_MAP_DELETE_BATCH` syscall (see `update_all`). Keys
/// already absent are not an error.
pub fn delete_all<K: aya::Pod>(fd: BorrowedFd<'_>, keys: &[K]) -> io::Result<()> {
    if keys.is_empty() {
        return Ok(());
    }
    let mut attr = BatchAttr {
        keys: keys.as_ptr() as u64,
        count: keys.len() as u32,
        map_fd: fd.as_raw_fd() as u32,
        ..Default::default()
    };
    let done = match bpf(BPF_MAP_DELETE_BATCH, &mut attr) {
        Ok(()) => return Ok(()),
        // ENOENT: one key was absent; the rest still has to go.
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::EINVAL | ENOTSUPP | libc::ENOENT)
            ) =>
        {
            (attr.count as usize).min(keys.len())
        }
        Err(e) => return Err(e),
    };
    for k in &keys[done..] {
        let mut a = ElemAttr {
            map_fd: fd.as_raw_fd() as u32,
            key: k as *const K as u64,
            ..Default::default()
        };
        match bpf(BPF_MAP_DELETE_ELEM, &mut a) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
