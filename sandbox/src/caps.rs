//! Capabilities: the job starts with an empty permitted, effective, inheritable and ambient set
//! and an empty bounding set, so neither `execve` of a setuid/file-capability binary nor anything
//! else can bring a capability back (together with `no_new_privs`). Raw `prctl`/`capset` calls
//! only, safe between fork and exec.

use crate::sys::SysResult;

fn errno() -> i32 {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

/// An upper bound for capability numbers: dropping past the kernel's last capability fails with
/// EINVAL, which ends the loop.
pub const CAP_UPPER: libc::c_ulong = 63;

/// Clear the ambient set and drop every capability from the bounding set.
/// Needs `CAP_SETPCAP` (held by the sandbox init inside its user namespace).
pub fn drop_bounding_and_ambient() -> SysResult<()> {
    // SAFETY: prctl with integer arguments.
    let r = unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0,
            0,
            0,
        )
    };
    if r < 0 && errno() != libc::EINVAL {
        return Err(errno());
    }
    for cap in 0..=CAP_UPPER {
        // SAFETY: prctl with integer arguments.
        let r = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) };
        if r < 0 {
            match errno() {
                libc::EINVAL => break, // past the last capability
                e => return Err(e),
            }
        }
    }
    Ok(())
}

/// Set the effective, permitted and inheritable sets to empty.
pub fn capset_zero() -> SysResult<()> {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    let hdr = Header {
        version: 0x2008_0522,
        pid: 0,
    }; // _LINUX_CAPABILITY_VERSION_3
    let data = [Data {
        effective: 0,
        permitted: 0,
        inheritable: 0,
    }; 2];
    // SAFETY: header and two data structs as required by version 3, all live for the call.
    let r = unsafe { libc::syscall(libc::SYS_capset, &hdr as *const Header, data.as_ptr()) };
    if r < 0 {
        Err(errno())
    } else {
        Ok(())
    }
}
